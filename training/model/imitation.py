"""Does a reply sound like the friend it was asked to be? Measures for ``friendbot evaluate``.

Speaker accuracy and ROUGE-L say whether the model guessed who talks next and what they said;
they do not say whether a reply *asked* of a friend (``reply as NAME:``, as the bot asks) reads
like that friend, nor whether it is a usable chat message at all. Three measures do:

- *voice*: a speaker classifier (character n-grams: spelling, punctuation, emoji, casing are
  what tell friends apart in short messages) is fit on the real train-split messages of the
  most active speakers. Asked to reply as NAME, how often does the model write something the
  classifier attributes to NAME? Read it against the classifier's accuracy on the real test
  replies of the same prompts (the *ceiling*: a perfect imitator scores this) and against
  *chance* (the share of the most common persona among the prompts: what answering every
  prompt in one voice would score; 1/N, the uniform floor, is reported too).
  On a real chat the regulars dominate: on a Slack channel the most common persona had 36% of
  the prompts against a classifier ceiling of 60%, so "twice chance" could not be reached even
  by the real replies. The same measures are therefore also given *persona-balanced*: each
  persona's share weighs equally (the mean of the per-persona shares, which is what a case set
  with equally many prompts per persona would score), so one voice for everything scores 1/N
  there, and chance and the majority share are the same number.
- *loops*: the share of replies in which a word 3-gram occurs three or more times
  ("i'm sorry, i'm sorry, i'm sorry").
- *echo*: the share of replies whose text is a context line's text, verbatim (a parrot).

Circularity: the bot's best-of-k adds a voice classifier's probability to each candidate's
score (training.model.voice_scorer), fit on the same training messages with character n-grams
too. Replies picked that way are picked *for* sounding like NAME to such a classifier, so the
judge above is flattered by it. Voice is therefore also reported under an independent judge on
different features: *voice_word*, a classifier on whole words (lowercased word unigrams, no
character n-grams, so spelling, punctuation and casing habits are invisible to it), with its
own ceiling on the real replies.

The measures are pure functions of texts; ``measure_imitation`` runs them over the persona
prompts of a split for each decoding and baseline it is given, so the caller owns the model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from training.formatting import clean_text, parse_turn
from training.model.decoding import DecodeOptions
from training.model.tasks import chat_prompt
from training.model.voice_scorer import latest_messages

TOP_SPEAKERS = 8
MIN_TRAIN_MESSAGES = 20
MIN_EVAL_MESSAGES = 5
MAX_TRAIN_PER_SPEAKER = 1000
LOOP_NGRAM = 3
LOOP_COUNT = 3
# words, plus single symbols that are not ASCII punctuation (emoji carry a chat's voice)
_TOKEN = re.compile(r"\w+|[^\w\s!-/:-@\[-`{-~]")

Row = Mapping[str, Any]
Generate = Callable[[list["PersonaCase"], DecodeOptions], list[str]]
"""(persona cases, decoding) -> one reply per case (best-of-k needs each case's context)."""


def tokenize_words(text: str) -> list[str]:
    """Lowercased words and emoji: unicode-aware, unlike rouge-score's ASCII-only default."""
    return _TOKEN.findall(text.lower())


# --- loops and echo -------------------------------------------------------------------------


def loops(text: str, n: int = LOOP_NGRAM, times: int = LOOP_COUNT) -> bool:
    """True when some word n-gram occurs ``times`` or more times in ``text``.

    Twice can be natural ("no no, I mean no no"); three times in one short message is the
    degenerate loop of greedy decoding.
    """
    words = tokenize_words(text)
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def _normal(text: str) -> str:
    return clean_text(text).lower()


def echoes(text: str, context: Sequence[str]) -> bool:
    """True when ``text`` is, up to case and whitespace, the text of a context line.

    Context lines are ``Sender: text``; only their text is compared, since a reply that copies
    someone's message under another name is still a copy. An empty reply echoes nothing.
    """
    mine = _normal(text)
    return bool(mine) and any(_normal(parse_turn(line)[1]) == mine for line in context)


def share(flags: Sequence[bool]) -> float:
    """The share of true flags (0 for none)."""
    return sum(flags) / len(flags) if flags else 0.0


# --- voice ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceClassifier:
    """Who, among ``speakers``, wrote a message: character n-gram TF-IDF + a linear model.

    The model is a logistic-loss SGD classifier with balanced class weights: a few seconds on
    one core even for a large chat (the fit sees at most ``MAX_TRAIN_PER_SPEAKER`` messages per
    speaker), and an uninformative text is attributed about evenly rather than to the most
    active friend, so garbled replies score near 1/N instead of near the majority share.
    Probabilities are its one-vs-rest outputs normalized: good for ranking, not calibrated.
    """

    speakers: tuple[str, ...]
    vectorizer: Any
    model: Any
    fitted_on: int

    def predict(self, texts: Sequence[str]) -> list[str | None]:
        """The most likely speaker of each text; None for an empty text (it sounds like nobody)."""
        if not texts:
            return []
        guesses = self.model.predict(self.vectorizer.transform(list(texts)))
        return [str(g) if t.strip() else None for t, g in zip(texts, guesses, strict=True)]

    def probability(self, texts: Sequence[str], speaker: str) -> list[float]:
        """P(``speaker`` wrote it) for each text (0 for empty texts or an unknown speaker)."""
        if speaker not in self.speakers or not texts:
            return [0.0] * len(texts)
        column = list(self.model.classes_).index(speaker)
        probs = self.model.predict_proba(self.vectorizer.transform(list(texts)))[:, column]
        return [float(p) if t.strip() else 0.0 for t, p in zip(texts, probs, strict=True)]


def voice_speakers(
    train_senders: Sequence[str],
    eval_senders: Sequence[str],
    top_n: int = TOP_SPEAKERS,
    min_train: int = MIN_TRAIN_MESSAGES,
    min_eval: int = MIN_EVAL_MESSAGES,
) -> list[str]:
    """The ``top_n`` most active train-split speakers with enough messages in both splits.

    Both, because chats drift: on a long IRC log the train split's regulars may have left
    before the test split starts, and a voice measured on two prompts says nothing.
    """
    in_eval = Counter(eval_senders)
    ranked = Counter(train_senders).most_common()
    return [name for name, n in ranked if n >= min_train and in_eval[name] >= min_eval][:top_n]


def fit_voice(
    texts: Sequence[str],
    senders: Sequence[str],
    speakers: Sequence[str],
    per_speaker: int = MAX_TRAIN_PER_SPEAKER,
    seed: int = 0,
) -> VoiceClassifier:
    """Fit the classifier on the messages of ``speakers`` (each one's latest ``per_speaker``).

    The latest, because the test split comes after the train split in time.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier

    chosen = _latest(texts, senders, speakers, per_speaker)
    taken = Counter(s for _, s in chosen)
    vectorizer = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2, lowercase=False
    )
    features = vectorizer.fit_transform([t for t, _ in chosen])
    model = SGDClassifier(
        loss="log_loss",
        alpha=3e-5,
        class_weight="balanced",
        max_iter=10,
        tol=None,
        random_state=seed,
    )
    model.fit(features, [s for _, s in chosen])
    kept = tuple(s for s in speakers if taken[s])
    return VoiceClassifier(kept, vectorizer, model, len(chosen))


def fit_word_judge(
    texts: Sequence[str],
    senders: Sequence[str],
    speakers: Sequence[str],
    per_speaker: int = MAX_TRAIN_PER_SPEAKER,
    seed: int = 0,
) -> VoiceClassifier:
    """The independent judge: the same messages, but lowercased whole words (TF-IDF) and a
    logistic regression, so it cannot see the character n-grams the reranker scores."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    chosen = _latest(texts, senders, speakers, per_speaker)
    vectorizer = TfidfVectorizer(analyzer=tokenize_words, sublinear_tf=True, min_df=2)
    model = LogisticRegression(C=3.0, class_weight="balanced", max_iter=500, random_state=seed)
    model.fit(vectorizer.fit_transform([t for t, _ in chosen]), [s for _, s in chosen])
    kept = tuple(s for s in speakers if s in set(model.classes_))
    return VoiceClassifier(kept, vectorizer, model, len(chosen))


def _latest(
    texts: Sequence[str], senders: Sequence[str], speakers: Sequence[str], per_speaker: int
) -> list[tuple[str, str]]:
    """Each speaker's latest ``per_speaker`` non-empty messages (the test split comes later)."""
    chosen = latest_messages(texts, senders, speakers, per_speaker)
    found = len({sender for _, sender in chosen})
    if found < 2:
        raise ValueError(f"a voice classifier needs two speakers with messages, got {found}")
    return chosen


def attribution(
    classifier: VoiceClassifier, texts: Sequence[str], personas: Sequence[str]
) -> dict[str, Any]:
    """The share of ``texts`` attributed to their persona, overall and per persona."""
    hits = [got == want for got, want in zip(classifier.predict(texts), personas, strict=True)]
    per_speaker = {
        name: {
            "n": sum(1 for p in personas if p == name),
            "share": share([h for h, p in zip(hits, personas, strict=True) if p == name]),
        }
        for name in classifier.speakers
        if name in personas
    }
    return {"share": share(hits), "balanced": balanced(per_speaker), "per_speaker": per_speaker}


def balanced(per_speaker: Mapping[str, Mapping[str, Any]]) -> float:
    """The mean of the per-persona shares: the share on a persona-balanced case set.

    Every persona weighs the same however many prompts it has, so answering every prompt in
    one voice scores 1/N, not the majority persona's share of the prompts.
    """
    shares = [v["share"] for v in per_speaker.values() if v["n"]]
    return sum(shares) / len(shares) if shares else 0.0


# --- persona prompts --------------------------------------------------------------------------


@dataclass(frozen=True)
class PersonaCase:
    """One evaluation pair asked of its real sender: ``reply as SENDER:`` after the context."""

    row: Row
    persona: str
    context: tuple[str, ...]
    real_text: str

    @property
    def prompt(self) -> str:
        """``reply as SENDER:`` after the context, with the row's memory and voice lines."""
        return chat_prompt(self.row, persona=self.persona)


def sender_of(row: Row) -> str:
    """The real sender of a pair, as ``evaluate`` reads it (the response's ``Sender:`` first)."""
    return parse_turn(row["response"])[0] or str(row["sender"])


def persona_cases(rows: Sequence[Row], speakers: Sequence[str]) -> list[PersonaCase]:
    """The pairs whose real sender is one of ``speakers``, as persona prompts."""
    keep = set(speakers)
    return [
        PersonaCase(
            row=row,
            persona=sender_of(row),
            context=tuple(ln for ln in str(row["conversation"]).split("\n") if ln),
            real_text=parse_turn(row["response"])[1],
        )
        for row in rows
        if sender_of(row) in keep
    ]


def reply_measures(
    classifier: VoiceClassifier,
    cases: Sequence[PersonaCase],
    replies: Sequence[str],
    word_judge: VoiceClassifier | None = None,
) -> dict[str, Any]:
    """Voice, persona kept, loops, echo and empty shares of ``replies`` to ``cases``.

    ``persona_kept`` is how often the reply's ``Sender:`` is the persona asked for (the bot
    posts under the persona anyway, so it is reported but not judged); evaluate's and the
    bot's replies start with a forced ``NAME:``, so for them it is 1.0 by construction.
    ``voice_word*``: the voice under the independent word judge, when one is given.
    """
    parsed = [parse_turn(r) for r in replies]
    texts = [text for _, text in parsed]
    personas = [c.persona for c in cases]
    voice = attribution(classifier, texts, personas)
    words = attribution(word_judge, texts, personas) if word_judge is not None else None
    return {
        "voice": voice["share"],
        "voice_balanced": voice["balanced"],
        "voice_word": words["share"] if words else None,
        "voice_word_balanced": words["balanced"] if words else None,
        "persona_kept": share([s == p for (s, _), p in zip(parsed, personas, strict=True)]),
        "loops": share([loops(t) for t in texts]),
        "echo": share([echoes(t, c.context) for t, c in zip(texts, cases, strict=True)]),
        "empty": share([not t.strip() for t in texts]),
        "per_speaker": voice["per_speaker"],
    }


# --- the whole measure ------------------------------------------------------------------------


def measure_imitation(
    rows: Sequence[Row],
    train_rows: Sequence[Row],
    generate: Generate,
    decodings: Mapping[str, DecodeOptions],
    baselines: Mapping[str, Callable[[list[Row]], list[str]]] | None = None,
    top_n: int = TOP_SPEAKERS,
) -> dict[str, Any] | None:
    """Voice, loops and echo of persona replies under each decoding, beside baselines.

    ``generate(cases, options)`` returns one reply per case; ``baselines`` map a name to a
    function from the cases' rows to replies. None when fewer than two speakers have enough
    messages to tell apart (nothing to measure).
    """
    train_texts = [parse_turn(r["response"])[1] for r in train_rows]
    train_senders = [sender_of(r) for r in train_rows]
    speakers = voice_speakers(train_senders, [sender_of(r) for r in rows], top_n)
    if len(speakers) < 2:
        return None
    classifier = fit_voice(train_texts, train_senders, speakers)
    word_judge = fit_word_judge(train_texts, train_senders, speakers)
    cases = persona_cases(rows, speakers)
    personas = [c.persona for c in cases]
    ceiling = attribution(classifier, [c.real_text for c in cases], personas)
    word_ceiling = attribution(word_judge, [c.real_text for c in cases], personas)
    report: dict[str, Any] = {
        "speakers": speakers,
        "cases": len(cases),
        "voice_ceiling": ceiling["share"],
        "voice_chance": Counter(personas).most_common(1)[0][1] / len(personas),
        "voice_chance_kind": "majority",
        "voice_uniform": 1 / len(speakers),
        # persona-balanced: every persona weighs the same, so chance is 1/N of those asked
        "voice_ceiling_balanced": ceiling["balanced"],
        "voice_chance_balanced": 1 / len(ceiling["per_speaker"]),
        "ceiling_per_speaker": ceiling["per_speaker"],
        # the independent judge (whole words): its own ceiling on the same real replies
        "voice_ceiling_word": word_ceiling["share"],
        "voice_ceiling_word_balanced": word_ceiling["balanced"],
        "classifier": {
            "features": "char_wb 2-4 tf-idf",
            "model": "SGD log-loss, balanced classes",
            "train_messages": classifier.fitted_on,
            "max_per_speaker": MAX_TRAIN_PER_SPEAKER,
        },
        "decoding": {name: asdict(opts) for name, opts in decodings.items()},
    }
    for name, opts in decodings.items():
        report[name] = reply_measures(classifier, cases, generate(list(cases), opts), word_judge)
    report["baselines"] = {
        name: reply_measures(classifier, cases, make([c.row for c in cases]), word_judge)
        for name, make in (baselines or {}).items()
    }
    return report


# --- the report -------------------------------------------------------------------------------

MEASURES = (
    "voice",
    "voice_balanced",
    "voice_word_balanced",
    "persona_kept",
    "loops",
    "echo",
    "empty",
)


def imitation_rows(report: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(column names, [(measure, values)]) for the decodings, then the baselines."""
    decodings = list(report["decoding"])
    baselines = list(report["baselines"])
    systems = [report[d] for d in decodings] + [report["baselines"][b] for b in baselines]
    columns = [*decodings, *(b.replace("_", " ") for b in baselines)]
    return columns, [(m, [_fmt(s.get(m)) for s in systems]) for m in MEASURES]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def imitation_markdown(report: Mapping[str, Any] | None) -> list[str]:
    """Lines of eval.md's imitation section (a one-line note when it could not be measured)."""
    if not report:
        return [
            "## Imitation",
            "",
            f"Not measured: fewer than two speakers have {MIN_TRAIN_MESSAGES} training and "
            f"{MIN_EVAL_MESSAGES} evaluated messages.",
            "",
        ]
    columns, rows = imitation_rows(report)
    speakers = report["speakers"]
    lines = [
        "## Imitation",
        "",
        f"`reply as NAME:` for the {report['cases']} pairs of the {len(speakers)} most active "
        f"speakers ({', '.join(speakers)}). *voice*: share of replies a speaker classifier "
        f"(character n-grams, fit on {report['classifier']['train_messages']} training "
        f"messages) attributes to NAME; its accuracy on the real replies is the ceiling "
        f"**{report['voice_ceiling']:.3f}**, chance (majority share) "
        f"**{report['voice_chance']:.3f}**, uniform 1/N {report['voice_uniform']:.3f}. "
        "*voice_balanced*: the same with every persona weighing equally (the mean of the "
        "per-persona shares, as on a case set with equally many prompts per persona): ceiling "
        f"**{report['voice_ceiling_balanced']:.3f}**, chance "
        f"**{report['voice_chance_balanced']:.3f}** (1/N: one voice for every prompt). "
        "*voice_word_balanced*: the same under an independent judge on whole words (the bot's "
        "reranker scores character n-grams, which flatters the first judge), ceiling "
        f"**{report.get('voice_ceiling_word_balanced', 0.0):.3f}**. "
        "*persona_kept*: the reply is signed NAME; 1.0 by construction for the model's "
        "columns, whose replies start with a forced `NAME:` as the bot's do (the baselines "
        "sign with the real or the most frequent speaker). "
        "*loops*: a word 3-gram three times; *echo*: a context line copied.",
        "",
        f"| measure | {' | '.join(columns)} |",
        "|---|" + "---|" * len(columns),
        *(f"| {name} | {' | '.join(values)} |" for name, values in rows),
        "",
        "| speaker | n | ceiling | " + " | ".join(f"voice {d}" for d in report["decoding"]) + " |",
        "|---|---|---|" + "---|" * len(report["decoding"]),
    ]
    for name, ceiling in report["ceiling_per_speaker"].items():
        voices = [f"{report[d]['per_speaker'][name]['share']:.3f}" for d in report["decoding"]]
        lines.append(f"| {name} | {ceiling['n']} | {ceiling['share']:.3f} | {' | '.join(voices)} |")
    lines += [
        "",
        "Decoding: "
        + "; ".join(f"{d}: {_describe(report['decoding'][d])}" for d in report["decoding"]),
        "",
    ]
    return lines


def _describe(options: Mapping[str, Any]) -> str:
    how = (
        f"sampled (temperature {options['temperature']}, top-p {options['top_p']}, "
        f"top-k {options['top_k']})"
        if options["sample"]
        else "greedy"
    )
    k = options.get("num_return_sequences", 1)
    if k > 1:
        how += f", best of {k} (log-probability, loop/echo penalties, voice: as the bot)"
    return (
        f"{how}, no repeated {options['no_repeat_ngram_size']}-gram, repetition penalty "
        f"{options['repetition_penalty']}, at most {options['max_new_tokens']} tokens"
    )
