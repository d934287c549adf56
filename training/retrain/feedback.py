"""What the group said about the bot's replies, turned into training inputs (RETRAIN_USE_FEEDBACK).

- Liked replies become extra training examples for the friend the bot spoke as: the stored
  messages it answered (rebuilt from the database, so an opted-out member's words are not in
  them) -> ``Persona: text``, repeated up to ``MAX_REPEAT`` times by how clearly it was liked.
  They go into ``feedback.parquet`` beside the prepared dataset, and training adds them to
  the train split only (training.model.tasks): validation and test stay the held-out sessions
  the gate compares models on.
- Liked and disliked replies both fit the best-of-k reply scorer
  (training.model.feedback_scorer), saved in the candidate's model directory.

Only replies made in the chat's flow (``chat``) or by ``/as`` count; a reply whose persona
has since opted out is never used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.formatting import format_turn
from training.model import feedback_scorer
from training.model.tasks import FEEDBACK_FILE
from training.output_dirs import restamp

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

MAX_REPEAT = 3
"""A reply liked by three members more than disliked it counts three times; no more, so a
few popular lines cannot drown a friend's real messages."""
KINDS = ("chat", "as")
SHRUG = "…"  # what the bot posts when a friend asked directly had no words (bot.replies)


def feedback_rows(session: Session) -> list[dict[str, Any]]:
    """One row per judged reply (liked or disliked), with its rebuilt context."""
    from storage.feedback import context_of, judged_replies
    from storage.history import opted_out_members

    blocked = {
        name.casefold()
        for member in opted_out_members(session)
        for name in (member.display_name, member.username)
        if name
    }
    rows = []
    for reply in judged_replies(session):
        verdict = reply.verdict
        if verdict is None or reply.kind not in KINDS or reply.persona.casefold() in blocked:
            continue
        if reply.text.strip() in ("", SHRUG):  # a friend with no words: nothing to learn
            continue
        context = [format_turn(m.sender_name, m.text) for m in context_of(session, reply)]
        rows.append(
            {
                "conversation": "\n".join(line for line in context if line),
                "response": format_turn(reply.persona, reply.text),
                "sender": reply.persona,
                "text": reply.text,
                "label": verdict,
                "weight": min(MAX_REPEAT, abs(reply.likes - reply.dislikes)),
                "likes": reply.likes,
                "dislikes": reply.dislikes,
                "chat_id": reply.chat_id,
                "message_id": reply.message_id,
                "model": reply.model or "",
            }
        )
    return rows


def write_feedback(session: Session, data_dir: Path) -> dict[str, int]:
    """Write ``data_dir/feedback.parquet`` (added to the dataset's marker); returns counts."""
    import pandas as pd

    rows = feedback_rows(session)
    liked = [r for r in rows if r["label"] == "liked"]
    counts = {
        "liked": len(liked),
        "disliked": len(rows) - len(liked),
        "extra_examples": sum(r["weight"] for r in liked),
    }
    if rows:
        frame = pd.DataFrame(rows)
        frame.to_parquet(Path(data_dir) / FEEDBACK_FILE, index=False)
        restamp(Path(data_dir))
    return counts


def fit_scorer(data_dir: Path, model_dir: Path) -> str:
    """Fit the reply scorer on the run's feedback and save it with the candidate; one line
    saying what happened (too little feedback is not an error: no scorer, plain ranking)."""
    import pandas as pd

    path = Path(data_dir) / FEEDBACK_FILE
    if not path.is_file():
        return "no feedback yet: no reply scorer"
    frame = pd.read_parquet(path, columns=["text", "label"])
    liked = [label == "liked" for label in frame["label"]]
    scorer = feedback_scorer.fit([str(t) for t in frame["text"]], liked)
    if scorer is None:
        return (
            f"reply scorer not fitted: fewer than {feedback_scorer.MIN_PER_CLASS} liked or "
            "disliked replies"
        )
    feedback_scorer.save(scorer, model_dir)
    restamp(Path(model_dir))
    return (
        f"reply scorer fitted on {scorer.info['liked']} liked and "
        f"{scorer.info['disliked']} disliked replies"
    )
