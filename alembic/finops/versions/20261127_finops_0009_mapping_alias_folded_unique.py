"""mapping_alias: an alias is unique per kind in the form finops-batch matches it (trimmed, lower-cased)

Revision ID: finops_0009
Revises: finops_0008
Create Date: 2026-11-27 12:00:00

finops-batch matches source values against aliases case-insensitively, ignoring surrounding spaces. The former
unique constraint on ``(kind, alias)`` let ``Env`` and ``env`` both be stored, and the batch then applied
whichever it read last: no fixed order. The unique index on ``(kind, lower(btrim(alias)))`` replaces it. An
upgrade over rows that already collide stops and names them, rather than choosing one: a FinOps admin decides.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from rosetta.core.errors import RosettaError

revision: str = "finops_0009"
down_revision: str | Sequence[str] | None = "finops_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    collisions = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT kind, string_agg(format('%L -> %L (id %s)', alias, canonical, id), ', ' ORDER BY id)"
                " FROM mapping_alias GROUP BY kind, lower(btrim(alias)) HAVING count(*) > 1 ORDER BY 1, 2"
            )
        )
        .all()
    )
    if collisions:
        found = "; ".join(f"{kind}: {aliases}" for kind, aliases in collisions)
        # A RosettaError: `rosetta db upgrade` says it in one line (exit 1) rather than with a traceback.
        raise RosettaError(
            "mapping_alias holds aliases that differ only by case or spaces, which finops-batch applies in no fixed"
            f" order; delete all but one of each, then upgrade again: {found}"
        )
    op.drop_constraint(op.f("uq_mapping_alias_kind_alias"), "mapping_alias", type_="unique")
    op.create_index(
        "uq_mapping_alias_kind_folded_alias",
        "mapping_alias",
        ["kind", sa.text("lower(btrim(alias))")],
        unique=True,
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.drop_index("uq_mapping_alias_kind_folded_alias", table_name="mapping_alias")
    op.create_unique_constraint(op.f("uq_mapping_alias_kind_alias"), "mapping_alias", ["kind", "alias"])
