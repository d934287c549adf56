"""The text format shared by training and the bot: one place, so both always agree.

A turn is one ``Sender: text`` line. A model input is the conversation (oldest line first),
optionally followed by a persona line ``reply as NAME:`` that asks for a reply in that
friend's voice. The target is always ``Sender: text``, so a reply can be parsed the same way
whether the model chose the speaker or was told who to be. The persona line goes *last* so
that truncating an over-long input from the left (dropping the oldest turns) never loses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PERSONA_PREFIX = "reply as"
MEMORY_PREFIX = "memory:"
VOICE_PREFIX = "voice:"
DELETED_ACCOUNT = "Deleted Account"
"""The name an export gives a sender whose account was deleted (``from: null``)."""
_PLACEHOLDER_NAMES = frozenset({"", DELETED_ACCOUNT.casefold()})
_CHAT_SENDER_PREFIXES = ("channel", "chat")  # export ``from_id`` forms of a chat speaking
_WORD = re.compile(r"\w+")
_STOPWORDS_TEXT = """the and for are but not you all any can had her was one our out has him his how
    its may new now old see two way who did get got let say she too use yes yeah yep nope okay
    that with this have from they will would there their what about which when were been them
    than then into just like some could also only your very well much more most such here does
    doing done dont cant wont isnt thats whats lol lmao haha hahaha hey really think know going
    want need make good sure right thing things something ever"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def clean_text(text: str) -> str:
    """Collapse whitespace (newlines included) so that one message is always one line."""
    return " ".join(text.split())


def format_turn(sender: str, text: str) -> str:
    """Render one message as the ``Sender: text`` line the model reads and writes."""
    return f"{clean_text(sender)}: {clean_text(text)}"


def is_placeholder_sender(name: str | None, sender_id: str | int | None = None) -> bool:
    """True for a sender who is no friend to imitate, whose lines are context only.

    A deleted account (``from: null``, "Deleted Account") has no voice of its own, and a chat
    speaking as itself (an anonymous admin posting as the group, a channel's post in its
    discussion group) is a signature, not a person. Signing a reply with either is what a
    user notices first, so neither may be a pair's response, a persona or a speaker the bot
    picks. One test for training and the bot: ``sender_id`` is an export's ``from_id``
    (``user1``, ``channel2``) or a Telegram id (negative for chats, as the Bot API writes a
    ``sender_chat``); None when unknown. It is the OR of :func:`is_placeholder_name` and
    :func:`is_chat_sender`, which columnar code applies to names and ids separately.
    """
    return is_placeholder_name(name) or is_chat_sender(sender_id)


def is_placeholder_name(name: str | None) -> bool:
    """True for a missing name or "Deleted Account" (any case or spacing)."""
    return name is None or clean_text(name).casefold() in _PLACEHOLDER_NAMES


def is_chat_sender(sender_id: str | int | None) -> bool:
    """True for a sender id naming a group or channel rather than a user."""
    if isinstance(sender_id, str):
        return sender_id.startswith(_CHAT_SENDER_PREFIXES)
    return isinstance(sender_id, int) and sender_id < 0


def persona_line(persona: str) -> str:
    """The last input line that asks the model to answer as ``persona``."""
    return f"{PERSONA_PREFIX} {clean_text(persona)}:"


def persona_of_prompt(prompt: str) -> str | None:
    """The persona a prompt asks a reply of (its last line is a :func:`persona_line`), or None.

    The inverse of ``persona_line``: the one rule that decides which prompts get their reply
    started with the persona's ``NAME:`` (:func:`reply_prefix_ids`).
    """
    last = prompt.rsplit("\n", 1)[-1].strip()
    head = f"{PERSONA_PREFIX} "
    if not last.startswith(head) or not last.endswith(":"):
        return None
    return last[len(head) : -1].strip() or None


def reply_prefix_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Ids every reply to ``prompt`` starts with: the persona's ``NAME:``, or none.

    Asked ``reply as NAME:``, a model still signs some replies with another friend's name
    (22% of the candidates on a real Slack channel, BENCHMARKS.md "Voice in the bot's
    decoding"), and the bot then has to drop them. Starting the decoder on ``NAME:`` makes
    every candidate the persona's. The ids are those a training target ``NAME: text``
    (``format_turn``) starts with, so the model continues a prefix it has seen; where a
    tokenizer would split ``NAME:`` alone differently, only the ids both forms share are kept.
    """
    persona = persona_of_prompt(prompt)
    if persona is None:
        return []
    alone = tokenizer(format_turn(persona, "").rstrip(), add_special_tokens=False)["input_ids"]
    target = tokenizer(format_turn(persona, "x"), add_special_tokens=False)["input_ids"]
    shared = 0
    while shared < min(len(alone), len(target)) and alone[shared] == target[shared]:
        shared += 1
    return list(target[:shared])


def memory_line(day: str, sender: str, text: str) -> str:
    """One remembered older message: ``memory: YYYY-MM-DD Sender: text``.

    The date lets a reply (and ``/recall``) say *when* something was said; the prefix tells
    the model this line is not part of the live conversation.
    """
    return f"{MEMORY_PREFIX} {day} {format_turn(sender, text)}"


def voice_line(text: str) -> str:
    """One past message of the persona being played, as an exemplar of their voice."""
    return f"{VOICE_PREFIX} {clean_text(text)}"


def build_prompt(
    context: Sequence[str],
    persona: str | None = None,
    *,
    memory: Sequence[str] = (),
    voice: Sequence[str] = (),
) -> str:
    """Join context lines (oldest first) into a model input, with the persona hint last.

    ``voice`` lines (from :func:`voice_line`) and then ``memory`` lines (from
    :func:`memory_line`) come *before* the context: ``encode_source`` drops the oldest lines
    first, so when the source length is short the memory goes before any live turn does.
    """
    lines = [*voice, *memory, *context]
    if persona:
        lines.append(persona_line(persona))
    return "\n".join(lines)


def memory_terms(text: str, limit: int = 8) -> list[str]:
    """The words of ``text`` worth searching older messages for, rarest-looking first.

    Full-text search over chat history matches on words; function words and very short
    tokens match everything and drown the few that carry the topic ("prague", "bike"). One
    rule for the bot's search, ``/recall`` and ``prepare --memory``, so that the model is
    trained on the memory it will be given. Longer words first (a cheap proxy for rarity),
    duplicates removed, at most ``limit``.
    """
    words = {w for w in _WORD.findall(text.casefold()) if len(w) >= 3 and w not in _STOPWORDS}
    return sorted(words, key=lambda w: (-len(w), w))[:limit]


def parse_turn(generated: str) -> tuple[str | None, str]:
    """Split a generated ``Sender: text`` into (sender, text); sender is None if absent.

    A bare ``Sender:`` is that sender with no text: what a reply that ended right after its
    forced ``NAME:`` (``reply_prefix_ids``) decodes to, an empty reply rather than a text.
    """
    generated = clean_text(generated)
    bare = generated.endswith(":") and ": " not in generated
    sender, sep, text = (f"{generated} " if bare else generated).partition(": ")
    if not sep or not sender or len(sender) > 64:
        return None, generated
    return sender, text.strip()


def encode_source(tokenizer: PreTrainedTokenizerBase, prompt: str, max_length: int) -> list[int]:
    """Token ids of ``prompt`` (with eos) in at most ``max_length`` tokens, newest lines kept.

    When a conversation is too long, the oldest lines are the least useful, so they go first,
    whole. The newest turn, when it does not fit whole, keeps its ``Sender:`` and the end of
    its text (who spoke last is what the next speaker depends on most: on a real Slack channel
    half of the messages follow one by the same sender, and more than half of the newest lines
    were longer than the tiny model's 32 tokens, so cutting them from the left lost every such
    name).
    Training and the bot both encode through here, so they truncate alike.
    """
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if len(ids) <= max_length:
        return ids
    lines = prompt.split("\n")
    per_line = tokenizer(lines, add_special_tokens=False)["input_ids"]
    heads = sender_heads(tokenizer, lines, per_line)
    return keep_newest_lines(per_line, ids[-1], max_length, heads)


def sender_heads(
    tokenizer: PreTrainedTokenizerBase, lines: Sequence[str], per_line: Sequence[Sequence[int]]
) -> list[int]:
    """How many leading ids of each line are its ``Sender:`` (0: not a turn, or unclear).

    One batched tokenizer call; a prefix counts only when the line's ids really start with
    the prefix's own ids, so a tokenizer that merges across the colon just gets no head.
    Memory, voice and persona lines are not turns: they are kept whole or not at all.
    """
    prefixes = [_turn_prefix(line) for line in lines]
    prefix_ids = tokenizer(prefixes, add_special_tokens=False)["input_ids"]
    return [
        len(head) if head and list(ids[: len(head)]) == list(head) else 0
        for head, ids in zip(prefix_ids, per_line, strict=True)
    ]


def _turn_prefix(line: str) -> str:
    if line.startswith((MEMORY_PREFIX, VOICE_PREFIX, PERSONA_PREFIX)):
        return ""
    sender, _ = parse_turn(line)
    return f"{sender}:" if sender else ""


# A cut turn keeps at least this many ids of its text, else it is left out (or, as the
# newest line, kept from its end as before).
MIN_CUT_TEXT = 4


def keep_newest_lines(
    per_line: list[list[int]], eos: int, max_length: int, heads: Sequence[int] | None = None
) -> list[int]:
    """The newest lines' ids that fit in ``max_length`` with ``eos``, oldest first.

    Whole lines while they fit; the first line that does not fit is dropped with all older
    ones, except when it is the newest turn (no line with a head kept yet): then it keeps its
    head (``heads[i]`` ids: its ``Sender:``) and the end of its text, when at least
    ``MIN_CUT_TEXT`` ids of text fit. Older turns are never cut (on the synthetic sample,
    filling the window with a cut older turn cost speaker accuracy). A headless newest line
    keeps its end. Split out of ``encode_source`` so that training can tokenize the lines of
    all its over-long prompts in one batched call and still truncate exactly as the bot does.
    """
    budget = max_length - 1
    kept: list[list[int]] = []
    turn_kept = False
    for i in range(len(per_line) - 1, -1, -1):
        line_ids = per_line[i]
        head = heads[i] if heads else 0
        if len(line_ids) <= budget:
            kept.append(line_ids)
            budget -= len(line_ids)
            turn_kept = turn_kept or bool(head)
            continue
        if head and not turn_kept and budget - head >= MIN_CUT_TEXT:
            kept.append([*line_ids[:head], *line_ids[len(line_ids) - (budget - head) :]])
        elif not kept:  # even the newest line alone is too long: keep its end
            kept.append(line_ids[-budget:])
        break
    return [tok for line_ids in reversed(kept) for tok in line_ids] + [eos]
