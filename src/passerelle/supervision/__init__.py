"""Supervision of a Passerelle host: Nagios checks and the process watch.

- ``checks``: the checks NRPE runs (``passerelle check milter|queue|memory|db|restarts|...``);
- ``watch``: the process watch (``passerelle watch run``) starts wanted daemons again and
  remembers their restarts, which ``check restarts`` reads;
- ``cli``: both commands and ``passerelle watch check-config``.
"""
