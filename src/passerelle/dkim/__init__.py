"""DKIM signing keys: the DNS TXT record a key needs (``passerelle dkim txt``) and the checks
the controller runs on the inventory's keys before any host changes."""
