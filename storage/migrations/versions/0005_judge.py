"""guess_rounds and guess_votes: the friends' "real or bot?" rounds (/guess) and their votes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "guess_rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("friend", sa.String(length=255), nullable=False),
        sa.Column("friend_id", sa.BigInteger(), nullable=True),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("excerpt_ids", sa.JSON(), nullable=False),
        sa.Column("real_message_id", sa.BigInteger(), nullable=True),
        sa.Column("posted_message_id", sa.BigInteger(), nullable=True),
        sa.Column("votes_needed", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["chat_id"],
            ["chats.id"],
            name=op.f("fk_guess_rounds_chat_id_chats"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guess_rounds")),
    )
    op.create_index(
        op.f("ix_guess_rounds_chat_id_started_at"),
        "guess_rounds",
        ["chat_id", "started_at"],
        unique=False,
    )
    op.create_table(
        "guess_votes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("voter_id", sa.BigInteger(), nullable=False),
        sa.Column("guess_real", sa.Boolean(), nullable=False),
        sa.Column("voted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["guess_rounds.id"],
            name=op.f("fk_guess_votes_round_id_guess_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guess_votes")),
        sa.UniqueConstraint("round_id", "voter_id", name=op.f("uq_guess_votes_round_id_voter_id")),
    )


def downgrade() -> None:
    op.drop_table("guess_votes")
    op.drop_index(op.f("ix_guess_rounds_chat_id_started_at"), table_name="guess_rounds")
    op.drop_table("guess_rounds")
