"""The connection guard (``passerelle connwatch``): blocks clients that open too many sessions.

- ``guard``: one hourly run: count each client's sessions in the mail log (``passerelle.maillog``),
  decide alerts and blocks, expire old blocks; its config (``connwatch.toml``);
- ``blocks``: the JSON state file of the blocks and the sendmail access map built from it;
- ``sink``: where the per-host counts go (local, or a MariaDB shared by every gateway);
- ``alerts``: the Nagios status file that NRPE reads;
- ``cli``: ``passerelle connwatch run|migrate|blocks|unblock|check-config``.
"""
