"""Spam marking: a milter that asks spamd for a score and marks the message.

Replaces the reference deployment's "miltrassassin". Pure logic lives in ``marking`` (tiers,
subject tag, header sanitising), ``spamc`` (spamd client), ``ocr`` (image text for
SpamAssassin) and ``config``; ``milter`` is the only module that imports pymilter.
"""
