"""Tables of the raw zone's PostgreSQL JSONB store (the embedded default)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from rosetta.core.db import new_metadata


class Base(DeclarativeBase):
    """Declarative base of the `raw` database."""

    metadata = new_metadata()
