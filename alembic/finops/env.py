"""Alembic environment of the `finops` database: only the finops context's metadata."""

from rosetta.core.migrations import run_migrations
from rosetta.finops.models import Base

run_migrations(Base.metadata)
