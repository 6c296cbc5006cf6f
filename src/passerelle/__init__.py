"""Passerelle: milters and operator tools for a fleet of sendmail mail gateways."""

__version__ = "0.1.0"
