"""Who speaks next: the bot's pick (the next-speaker scorer) against the speaker baselines.

For each prepared dataset: fit the scorer on the train split's pairs exactly as ``friendbot
train`` does (training.model.next_speaker, the model inputs and targets of the chat task),
then pick the next sender of every pair of a split (``test`` for the record, ``validation``
while choosing features) as ``friendbot evaluate`` does, anyone allowed. Prints the pick's
speaker accuracy beside the most frequent training speaker and the last context line's speaker
(``repeat last line``), the fit's CPU seconds and the saved file's size. No model is needed:
the model's own greedy ``Sender:`` is in ``friendbot evaluate``'s report.

    OMP_NUM_THREADS=1 python bench/next_speaker.py DATA_DIR [DATA_DIR ...] --split test
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from training.formatting import parse_turn
from training.model import next_speaker
from training.model.tasks import chat_examples, read_chat_split


def measure(data_dir: Path, split: str) -> dict[str, float | int | str]:
    train = read_chat_split(data_dir, "train")
    rows = read_chat_split(data_dir, split)
    cpu = time.process_time()
    scorer = next_speaker.fit([(e.source, e.target) for e in chat_examples(train)])
    fit_s = time.process_time() - cpu
    if scorer is None:
        raise SystemExit(f"{data_dir}: fewer than two senders in the train split")
    senders = [parse_turn(r["response"])[0] or r["sender"] for r in rows]
    contexts = [[ln for ln in r["conversation"].split("\n") if ln] for r in rows]
    cpu = time.process_time()
    picks = [scorer.pick(context) for context in contexts]
    pick_ms = (time.process_time() - cpu) * 1000 / max(1, len(rows))
    top = Counter(parse_turn(r["response"])[0] or r["sender"] for r in train).most_common(1)[0][0]
    last = [next_speaker.context_turns(c)[-1][0] if c else None for c in contexts]

    def accuracy(guesses: list[str | None]) -> float:
        return sum(g == s for g, s in zip(guesses, senders, strict=True)) / len(senders)

    pick = accuracy(picks)
    most_frequent = accuracy([top] * len(rows))
    return {
        "data": data_dir.name if data_dir.name != "data" else data_dir.parent.name,
        "pairs": len(rows),
        "pick": pick,
        "most_frequent": most_frequent,
        "last_speaker": accuracy(last),
        "ratio": pick / most_frequent if most_frequent else float("inf"),
        "fit_cpu_s": fit_s,
        "pick_ms": pick_ms,
        "kib": len(json.dumps(scorer.to_json(), ensure_ascii=False).encode()) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, nargs="+", help="prepared dataset directories")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    print(
        f"| dataset ({args.split}) | pairs | bot's pick | most frequent speaker | last speaker "
        "| pick / most frequent | fit CPU s | pick ms | file KiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for data_dir in args.data:
        m = measure(data_dir, args.split)
        print(
            f"| {m['data']} | {m['pairs']} | {m['pick']:.3f} | {m['most_frequent']:.3f} "
            f"| {m['last_speaker']:.3f} | {m['ratio']:.2f}x | {m['fit_cpu_s']:.1f} "
            f"| {m['pick_ms']:.2f} | {m['kib']:.0f} |"
        )


if __name__ == "__main__":
    main()
