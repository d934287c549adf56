"""``friendbot evaluate``: how well a chat model speaks like the group, next to two baselines.

Metrics on a split of a prepared dataset (the test split by default):

- ``loss`` / ``perplexity``: mean per-token cross-entropy of the real responses given the free
  prompt (no persona hint: the model has to pick the speaker itself). The retraining gate
  compares models on this (``evaluate_loss``).
- ``speaker_accuracy``: the ``Sender:`` the model generates (greedy) against the real sender.
- ``next_speaker``: the speaker the *bot* picks when the model directory has a next-speaker
  scorer (training.model.next_speaker; the bot then asks the model for a persona reply as that
  friend), against the real sender: its ``speaker_accuracy`` and ``per_speaker``. None without
  the scorer. A scorer around the model, not the model: ``speaker_accuracy`` keeps meaning the
  model's own pick.
- ``rouge_l``: ROUGE-L F1 of the generated message text against the real text (the sender part
  is left out: speaker accuracy already scores it).
- ``distinct_1`` / ``distinct_2``: unique n-grams over all n-grams of the generations (a model
  that says "lol" to everything scores low).
- ``loops`` / ``echo``: shares of replies that repeat a word 3-gram three times, or copy a
  context line (training/model/imitation.py).
- ``imitation``: asked ``reply as NAME:`` for each pair of an active speaker, how often the
  reply sounds like NAME to a speaker classifier, next to its ceiling and chance, with loops and
  echo, greedy, as one plain sample, and as the bot decodes ("bot": best of REPLY_CANDIDATES
  samples ranked by training.model.rerank with the scorers saved in the model directory,
  exactly as bot.best_of ranks them; training/model/imitation.py). As in the bot, every
  ``reply as NAME:`` reply starts with a forced ``NAME:`` (training.formatting.reply_prefix_ids),
  so its ``persona_kept`` is 1.0 by construction.

Every generation uses the shared decoding defaults (training/model/decoding.py), loop guards
included, so the report shows what the bot would say.

Baselines, scored the same way: ``most_frequent_speaker`` (always the training split's most
active member, saying their most common message) and ``repeat_last_line`` (echo the last
context line). A model that cannot beat them has not learned the chat.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from training.errors import InputError, first_line
from training.formatting import parse_turn, reply_prefix_ids
from training.model import next_speaker, scorer_files
from training.model.decoding import (
    BOT_DECODING,
    GREEDY_DECODING,
    REPLY_CANDIDATES,
    DecodeOptions,
    hf_decoder_prefix,
    hf_generate_kwargs,
    mean_reply_logprob,
)
from training.model.imitation import (
    PersonaCase,
    echoes,
    imitation_markdown,
    loops,
    measure_imitation,
    share,
    tokenize_words,
)
from training.model.model_dir import ModelInfo, validate
from training.model.rerank import (
    Candidate,
    Scorer,
    load_model_scorers,
    rank,
    score_candidate,
    with_model_scorers,
)
from training.output_dirs import EVAL_KIND, check_location, check_replaceable, staged

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

T = TypeVar("T")
EVAL_FILE = "eval.json"
REPORT_FILE = "eval.md"
SPEAKER_PLOT = "speaker_accuracy.png"
VOICE_PLOT = "voice.png"
LOSS_TOKEN_BUDGET = 8192
SAMPLES_IN_REPORT = 12
PICK_LABEL = "speaker_accuracy, bot's pick (next-speaker scorer)"
SAMPLING_SEED = 0  # sampled replies are repeatable: two reports of one model agree


# --- shared with training: loss over batches ----------------------------------------------


def loss_sums(
    model: torch.nn.Module,
    batches: Sequence[tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]],
    pad_id: int,
    device: torch.device,
    max_source_length: int | None = None,
    max_target_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed token cross-entropy, number of target tokens) over ``(sources, labels)`` batches.

    Sums rather than per-batch means, so batches of different sizes weigh by their tokens and
    processes can add their shares. Both stay on the device until the caller reads them.
    """
    import torch
    import torch.nn.functional as F

    from training.model.batching import LABEL_PAD, collate

    total = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for sources, labels in batches:
            batch = collate(sources, labels, pad_id, max_source_length, max_target_length)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            logits = model(**batch).logits.float()  # (batch, tgt, vocab)
            target = batch["labels"]
            total += F.cross_entropy(
                logits.reshape(-1, logits.size(-1)),
                target.reshape(-1),
                ignore_index=LABEL_PAD,
                reduction="sum",
            ).double()
            count += (target != LABEL_PAD).sum().double()
    model.train(was_training)
    return total, count


# --- loading ------------------------------------------------------------------------------


def load_model(model_dir: Path) -> tuple[PreTrainedModel, ModelInfo]:
    """A chat model and its validated directory (InputError, one line, when unusable).

    ``validate`` refuses what would give meaningless numbers: a missing tokenizer vocabulary,
    a friendbot.json-less directory (unknown prompt length), a task model.
    """
    from transformers import AutoModelForSeq2SeqLM

    info = validate(Path(model_dir), chat=True)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(info.path)
    except Exception as exc:  # unreadable weights: safetensors and torch raise their own types
        raise InputError(f"{model_dir}: cannot load the model ({first_line(exc)})") from exc
    model.eval()
    return model, info


# --- loss ---------------------------------------------------------------------------------


def model_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, str]],
    max_source_length: int,
    max_target_length: int,
) -> float:
    """Mean per-token loss of the real responses given free prompts, as in training."""
    from training.model.batching import encode_targets, encode_texts, plan_batches
    from training.model.tasks import chat_examples

    examples = chat_examples(rows)
    sources = encode_texts(tokenizer, [e.source for e in examples], max_source_length)
    labels = encode_targets(tokenizer, [e.target for e in examples], max_target_length)
    batches = plan_batches(
        [len(s) for s in sources],
        [len(t) for t in labels],
        LOSS_TOKEN_BUDGET,
        seed=0,
        epoch=0,
        shuffle=False,
    )
    total, count = loss_sums(
        model,
        [([sources[j] for j in b], [labels[j] for j in b]) for b in batches],
        tokenizer.pad_token_id,
        model.device,
        max_source_length,
        max_target_length,
    )
    return float(total.item() / max(count.item(), 1.0))


def rows_for_model(info: ModelInfo, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` as the model reads them: their memory lines only if it was trained with memory
    (friendbot.json ``memory``), as the bot does; a model never saw lines it was not taught."""
    from training.model.tasks import without_memory

    return rows if info.fields.get("memory") else without_memory(rows)


def evaluate_loss(model_dir: Path, data_dir: Path, split: str) -> float:
    """Mean per-token loss of a model on a dataset split (the retraining gate's measure)."""
    from training.model.tasks import read_chat_split

    model, info = load_model(model_dir)
    rows = rows_for_model(info, read_chat_split(data_dir, split))
    return model_loss(model, info.tokenizer, rows, info.max_source_length, info.max_target_length)


# --- generation ---------------------------------------------------------------------------


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_source_length: int,
    options: DecodeOptions = GREEDY_DECODING,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """One reply per prompt, batched by similar length so little padding is computed.

    A seeded ``options`` draws the same replies for the same prompts, without disturbing the
    process's random state. A persona prompt's reply starts with the persona's ``NAME:``, as
    the bot's do (bot/engine.py).
    """
    if options.num_return_sequences != 1:
        raise ValueError("evaluate generates one reply per prompt")
    replies: list[str] = [""] * len(prompts)
    for idx, batch in _prompt_batches(
        model, tokenizer, prompts, max_source_length, options, batch_size
    ):
        out = model.generate(**batch, **hf_generate_kwargs(options))
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        for i, text in zip(idx, texts, strict=True):
            replies[i] = text.strip()
        if on_batch:
            on_batch(len(idx))
    return replies


def generate_scored(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_source_length: int,
    options: DecodeOptions,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[tuple[str, float]]]:
    """``options.num_return_sequences`` replies per prompt, each with its mean token
    log-probability under the distribution it was drawn from (the eos included), computed as
    the bot's Hugging Face backend computes it (bot/engine.py), so ranking them agrees: a
    persona prompt's replies start with the forced ``NAME:``, which the mean leaves out."""
    k = options.num_return_sequences
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    out: list[list[tuple[str, float]]] = [[] for _ in prompts]
    for idx, batch in _prompt_batches(
        model, tokenizer, prompts, max_source_length, options, batch_size
    ):
        result = model.generate(
            **batch, output_scores=True, return_dict_in_generate=True, **hf_generate_kwargs(options)
        )
        steps = model.compute_transition_scores(
            result.sequences, result.scores, normalize_logits=True
        ).cpu()
        forced = batch["decoder_input_ids"].shape[1] - 1 if "decoder_input_ids" in batch else 0
        for row, (seq, logps) in enumerate(zip(result.sequences.cpu(), steps, strict=True)):
            ids = seq[1:].tolist()
            ids = ids[: ids.index(eos)] if eos in ids else ids
            text = tokenizer.decode(ids, skip_special_tokens=True).strip()
            out[idx[row // k]].append((text, mean_reply_logprob(ids, forced, logps)))
        if on_batch:
            on_batch(len(idx))
    return out


def best_of_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cases: Sequence[PersonaCase],
    max_source_length: int,
    options: DecodeOptions,
    scorer: Scorer = score_candidate,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """The reply the bot would post for each case: ``options.num_return_sequences`` samples
    ranked by ``scorer`` (bot.best_of), or, when all of them came out empty, the first of as
    many beams (bot.service does the same)."""
    prompts = [c.prompt for c in cases]
    scored = generate_scored(
        model, tokenizer, prompts, max_source_length, options, batch_size, on_batch
    )
    replies = [
        rank([Candidate(t, lp, c.context, c.persona) for t, lp in cands], scorer)[0]
        for c, cands in zip(cases, scored, strict=True)
    ]
    empty = [i for i, cands in enumerate(scored) if not any(t.strip() for t, _ in cands)]
    if empty:
        beams = replace(options, sample=False, seed=None)
        again = generate_scored(
            model, tokenizer, [prompts[i] for i in empty], max_source_length, beams, batch_size
        )
        for i, cands in zip(empty, again, strict=True):
            replies[i] = cands[0][0]
    return replies


def _prompt_batches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_source_length: int,
    options: DecodeOptions,
    batch_size: int,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(prompt indices, ``generate`` inputs) per batch of prompts of similar length (so little
    padding is computed) and one reply prefix, with gradients off; a seeded ``options`` seeds a
    forked random state, so the same prompts draw the same replies without disturbing the
    process's own. A persona prompt's batch starts the decoder on ``NAME:``
    (``reply_prefix_ids``), as the bot's engine does."""
    from contextlib import nullcontext

    import torch

    from training.model.batching import encode_texts

    encoded = encode_texts(tokenizer, prompts, max_source_length)
    prefixes = [tuple(reply_prefix_ids(tokenizer, p)) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: (prefixes[i], len(encoded[i])))
    start_id = model.generation_config.decoder_start_token_id
    rng = torch.random.fork_rng(devices=[]) if options.seed is not None else nullcontext()
    with torch.no_grad(), rng:
        if options.seed is not None:
            torch.manual_seed(options.seed)
        for prefix, same in groupby(order, key=prefixes.__getitem__):
            group = list(same)
            for begin in range(0, len(group), batch_size):
                idx = group[begin : begin + batch_size]
                input_ids, mask = _padded([encoded[i] for i in idx], tokenizer.pad_token_id)
                batch = {
                    "input_ids": input_ids.to(model.device),
                    "attention_mask": mask.to(model.device),
                }
                if prefix:
                    rows = hf_decoder_prefix(start_id, prefix, len(idx))
                    batch["decoder_input_ids"] = rows.to(model.device)
                yield idx, batch


def _padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask), right-padded as T5 was trained."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return input_ids, mask


# --- metrics ------------------------------------------------------------------------------


class _Tokenizer:
    """The adapter rouge-score expects (an object with ``tokenize``)."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize_words(text)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 of predictions against references (0 for an empty set)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())
    scores = [
        scorer.score(ref, pred)["rougeL"].fmeasure
        for pred, ref in zip(predictions, references, strict=True)
    ]
    return sum(scores) / len(scores) if scores else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / all n-grams across ``texts`` (0 when there are none)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = tokenize_words(text)
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def score(
    replies: Sequence[str],
    real: Sequence[str],
    real_senders: Sequence[str],
    contexts: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Speaker accuracy (overall and per real speaker), ROUGE-L, distinct-1/2 and loops of
    replies; echo too when the ``contexts`` (lines each reply answered) are given."""
    parsed = [parse_turn(r) for r in replies]
    texts = [text for _, text in parsed]
    real_texts = [parse_turn(r)[1] for r in real]
    return {
        **speaker_accuracy([sender for sender, _ in parsed], real_senders),
        "rouge_l": rouge_l(texts, real_texts),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "loops": share([loops(t) for t in texts]),
        "echo": None
        if contexts is None
        else share([echoes(t, c) for t, c in zip(texts, contexts, strict=True)]),
    }


def speaker_accuracy(picked: Sequence[str | None], real_senders: Sequence[str]) -> dict[str, Any]:
    """``speaker_accuracy`` (share of picks equal to the real sender) and ``per_speaker``
    ({real sender: {n, accuracy}}), for the model's ``Sender:`` and the bot's pick alike."""
    hits = [got == want for got, want in zip(picked, real_senders, strict=True)]
    per_speaker: dict[str, dict[str, float]] = {}
    for want in sorted(set(real_senders)):
        mine = [h for h, s in zip(hits, real_senders, strict=True) if s == want]
        per_speaker[want] = {"n": len(mine), "accuracy": sum(mine) / len(mine)}
    return {
        "speaker_accuracy": sum(hits) / len(hits) if hits else 0.0,
        "per_speaker": per_speaker,
    }


def next_speaker_measure(
    model_dir: Path, contexts: Sequence[Sequence[str]], real_senders: Sequence[str]
) -> dict[str, Any] | None:
    """How often the bot's pick (the next-speaker scorer saved with the model, asked as the
    bot asks it, anyone allowed) is the real sender; None when the model has no scorer. A
    scorer file the bot would skip as unreadable is refused, so a report never hides that."""
    scorer = _refusing_damaged(next_speaker.load, model_dir, "next-speaker scorer")
    if scorer is None:
        return None
    picks = [scorer.pick(context) for context in contexts]
    return {"scorer": next_speaker.SCORER_FILE, **speaker_accuracy(picks, real_senders)}


# --- baselines ----------------------------------------------------------------------------


def most_frequent_speaker_replies(
    train_rows: Sequence[dict[str, str]], n: int
) -> tuple[str, list[str]]:
    """The training split's most active sender, saying their most common message, n times."""
    senders = Counter(row["sender"] for row in train_rows)
    top = senders.most_common(1)[0][0]
    said = Counter(row["response"] for row in train_rows if row["sender"] == top)
    return top, [said.most_common(1)[0][0]] * n


def repeat_last_line_replies(rows: Sequence[dict[str, str]]) -> list[str]:
    """Each conversation's last line, echoed (empty when there is no context)."""
    return [row["conversation"].rstrip("\n").rsplit("\n", 1)[-1] for row in rows]


# --- the command --------------------------------------------------------------------------


def evaluate(
    model_dir: Path,
    data_dir: Path,
    split: str = "test",
    out_dir: Path | None = None,
    *,
    do_generate: bool = True,
    limit: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a chat model and both baselines on a split; write eval.json, eval.md and a PNG.

    Everything is written to a temporary directory first and renamed to ``out_dir`` (default
    ``MODEL_DIR/eval-SPLIT``), so a report on disk is always complete.
    """
    from training.model.tasks import chat_prompt, read_chat_split
    from training.progress import progress as progress_bar

    model_dir, data_dir = Path(model_dir), Path(data_dir)
    if limit is not None and limit <= 0:
        raise InputError(f"--limit {limit}: must be positive")
    out_dir = Path(out_dir) if out_dir else model_dir / f"eval-{split}"
    check_location(out_dir, [model_dir / "config.json", data_dir])
    check_replaceable(out_dir, EVAL_KIND, "a `friendbot evaluate` report")
    rows = read_chat_split(data_dir, split)
    if limit:
        rows = rows[:limit]
    train_rows = read_chat_split(data_dir, "train")
    model, info = load_model(model_dir)
    rows, train_rows = rows_for_model(info, rows), rows_for_model(info, train_rows)
    tokenizer = info.tokenizer
    max_source, max_target = info.max_source_length, info.max_target_length

    real = [row["response"] for row in rows]
    contexts = [[ln for ln in row["conversation"].split("\n") if ln] for row in rows]
    real_senders = [parse_turn(r)[0] or row["sender"] for r, row in zip(real, rows, strict=True)]
    loss = model_loss(model, tokenizer, rows, max_source, max_target)
    report: dict[str, Any] = {
        "model_dir": str(model_dir),
        "data_dir": str(data_dir),
        "split": split,
        "examples": len(rows),
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "generated": do_generate,
        "rouge_l": None,
        "speaker_accuracy": None,
        "distinct_1": None,
        "distinct_2": None,
        "loops": None,
        "echo": None,
        "per_speaker": {},
        "next_speaker": next_speaker_measure(model_dir, contexts, real_senders),
        "imitation": None,
    }
    samples: list[dict[str, str]] = []
    # read before minutes of generation, so an unreadable scorer file stops evaluate at once
    ranking = bot_ranking(model_dir) if do_generate else None
    if do_generate:
        prompts = [chat_prompt(row) for row in rows]
        free = replace(GREEDY_DECODING, max_new_tokens=max_target)
        bar = progress_bar(len(prompts), "generating", enabled=progress)
        try:
            replies = generate(model, tokenizer, prompts, max_source, free, batch_size, bar.update)
        finally:
            bar.close()
        report.update(score(replies, real, real_senders, contexts))
        samples = [
            {"context": row["conversation"], "real": want, "generated": got}
            for row, want, got in list(zip(rows, real, replies, strict=True))[:SAMPLES_IN_REPORT]
        ]
    top, top_replies = most_frequent_speaker_replies(train_rows, len(rows))
    report["baselines"] = {
        "most_frequent_speaker": {
            "speaker": top,
            **score(top_replies, real, real_senders, contexts),
        },
        "repeat_last_line": score(repeat_last_line_replies(rows), real, real_senders, contexts),
    }
    if do_generate:
        report["imitation"] = imitation_measures(
            model, tokenizer, rows, train_rows, max_source, batch_size, progress, ranking
        )
    _write_outputs(report, samples, out_dir)
    report["out_dir"] = str(out_dir)
    return report


def imitation_measures(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, str]],
    train_rows: Sequence[dict[str, str]],
    max_source_length: int,
    batch_size: int = 32,
    progress: bool = False,
    ranking: BotRanking | None = None,
) -> dict[str, Any] | None:
    """Voice, loops and echo of ``reply as NAME:`` replies: greedy, one plain sample, and as
    the bot decodes (best of REPLY_CANDIDATES, ranked as the bot ranks them: ``ranking``, by
    default the model's log-probability and the guards without scorer files), beside the two
    baselines (training/model/imitation.py); None with too few speakers."""
    from training.progress import progress as progress_bar

    ranking = ranking or bot_ranking(None)
    scorer = ranking.scorer

    def run(cases: list[PersonaCase], options: DecodeOptions) -> list[str]:
        k = options.num_return_sequences
        how = f"best of {k}" if k > 1 else "sampled" if options.sample else "greedy"
        bar = progress_bar(len(cases), f"persona, {how}", enabled=progress)
        try:
            if k > 1:
                return best_of_replies(
                    model,
                    tokenizer,
                    cases,
                    max_source_length,
                    options,
                    scorer,
                    max(1, batch_size // k),
                    bar.update,
                )
            prompts = [c.prompt for c in cases]
            return generate(
                model, tokenizer, prompts, max_source_length, options, batch_size, bar.update
            )
        finally:
            bar.close()

    sampled = replace(BOT_DECODING, seed=SAMPLING_SEED)
    decodings = {"greedy": GREEDY_DECODING, "sampled": sampled}
    if REPLY_CANDIDATES > 1:
        decodings["bot"] = replace(sampled, num_return_sequences=REPLY_CANDIDATES)
    baselines = {
        "most_frequent_speaker": lambda rs: most_frequent_speaker_replies(train_rows, len(rs))[1],
        "repeat_last_line": repeat_last_line_replies,
    }
    report = measure_imitation(rows, train_rows, run, decodings, baselines)
    if report is not None:
        report["bot_ranking"] = {"candidates": REPLY_CANDIDATES, **ranking.files}
    return report


@dataclass(frozen=True)
class BotRanking:
    """How the bot ranks this model's candidates, and which scorer files that used."""

    scorer: Scorer
    files: dict[str, bool]


def _refusing_damaged(load: Callable[[Path], T], model_dir: Path, what: str) -> T:
    """``load(model_dir)``; a damaged scorer file, which the bot would log and skip, is
    refused with one line naming it, so a report never hides that."""
    try:
        return load(model_dir)
    except scorer_files.DAMAGED as exc:
        raise InputError(f"{model_dir}: unreadable {what} ({first_line(exc)})") from exc


def bot_ranking(model_dir: Path | None) -> BotRanking:
    """How the bot ranks this model's candidates (training.model.rerank); a scorer file the
    bot would skip as unreadable is refused here, so a report never hides that."""
    voice, feedback = None, None
    if model_dir is not None:
        voice, feedback = _refusing_damaged(load_model_scorers, Path(model_dir), "reply scorer")
    return BotRanking(
        with_model_scorers(score_candidate, voice, feedback),
        {"voice_scorer": voice is not None, "feedback_scorer": feedback is not None},
    )


def _write_outputs(report: dict[str, Any], samples: list[dict[str, str]], out_dir: Path) -> None:
    """eval.json, eval.md and the per-speaker PNG into ``out_dir``, atomically."""
    from training.model.plots import plot_speaker_accuracy, plot_voice

    with staged(out_dir, EVAL_KIND) as tmp:
        (tmp / EVAL_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / REPORT_FILE).write_text(markdown_report(report, samples), encoding="utf-8")
        if report["per_speaker"] or report.get("next_speaker"):
            plot_speaker_accuracy(report, tmp / SPEAKER_PLOT)
        if report["imitation"]:
            plot_voice(report["imitation"], tmp / VOICE_PLOT)


def metric_rows(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(metric, [model, most frequent speaker, repeat last line]) rows for tables."""

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    base = report["baselines"]
    systems = [report, base["most_frequent_speaker"], base["repeat_last_line"]]
    names = ["speaker_accuracy", "rouge_l", "distinct_1", "distinct_2", "loops", "echo"]
    rows = [(name, [fmt(s.get(name)) for s in systems]) for name in names]
    picked = report.get("next_speaker")
    if picked is not None:
        rows.insert(1, (PICK_LABEL, [fmt(picked["speaker_accuracy"]), "-", "-"]))
    rows.insert(0, ("loss", [fmt(report["loss"]), "-", "-"]))
    rows.insert(1, ("perplexity", [f"{report['perplexity']:.2f}", "-", "-"]))
    return rows


def markdown_report(report: dict[str, Any], samples: Sequence[dict[str, str]]) -> str:
    """A short human-readable report: the metric table and a few sample generations."""
    top = report["baselines"]["most_frequent_speaker"]["speaker"]
    lines = [
        f"# Evaluation of `{report['model_dir']}`",
        "",
        f"Split `{report['split']}` of `{report['data_dir']}`: {report['examples']} examples. "
        f"Greedy generation from the free prompt (the model picks the speaker), with no "
        f"repeated {GREEDY_DECODING.no_repeat_ngram_size}-gram and repetition penalty "
        f"{GREEDY_DECODING.repetition_penalty}.",
        "",
        f"| metric | model | most frequent speaker ({top}) | repeat last line |",
        "|---|---|---|---|",
        *(f"| {name} | {' | '.join(values)} |" for name, values in metric_rows(report)),
        "",
    ]
    picked = report.get("next_speaker")
    if picked is not None:
        lines += [
            f"`speaker_accuracy` is the model's own greedy `Sender:`. The bot's pick is the "
            f"next-speaker scorer saved with the model (`{picked['scorer']}`): the bot speaks "
            f"as its best candidate and asks the model for a reply as that friend. It is a "
            f"turn-taking scorer around the model, not the model getting better.",
            "",
        ]
    if report["generated"]:
        lines += imitation_markdown(report["imitation"])
    lines += _per_speaker_markdown(report)
    if samples:
        lines += ["## Sample generations", ""]
        for i, s in enumerate(samples, 1):
            context = s["context"].split("\n")[-3:]
            lines += [f"**{i}.** context (last lines):", "", "```", *context, "```"]
            lines += [f"- real: `{s['real']}`", f"- generated: `{s['generated']}`", ""]
    return "\n".join(lines)


def _per_speaker_markdown(report: dict[str, Any]) -> list[str]:
    """Speaker accuracy per real speaker: the model's ``Sender:`` and the bot's pick."""
    model = report["per_speaker"]
    picked = (report.get("next_speaker") or {}).get("per_speaker") or {}
    if not model and not picked:
        return []
    names = list(model or picked)
    head = "| speaker | n | model |" + (" bot's pick (next-speaker scorer) |" if picked else "")
    lines = ["## Speaker accuracy per real speaker", "", head]
    lines.append("|---|---|---|" + ("---|" if picked else ""))
    for name in names:
        n = (model.get(name) or picked.get(name))["n"]
        cells = [f"{model[name]['accuracy']:.3f}" if name in model else "-"]
        if picked:
            cells.append(f"{picked[name]['accuracy']:.3f}")
        lines.append(f"| {name} | {n} | {' | '.join(cells)} |")
    return [*lines, ""]
