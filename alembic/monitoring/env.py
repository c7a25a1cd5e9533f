"""Alembic environment of the `monitoring` database: only the monitoring context's metadata."""

from rosetta.core.migrations import run_migrations
from rosetta.monitoring.models import Base

run_migrations(Base.metadata)
