"""Alembic environment of the `raw` database (landing zone, PostgreSQL JSONB store)."""

from rosetta.core.migrations import run_migrations
from rosetta.raw.models import Base

run_migrations(Base.metadata)
