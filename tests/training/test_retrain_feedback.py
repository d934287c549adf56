"""``friendbot retrain`` with RETRAIN_USE_FEEDBACK: what the group liked becomes training data.

The training child is tests/training/fake_train.py in ``inspect`` mode: it reports what
``friendbot train`` would learn from (``training.model.tasks.load_chat``) before copying the
tiny model, so the test sees that liked replies join the train split (repeated by how clearly
they were liked), never validation or test, and that disliked ones are not trained on. The
reply scorer fitted from both is saved with the promoted model.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storage.feedback import record_bot_reply, set_reactions
from storage.history import add_message, set_opted_out, upsert_chat, upsert_member
from tests.training.retrain_fixtures import (
    export_dict,
    fake_train_command,
    newest_date,
    write_export,
)
from tests.training.test_retrain import CHAT_ID, Workspace, make_workspace
from training.model import feedback_scorer
from training.model.model_dir import resolve_current

LIKED = [  # (persona, reply, net likes)
    ("Bob", "ok fine, bouldering at ten.", 2),
    ("Alice", "lol bouldering again 😂", 1),
    ("Carol", "lets go bouldering!!", 5),
]
DISLIKED = [
    ("Bob", "the the the the", 1),
    ("Alice", "I am a language model.", 2),
    ("Carol", "the the the", 1),
]
OPTED_OUT = ("Olga", "olga says hi", 3)  # liked, but Olga opted out since


def store_feedback(ws: Workspace, after: datetime) -> None:
    """A context message and a judged bot reply to it, per row of LIKED, DISLIKED, OPTED_OUT."""
    sessions = ws.sessions()
    rows = [(r, 1) for r in LIKED] + [(r, -1) for r in DISLIKED] + [(OPTED_OUT, 1)]
    with sessions.begin() as session:
        upsert_chat(session, CHAT_ID, "Test Crew", "supergroup")
        upsert_member(session, 1001, "Alice")
        upsert_member(session, 1066, "Olga")
        for i, ((persona, text, votes), sign) in enumerate(rows):
            asked = 50_000 + 2 * i
            add_message(
                session,
                chat_id=CHAT_ID,
                message_id=asked,
                sender_id=1001,
                sender_name="Alice",
                text=f"question {i}?",
                date=after + timedelta(minutes=i),
            )
            record_bot_reply(
                session,
                chat_id=CHAT_ID,
                message_id=asked + 1,
                persona=persona,
                text=text,
                kind="chat",
                context_until=asked,
                context_size=1,
                model="models/retrain-0001",
            )
            for member in range(votes):
                set_reactions(
                    session,
                    chat_id=CHAT_ID,
                    message_id=asked + 1,
                    member_id=2000 + member,
                    reactions=["👍" if sign > 0 else "👎"],
                    vote=sign,
                )
        set_opted_out(session, 1066, True)


def test_liked_replies_train_and_disliked_ones_fit_the_scorer(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    report = tmp_path / "seen.json"
    ws = make_workspace(
        tmp_path,
        retrain_train_command=fake_train_command("inspect", str(report), str(tiny_model_dir)),
        retrain_use_feedback=True,
    )
    export = export_dict()
    write_export(ws.exports / "crew.json", export)
    store_feedback(ws, datetime.fromtimestamp(newest_date(export), UTC) + timedelta(hours=1))

    outcome = ws.run()

    assert outcome.status == "promoted", outcome
    seen = json.loads(report.read_text(encoding="utf-8"))
    assert "feedback.parquet" in seen["files"]
    for persona, text, votes in LIKED:  # repeated by net likes, at most 3 times
        assert seen["train"].count(f"{persona}: {text}") == min(votes, 3)
    held_out = seen["validation"] + seen["test"]
    for persona, text, _ in [*LIKED, *DISLIKED, OPTED_OUT]:
        assert f"{persona}: {text}" not in held_out
    for persona, text, _ in [*DISLIKED, OPTED_OUT]:
        assert f"{persona}: {text}" not in seen["train"]
    assert outcome.candidate_metrics["feedback"] == {
        "liked": 3,
        "disliked": 3,
        "extra_examples": 2 + 1 + 3,
    }
    assert any("reply scorer fitted on 3 liked and 3 disliked" in r for r in ws.reports)

    scorer = feedback_scorer.load(resolve_current(ws.models))
    assert scorer is not None
    liked, disliked = scorer.score(["lets go climbing!!", "the the the the the"])
    assert liked > disliked

    # The group's reactions are inputs: unchanged, the next run is skipped; a new one trains.
    assert ws.run().status == "skipped"
    with ws.sessions().begin() as session:
        set_reactions(
            session, chat_id=CHAT_ID, message_id=50_001, member_id=2999, reactions=["🔥"], vote=1
        )
    assert ws.run().status == "promoted"


def test_without_the_setting_feedback_is_not_used(tmp_path: Path, tiny_model_dir: Path) -> None:
    report = tmp_path / "seen.json"
    ws = make_workspace(
        tmp_path,
        retrain_train_command=fake_train_command("inspect", str(report), str(tiny_model_dir)),
    )
    export = export_dict()
    write_export(ws.exports / "crew.json", export)
    store_feedback(ws, datetime.fromtimestamp(newest_date(export), UTC) + timedelta(hours=1))

    assert ws.run().status == "promoted"

    seen = json.loads(report.read_text(encoding="utf-8"))
    assert "feedback.parquet" not in seen["files"]
    assert not any(text in target for _, text, _ in LIKED for target in seen["train"])
    assert feedback_scorer.load(resolve_current(ws.models)) is None
