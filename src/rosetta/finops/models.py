"""SQLAlchemy tables of the `finops` database; private to this context."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from rosetta.core.audit import audit_log_table
from rosetta.core.db import new_metadata
from rosetta.core.runs import batch_run_table


class Base(DeclarativeBase):
    """Declarative base of the `finops` database, with the project's naming convention."""

    metadata = new_metadata()


batch_run = batch_run_table(Base.metadata)
audit_log = audit_log_table(Base.metadata)
