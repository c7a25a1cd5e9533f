"""Alembic environment of the `ref` database: only the ref context's metadata."""

from rosetta.core.migrations import run_migrations
from rosetta.ref.models import Base

run_migrations(Base.metadata)
