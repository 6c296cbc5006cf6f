"""What happened on a host, read from its mail log: metrics, status screen, daily report.

- ``events``: the milters' and the connection guard's decision lines, counted (``Tally``);
- ``metrics``: Prometheus textfile metrics (``passerelle metrics write|show``);
- ``status``: one screen with the health of this host (``passerelle status``);
- ``report``: the daily HTML report, kept on disk and mailed (``passerelle report daily``);
- ``config``: ``/etc/passerelle/ops.toml``, read by all three;
- ``cli``: those commands and ``passerelle ops check-config``.
"""
