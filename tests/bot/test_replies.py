"""Formatting: context exactly as in training, posts as a friend, task prompts, /as parsing."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from bot.replies import (
    TELEGRAM_MAX_CHARS,
    Friends,
    Reply,
    UsageError,
    as_prompt,
    choose_reply,
    clean_paraphrases,
    context_lines,
    format_reply_html,
    joke_prompt,
    limit_input,
    paraphrase_prompt,
    persona_reply,
    split_as_args,
)
from training.formatting import build_prompt, format_turn
from training.model import tasks


@dataclass
class Row:
    sender_name: str
    text: str


def test_context_lines_are_the_training_format() -> None:
    rows = [Row("Alice", "hey\nguys  whats up 😂"), Row("Bob", "   "), Row(" Hugo ", "lol <3")]
    lines = context_lines(rows)
    assert lines == ["Alice: hey guys whats up 😂", "Hugo: lol <3"]
    assert lines == [format_turn(r.sender_name, r.text) for r in (rows[0], rows[2])]
    assert build_prompt(lines) == "Alice: hey guys whats up 😂\nHugo: lol <3"


def test_post_is_bold_name_and_escaped_text() -> None:
    assert Reply("Hugo", "see you <b>at</b> 5 & bring snacks").html() == (
        "<b>Hugo</b>: see you &lt;b&gt;at&lt;/b&gt; 5 &amp; bring snacks"
    )
    assert format_reply_html("<Evil>", "x") == "<b>&lt;Evil&gt;</b>: x"


def test_post_fits_telegram_without_cutting_an_escape() -> None:
    long_text = "a&b " * 2000
    post = format_reply_html("Hugo", long_text)
    assert len(post) <= TELEGRAM_MAX_CHARS
    assert post.endswith("…")
    body = post.removeprefix("<b>Hugo</b>: ").removesuffix("…")
    assert body.count("&") == body.count("&amp;")  # no half "&am"


FRIENDS = Friends.build(["Alice", "Bob", "bob", "Hugo Boss", "Carol"], ["carol", "bobby_b"])


def test_friends_are_deduplicated_and_opted_out_removed() -> None:
    assert FRIENDS.known == ("Alice", "Bob", "Hugo Boss")
    assert FRIENDS.is_blocked("Carol") and FRIENDS.is_blocked("@bobby_b")
    assert FRIENDS.find("hugo boss") == "Hugo Boss"
    assert FRIENDS.find("Carol") is None and FRIENDS.find("Stranger") is None


def test_placeholders_are_never_friends() -> None:
    friends = Friends.build(["Deleted Account", "Alice", " deleted   ACCOUNT ", ""], [])
    assert friends.known == ("Alice",)
    assert friends.pick(random.Random(0), avoid=["Alice"]) == "Alice"
    assert choose_reply(["Deleted Account: could be good"], friends) is None


def test_pick_prefers_someone_other_than_the_asker() -> None:
    rng = random.Random(0)
    picks = {FRIENDS.pick(rng, avoid=["alice"]) for _ in range(50)}
    assert picks == {"Bob", "Hugo Boss"}
    only_alice = Friends.build(["Alice"], [])
    assert only_alice.pick(rng, avoid=["Alice"]) == "Alice"
    assert Friends.build([], []).pick(rng) is None


def test_choose_reply_takes_the_first_acceptable_speaker() -> None:
    candidates = ["Carol: opted out", "Stranger: who?", "alice: it's me", "no name here", "bob: ok"]
    assert choose_reply(candidates, FRIENDS, avoid=["Alice"]) == Reply("Bob", "ok")
    assert choose_reply(candidates, FRIENDS) == Reply("Alice", "it's me")
    assert choose_reply(["Carol: hi", "Bob:", "nothing"], FRIENDS) is None


def test_persona_reply_always_speaks_as_the_persona() -> None:
    assert persona_reply(["Carol: sure thing"], "Bob") == Reply("Bob", "sure thing")
    assert persona_reply(["", "plain words"], "Bob") == Reply("Bob", "plain words")
    assert persona_reply(["", "  "], "Bob") is None
    # a reply that ended right after its forced "Bob:" is empty, not the text "Bob:"
    assert persona_reply(["Bob:", "Bob: hi"], "Bob") == Reply("Bob", "hi")


def test_split_as_args_matches_multi_word_names() -> None:
    assert split_as_args(["hugo", "boss", "what's", "up"], FRIENDS) == ("Hugo Boss", "what's up")
    assert split_as_args(["Bob:", "hi"], FRIENDS) == ("Bob", "hi")
    assert split_as_args(["Zed", "hi", "there"], FRIENDS) == ("Zed", "hi there")
    assert split_as_args(["Alice"], FRIENDS) == ("Alice", "")
    with pytest.raises(UsageError, match="Usage: /as"):
        split_as_args([], FRIENDS)


def test_limit_input() -> None:
    assert limit_input("  two\nlines ", 20, "usage") == "two lines"
    with pytest.raises(UsageError, match=r"^usage$"):
        limit_input(" \n ", 20, "usage")
    with pytest.raises(UsageError, match="at most 5"):
        limit_input("too long", 5, "usage")


def test_task_prompts_match_training_for_task_models() -> None:
    assert paraphrase_prompt("hi there", True, "Alice") == tasks.paraphrase_prompt("hi there")
    assert joke_prompt("cats", True, ["Bob: x"], "Alice", "Bob") == tasks.joke_prompt("cats")
    assert joke_prompt(None, True, [], "Alice", "Bob") == tasks.joke_prompt(None)


def test_task_prompts_for_the_chat_model_fallback_are_chat_turns() -> None:
    assert paraphrase_prompt("hi there", False, "Alice") == "Alice: hi there"
    prompt = joke_prompt("cats", False, ["Bob: x"], "Alice", "Hugo")
    assert prompt == "Bob: x\nAlice: tell us a joke about cats\nreply as Hugo:"


def test_as_prompt_adds_the_askers_text_and_persona_last() -> None:
    assert as_prompt(["Bob: x"], "Hugo", "Alice", "hi") == "Bob: x\nAlice: hi\nreply as Hugo:"
    assert as_prompt(["Bob: x"], "Hugo", "Alice", "") == "Bob: x\nreply as Hugo:"


def test_clean_paraphrases() -> None:
    outputs = ["Hello there", "hi THERE", "Hi there!", "hi there!", "", "Greetings", "Yo", "Hey"]
    assert clean_paraphrases(outputs, "hi there", True) == ["Hello there", "Hi there!", "Greetings"]
    chat_style = ["Bob: hey you", "hey you", "Alice: sup"]
    assert clean_paraphrases(chat_style, "hi", False) == ["hey you", "sup"]
