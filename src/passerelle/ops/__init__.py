"""Operator tools: the connection guard (``passerelle connwatch``)."""
