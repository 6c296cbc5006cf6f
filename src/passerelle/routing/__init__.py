"""Where does this address go: the gateways' routing (mailertable or LDAP) explained."""
