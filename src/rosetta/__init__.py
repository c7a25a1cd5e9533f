"""Rosetta V2: referential, FinOps and monitoring backend for the Backstage internal developer platform."""

__version__ = "2.0.0.dev0"
