"""Passerelle: milters and operator tools for a fleet of sendmail mail gateways."""

# The one place the version is written: pyproject.toml reads it (dynamic version), so does
# role passerelle_tools (the wheel's name); CHANGELOG.md says what each version brought.
__version__ = "0.2.0"
