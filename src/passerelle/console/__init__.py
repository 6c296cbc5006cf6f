"""The web console (issue 17): its domain logic.

- ``requests``: the table of requests the console files and the gateways carry out (release,
  delete or rescan of a quarantined message, outbreak mode on/off), each done once;
- ``rules``: the runtime content rules, merged over the inventory's (the baseline);
- ``auth``: accounts, roles, sessions, CSRF tokens and login rate limiting.

Pure, typed, with the clock passed in. The web application and its role come on top of it.
"""
