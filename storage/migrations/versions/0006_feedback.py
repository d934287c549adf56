"""bot_replies and reply_reactions: the group's feedback on the bot's in-character replies

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

What the bot said as whom and in answer to which stored messages, and each member's current
reactions to it (issue 14: reactions feed retraining and the best-of-k reranker).

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bot_replies",
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("persona", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("context_until", sa.BigInteger(), nullable=True),
        sa.Column("context_size", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["chat_id"],
            ["chats.id"],
            name=op.f("fk_bot_replies_chat_id_chats"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chat_id", "message_id", name=op.f("pk_bot_replies")),
    )
    op.create_table(
        "reply_reactions",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("member_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reactions", sa.JSON(), nullable=False),
        sa.Column("vote", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["chat_id", "message_id"],
            ["bot_replies.chat_id", "bot_replies.message_id"],
            name=op.f("fk_reply_reactions_chat_id_bot_replies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "chat_id", "message_id", "member_id", name=op.f("pk_reply_reactions")
        ),
    )
    op.create_index(
        op.f("ix_reply_reactions_member_id"), "reply_reactions", ["member_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_reply_reactions_member_id"), table_name="reply_reactions")
    op.drop_table("reply_reactions")
    op.drop_table("bot_replies")
