"""Greylisting milter with relaydelay semantics (triplet client/sender/recipient).

Pure logic lives in ``addresses``, ``network``, ``whitelist``, ``policy`` and ``stats``; the
store in ``store``; the decision engine (store + clock + whitelists) in ``engine``; the pymilter
glue in ``milter``; the ``passerelle greylist`` command in ``cli``.
"""
