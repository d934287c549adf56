"""The group judges the bot's replies: reactions to its in-character posts, stored (issue 14).

- Every in-character post is remembered with what it answered
  (``FriendBot.remember_reply``, called by ``bot.handlers.post``; storage.feedback).
- ``message_reaction`` updates carry a member's whole new set of reactions to a message: it
  replaces what was stored for that member (a changed reaction changes the vote, a removed one
  removes it). FEEDBACK_POSITIVE emoji count as liked, FEEDBACK_NEGATIVE as disliked, anything
  else (another emoji, a custom emoji, a paid star) is stored but counts as neither.
- A member's reply that quotes the bot's post is engagement, counted as liked when feedback
  is summed up (storage.feedback reads it from the stored messages; nothing to do here).

Telegram sends reactions only to a bot that is an **administrator** of the group, and only
when ``allowed_updates`` names ``message_reaction`` (the bot asks for every update type;
``friendbot doctor`` warns where it is no admin). Reactions are anonymous in channels
(``message_reaction_count``: counts, no member): those are not used.

A bad update never stops the bot: a reaction to a message the bot does not know (someone
else's message, a post from before), from an opted-out member, or that the database refuses
is logged at most and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from telegram import ReactionType, ReactionTypeCustomEmoji, ReactionTypeEmoji, Update
from telegram.ext import Application, ContextTypes, MessageReactionHandler

from bot.handlers import SERVICE_KEY
from bot.settings import emoji_set

if TYPE_CHECKING:
    from bot.service import FriendBot
    from bot.settings import Settings

log = logging.getLogger(__name__)


def install(application: Application) -> None:
    """Add the reaction handler (an extension: bot.app.extensions)."""
    application.add_handler(
        MessageReactionHandler(
            on_reaction, message_reaction_types=MessageReactionHandler.MESSAGE_REACTION_UPDATED
        )
    )


def reaction_key(reaction: ReactionType) -> str:
    """How a reaction is stored: the emoji itself (variation selectors dropped, as in the
    settings), ``custom:ID`` for a custom emoji, the type's name otherwise (``paid``)."""
    if isinstance(reaction, ReactionTypeEmoji):
        return str(reaction.emoji).replace("\ufe0f", "")
    if isinstance(reaction, ReactionTypeCustomEmoji):
        return f"custom:{reaction.custom_emoji_id}"
    return str(reaction.type)


def vote(reactions: Iterable[str], settings: Settings) -> int:
    """+1 liked, -1 disliked, 0 neither, from a member's current set of reactions (more
    positive than negative emoji among them is a like)."""
    positive, negative = (
        emoji_set(settings.feedback_positive),
        emoji_set(settings.feedback_negative),
    )
    keys = list(reactions)
    balance = sum(k in positive for k in keys) - sum(k in negative for k in keys)
    return (balance > 0) - (balance < 0)


async def on_reaction(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Store a member's new reactions to one of the bot's posts (ignore everything else)."""
    change = update.message_reaction
    service: FriendBot = context.application.bot_data[SERVICE_KEY]
    if change is None or not service.is_allowed(change.chat.id):
        return
    actor = change.user or change.actor_chat
    if actor is None or service.is_opted_out(actor.id):
        return
    if change.user is not None and change.user.is_bot:
        return
    keys = sorted({reaction_key(r) for r in change.new_reaction})
    member_vote = vote(keys, service.settings)

    def work() -> bool:
        from storage.feedback import set_reactions

        with service.sessions.begin() as session:
            return set_reactions(
                session,
                chat_id=change.chat.id,
                message_id=change.message_id,
                member_id=actor.id,
                reactions=keys,
                vote=member_vote,
            )

    try:
        known = await asyncio.to_thread(work)
    except Exception as exc:  # a database hiccup costs one reaction, never the bot
        log.warning("chat %s: reaction not stored: %r", change.chat.id, exc)
        return
    if not known:
        log.debug(
            "chat %s: reaction to message %s ignored: not a bot reply",
            change.chat.id,
            change.message_id,
        )
