"""The web console (issue 17).

Domain logic (pure, typed, the clock passed in):
- ``requests``: the table of requests the console files and the gateways carry out (release,
  delete or rescan of a quarantined message, outbreak mode on/off), each done once;
- ``rules``: the runtime content rules, merged over the inventory's (the baseline);
- ``auth``: accounts, roles, sessions, CSRF tokens and login rate limiting;
- ``quarantine_index``: the fleet-wide index of held messages the gateways fill;
- ``audit``: the audit log; ``rules_store``: the runtime rules row;
  ``schema``: versioned, forward-only migrations of those tables.

The web application on top of it: ``web`` (plain WSGI, Jinja2 templates in ``templates/``,
the stylesheet in ``static/``), ``webio`` (requests, responses, cookies), ``server`` (the
config file, database connections, the HTTP server) and ``cli`` (``passerelle console``).
"""
