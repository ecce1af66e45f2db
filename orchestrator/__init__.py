"""Kluis: a secure remote-access research environment for statistical microdata."""

__version__ = "0.1.0"
