"""training_runs.owner: which process (host:pid:id) runs a retraining run

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A run left ``running`` by a killed process used to look alive until the next retrain. With
its owner recorded, ``friendbot runs`` shows such a run as interrupted (without writing).

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_column("owner")
