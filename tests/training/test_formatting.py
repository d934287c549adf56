from training.formatting import (
    build_prompt,
    encode_source,
    format_turn,
    parse_turn,
    persona_line,
    persona_of_prompt,
    reply_prefix_ids,
)
from training.model.tiny import train_tokenizer


def test_turn_is_one_line_and_round_trips() -> None:
    line = format_turn(" Hugo ", "multi\nline   text")
    assert line == "Hugo: multi line text"
    assert parse_turn(line) == ("Hugo", "multi line text")


def test_parse_turn_without_sender() -> None:
    assert parse_turn("just words") == (None, "just words")


def test_a_bare_sender_is_an_empty_turn_not_a_text() -> None:
    # a reply that ended right after its forced NAME: must not be posted as the text "Hugo:"
    assert parse_turn(" Hugo:") == ("Hugo", "")
    assert parse_turn("Hugo: note:") == ("Hugo", "note:")
    assert parse_turn(":") == (None, ":")


def test_persona_hint_goes_last() -> None:
    prompt = build_prompt(["A: hi", "B: yo"], persona="Hugo")
    assert prompt.splitlines() == ["A: hi", "B: yo", "reply as Hugo:"]
    assert build_prompt(["A: hi"]) == "A: hi"


def test_persona_of_prompt_reads_only_a_last_persona_line() -> None:
    assert persona_of_prompt(build_prompt(["A: hi", "B: yo"], persona=" Hugo  Z ")) == "Hugo Z"
    assert persona_of_prompt(persona_line("Anna-Lena")) == "Anna-Lena"
    assert persona_of_prompt(build_prompt(["A: hi", "B: yo"])) is None
    # a persona line that is not the last line, or a turn that merely mentions one
    assert persona_of_prompt("reply as Hugo:\nA: hi") is None
    assert persona_of_prompt("A: reply as Hugo:") is None
    assert persona_of_prompt("reply as :") is None
    assert persona_of_prompt("reply as Hugo") is None


def test_reply_prefix_is_how_a_training_target_starts() -> None:
    lines = ["Hugo: see you at 10", "Anna: ok", "Zoë Ann: fine by me"]
    tokenizer = train_tokenizer(lines * 20, vocab_size=80)
    for name in ("Hugo", "Zoë Ann", "Nobody Known"):
        prefix = reply_prefix_ids(tokenizer, build_prompt(["Anna: ok"], persona=name))
        target = tokenizer(format_turn(name, "see you"), add_special_tokens=False)["input_ids"]
        assert prefix and target[: len(prefix)] == prefix
        assert tokenizer.decode(prefix, skip_special_tokens=True).endswith(":")
        if name != "Nobody Known":  # letters the tokenizer never saw decode as <unk>
            assert parse_turn(tokenizer.decode([*prefix, *target[len(prefix) :]]))[0] == name
    assert reply_prefix_ids(tokenizer, build_prompt(["Anna: ok"])) == []


def test_encode_source_drops_oldest_lines_whole() -> None:
    lines = [f"Speaker{i}: message number {i} with some words" for i in range(30)]
    tokenizer = train_tokenizer([*lines, "reply as Speaker3:"] * 20, vocab_size=120)
    prompt = build_prompt(lines, persona="Speaker3")
    full = encode_source(tokenizer, prompt, max_length=10_000)
    assert full == tokenizer(prompt)["input_ids"]
    short = encode_source(tokenizer, prompt, max_length=60)
    assert len(short) <= 60
    assert short[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(short, skip_special_tokens=True)
    assert text.endswith("reply as Speaker3:")
    assert "Speaker29: message number 29" in text
    assert "Speaker0:" not in text
    # whole lines only: the first kept line starts at a speaker name
    assert text.startswith("Speaker")


def test_batched_training_encoding_truncates_exactly_as_the_bot() -> None:
    """encode_texts tokenizes all over-long prompts' lines in one call; same ids per prompt."""
    from training.model.batching import encode_texts

    lines = [f"Speaker{i}: message number {i} with some words" for i in range(30)]
    tokenizer = train_tokenizer([*lines, "reply as Speaker3:"] * 20, vocab_size=120)
    prompts = [
        build_prompt(lines[: n + 1], persona="Speaker3" if n % 2 else None) for n in range(30)
    ] + ["Speaker1: " + "word " * 200]  # one line longer than the budget alone
    for max_length in (8, 40, 10_000):
        batched = encode_texts(tokenizer, prompts, max_length)
        assert batched == [encode_source(tokenizer, p, max_length) for p in prompts]


def test_memory_and_voice_lines_come_before_the_context_and_are_truncated_first() -> None:
    from training.formatting import keep_newest_lines, memory_line, voice_line

    prompt = build_prompt(
        ["Ana: did Hugo ever fix his bike?"],
        persona="Hugo",
        memory=[memory_line("2026-10-02", "Hugo", "the bike   is\nbroken again")],
        voice=[voice_line("meh, whatever")],
    )
    assert prompt.split("\n") == [
        "voice: meh, whatever",
        "memory: 2026-10-02 Hugo: the bike is broken again",
        "Ana: did Hugo ever fix his bike?",
        "reply as Hugo:",
    ]
    per_line = [[1] * 5, [2] * 5, [3] * 5, [4] * 3]  # voice, memory, context, persona
    kept = keep_newest_lines(per_line, 0, 15)
    assert kept == [2] * 5 + [3] * 5 + [4] * 3 + [0]  # the voice line went first


def test_memory_terms_keep_topic_words_and_drop_function_words() -> None:
    from training.formatting import memory_terms

    terms = memory_terms("Remember Prague? Did Hugo ever fix his BIKE, the bike!")
    assert "prague" in terms and "bike" in terms and "remember" in terms
    assert terms.count("bike") == 1
    assert not {"the", "did", "his"} & set(terms)
    assert len(memory_terms("word " * 3 + " ".join(f"topic{i}" for i in range(20)))) == 8


def test_a_turn_too_long_to_fit_keeps_its_sender_and_the_end_of_its_text() -> None:
    """Cut from the left, a long newest line lost the name of who spoke last; now it keeps
    `Sender:` and its text's end, and a persona prompt keeps a cut last turn instead of none."""
    from training.model.batching import encode_texts

    words = " ".join(f"w{i}" for i in range(60))
    lines = ["Ann: short one", f"Bob: {words}"]
    tokenizer = train_tokenizer([*lines, "reply as Ann:"] * 20, vocab_size=150)
    free = encode_source(tokenizer, build_prompt(lines), max_length=24)
    text = tokenizer.decode(free, skip_special_tokens=True)
    assert len(free) <= 24 and text.startswith("Bob:") and text.endswith("w59")
    assert "Ann" not in text and "w0 " not in text
    hinted = encode_source(tokenizer, build_prompt(lines, persona="Ann"), max_length=24)
    text = tokenizer.decode(hinted, skip_special_tokens=True)
    assert text.startswith("Bob:") and "w59" in text and text.endswith("reply as Ann:")
    # a budget too small for the name and a few words keeps the end, as before
    tiny = encode_source(tokenizer, build_prompt(lines), max_length=4)
    assert len(tiny) == 4 and "Bob" not in tokenizer.decode(tiny, skip_special_tokens=True)
    prompts = [build_prompt(lines), build_prompt(lines, persona="Ann"), "memory: 2020 " + words]
    for max_length in (4, 12, 24):
        assert encode_texts(tokenizer, prompts, max_length) == [
            encode_source(tokenizer, p, max_length) for p in prompts
        ]


class _NewlineTokenizer:
    """A real tokenizer that also gives the line break an id of its own (as byte-level BPE
    tokenizers do): a prompt's ids are then *not* its lines' ids, eos appended."""

    def __init__(self, inner: object, newline_id: int) -> None:
        self.inner, self.newline_id = inner, newline_id

    def _one(self, text: str, add_special_tokens: bool) -> list[int]:
        ids: list[int] = []
        for i, line in enumerate(text.split("\n")):
            if i:
                ids.append(self.newline_id)
            ids += self.inner(line, add_special_tokens=False)["input_ids"]
        return [*ids, self.inner.eos_token_id] if add_special_tokens else ids

    def __call__(self, text: object, add_special_tokens: bool = True) -> dict:
        if isinstance(text, str):
            return {"input_ids": self._one(text, add_special_tokens)}
        return {"input_ids": [self._one(t, add_special_tokens) for t in text]}


def test_training_encoding_matches_the_bot_for_a_tokenizer_whose_lines_do_not_add_up() -> None:
    """Prompts are assembled from each distinct line's ids only where that is what a whole
    prompt gives; a tokenizer with a newline token, or a line with outer spaces, gets every
    prompt tokenized whole, and the ids still equal encode_source's."""
    from training.model.batching import encode_texts

    lines = [f"Speaker{i}: message number {i} with some words" for i in range(12)]
    tokenizer = train_tokenizer([*lines, "reply as Speaker3:"] * 20, vocab_size=120)
    prompts = [
        build_prompt(lines[: n + 1], persona="Speaker3" if n % 2 else None) for n in range(12)
    ]
    odd = _NewlineTokenizer(tokenizer, newline_id=len(tokenizer))
    spaced = [*prompts, "Speaker1: a  \n Speaker2: b"]
    for max_length in (8, 24, 1_000):
        assert encode_texts(odd, prompts, max_length) == [
            encode_source(odd, p, max_length) for p in prompts
        ]
        assert encode_texts(tokenizer, spaced, max_length) == [
            encode_source(tokenizer, p, max_length) for p in spaced
        ]
