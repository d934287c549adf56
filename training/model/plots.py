"""PNG charts of training and evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(metrics_file: Path, out: Path) -> None:
    """Train and validation loss against optimizer steps, from metrics.jsonl."""
    records = [json.loads(line) for line in Path(metrics_file).read_text().splitlines() if line]
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), label="validation", marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (per token)")
    ax.set_title("friendbot training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_speaker_accuracy(report: dict[str, Any], out: Path) -> None:
    """Per-speaker accuracy of the model's ``Sender:`` and, when the model has a next-speaker
    scorer, of the bot's pick, with both overall and the two baselines as lines."""
    picked = report.get("next_speaker")
    model = report["per_speaker"]
    speakers = list(model or (picked or {}).get("per_speaker") or {})
    base = report["baselines"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1 + 0.8 * len(speakers)), 4))
    xs = list(range(len(speakers)))
    width = 0.4 if picked and model else 0.8
    if model:
        shift = -width / 2 if picked else 0.0
        values = [model[s]["accuracy"] for s in speakers]
        ax.bar([x + shift for x in xs], values, width, color="#4C72B0", label="model")
        ax.axhline(
            report["speaker_accuracy"], color="#4C72B0", linestyle="--", label="model overall"
        )
    if picked:
        shift = width / 2 if model else 0.0
        values = [picked["per_speaker"].get(s, {}).get("accuracy", 0.0) for s in speakers]
        label = "bot's pick (next-speaker scorer)"
        ax.bar([x + shift for x in xs], values, width, color="#8172B3", label=label)
        ax.axhline(
            picked["speaker_accuracy"], color="#8172B3", linestyle="--", label=f"{label} overall"
        )
    ax.axhline(
        base["most_frequent_speaker"]["speaker_accuracy"],
        color="#DD8452",
        linestyle=":",
        label=f"most frequent speaker ({base['most_frequent_speaker']['speaker']})",
    )
    ax.axhline(
        base["repeat_last_line"]["speaker_accuracy"],
        color="#55A868",
        linestyle="-.",
        label="repeat last line",
    )
    ax.set_xticks(xs, speakers)
    ax.set_ylim(0, 1)
    ax.set_ylabel("speaker accuracy")
    ax.set_title(f"Who speaks next? ({report['split']} split)")
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_voice(imitation: dict[str, Any], out: Path) -> None:
    """Per-speaker voice share of persona replies, greedy and sampled, beside the ceiling.

    Each speaker's bars read against their ceiling bar (how often the classifier recognises
    their real replies); the dashed lines are chance (majority share) and the uniform 1/N.
    """
    speakers = list(imitation["ceiling_per_speaker"])
    series = [("ceiling (real replies)", "#8C8C8C", imitation["ceiling_per_speaker"])]
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
    for name, color in zip(imitation["decoding"], colors, strict=False):
        series.append((name, color, imitation[name]["per_speaker"]))
    width = 0.8 / len(series)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8, 3 + 1.1 * len(speakers)), 4))
    for k, (label, color, values) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(speakers))]
        ax.bar(xs, [values[s]["share"] for s in speakers], width, color=color, label=label)
    ax.axhline(
        imitation["voice_chance"],
        color="black",
        linestyle="--",
        linewidth=1,
        label="chance (majority share)",
    )
    ax.axhline(
        imitation["voice_uniform"], color="black", linestyle=":", linewidth=1, label="uniform 1/N"
    )
    ax.set_xticks(range(len(speakers)), speakers)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share attributed to the persona")
    ax.set_title("Does `reply as NAME:` sound like NAME?")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
