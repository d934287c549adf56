"""Full-text search over stored messages (storage.search), on SQLite FTS5 and PostgreSQL.

The index must follow every way a message arrives or leaves: the batching writer's inserts,
an edit, /forget, /optout, retention and a deleted chat; and a search never crosses chats,
never returns the bot's own posts, an opted-out member's or anything not strictly before
``before``.
"""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import delete, select, text, update

from storage.db import alembic_config, make_engine, session_factory, upgrade
from storage.history import (
    add_message,
    forget_chat,
    forget_member,
    prune_messages,
    set_opted_out,
    upsert_chat,
    upsert_member,
)
from storage.models import Chat, Message
from storage.search import FoundMessage, search_candidates, search_messages, search_words
from storage.writer import MessageRecord, MessageWriter
from tests.storage.conftest import at
from training.memory_search import CANDIDATES, Doc, scores

CHAT, OTHER = -1001, -1002
HUGO, MIA, BOT = 1, 2, 99


def store(
    session,
    message_id: int,
    sender: int | None,
    name: str,
    text_: str,
    minute: float,
    *,
    chat: int = CHAT,
    from_bot: bool = False,
) -> None:
    upsert_chat(session, chat, "Friends", "supergroup")
    if sender is not None and not from_bot:
        upsert_member(session, sender, name)
    add_message(
        session,
        chat_id=chat,
        message_id=message_id,
        sender_id=sender,
        sender_name=name,
        text=text_,
        date=at(minute),
        from_bot=from_bot,
    )


def rank(words, found: list[FoundMessage]) -> list[float]:
    """The bot's rule (training.memory_search), as bot.memory passes it."""
    return scores(words, [Doc.of(m.text, m.sender_name) for m in found])


def search(session, chat: int, terms, **kw) -> list[FoundMessage]:
    return search_messages(session, chat, terms, rank=rank, candidates=CANDIDATES, **kw)


def found_ids(Session, terms, chat: int = CHAT, **kw) -> list[int]:
    with Session.begin() as session:
        return [m.message_id for m in search(session, chat, terms, **kw)]


def seed(Session) -> None:
    with Session.begin() as session:
        store(session, 1, HUGO, "Hugo", "my bike broke again", 1)
        store(session, 2, MIA, "Mia", "Prague was amazing, the bridge at night", 2)
        store(session, 3, HUGO, "Hugo", "fixed the bike finally, new chain", 3)
        store(session, 4, MIA, "Mia", "anyone for climbing tomorrow", 4)
        store(session, 5, BOT, "Hugo", "bike bike bike", 5, from_bot=True)  # the bot, as Hugo
        store(session, 6, MIA, "Mia", "bike in Prague? never again", 6, chat=OTHER)


def test_finds_by_any_term_best_first_in_this_chat_only(Session) -> None:
    seed(Session)
    with Session.begin() as session:
        found = search(session, CHAT, ["chain", "bike"])
    # both terms beat one; the bot's own post and the other chat's message never appear
    assert [m.message_id for m in found] == [3, 1]
    assert found[0].rank >= found[1].rank
    first = found[0]
    assert (first.sender_id, first.sender_name, first.text) == (
        HUGO,
        "Hugo",
        "fixed the bike finally, new chain",
    )
    assert first.date == at(3) and first.date.tzinfo is not None
    assert found_ids(Session, ["prague"]) == [2]
    assert found_ids(Session, ["prague"], chat=OTHER) == [6]
    assert found_ids(Session, ["PRAGUE", "zzz"]) == [2]  # case folded; a missing term is no harm
    assert found_ids(Session, ["skiing"]) == []
    assert found_ids(Session, []) == []
    assert found_ids(Session, ["bike", "chain"], limit=1) == [3]


def test_before_exclude_and_sender_filters(Session) -> None:
    seed(Session)
    with Session.begin() as session:
        store(session, 7, MIA, "Mia", "did you ride the bike to Prague", 7)
    assert found_ids(Session, ["bike"], before=at(3)) == [1]  # strictly before: 3 is not
    assert 3 not in found_ids(Session, ["bike"], before=at(3))
    assert sorted(found_ids(Session, ["bike"], exclude_message_ids=[3, 7])) == [1]
    assert found_ids(Session, ["bike", "prague"], sender_id=MIA) == [7, 2]
    assert found_ids(Session, ["bike"], sender_id=MIA, before=at(7)) == []


def test_only_the_newest_candidates_are_ranked_and_equal_scores_go_to_the_newer(Session) -> None:
    with Session.begin() as session:
        for i in range(1, 6):
            store(session, i, HUGO, "Hugo", f"pizza night {i}", i)
        store(session, 6, MIA, "Mia", "pizza pizza pizza", 6)
        store(session, 7, MIA, "Mia", "anyone", 7)
    with Session.begin() as session:
        newest = search_candidates(session, CHAT, ["pizza"], limit=3, before=at(7))
        assert [m.message_id for m in newest] == [6, 5, 4]  # newest first, then the cap
        ranked = search_messages(session, CHAT, ["pizza"], rank=rank, candidates=3, limit=3)
    assert [m.message_id for m in ranked] == [6, 5, 4]  # 6 says it most; 5 and 4 tie: newer
    assert found_ids(Session, ["pizza", "night"], sender_id=HUGO, limit=2) == [5, 4]


def test_sender_name_is_searchable_but_text_weighs_more(Session) -> None:
    with Session.begin() as session:
        store(session, 1, HUGO, "Hugo", "off to the shop", 1)
        store(session, 2, MIA, "Mia", "hugo said he would come", 2)
    assert found_ids(Session, ["hugo"]) == [2, 1]


def test_user_text_cannot_reach_the_query_syntax(Session) -> None:
    seed(Session)
    nasty = ['"', "bike OR", "NEAR(bike", "chain*", "'; DROP TABLE messages; --", "a:b", "-x", "^"]
    assert sorted(found_ids(Session, nasty)) == [1, 3]
    assert search_words(["Bike-chain", "bike", "über_cool"]) == ["bike", "chain", "über", "cool"]


def test_index_follows_the_batching_writer(Session) -> None:
    writer = MessageWriter(Session, max_batch=50)
    writer.start()
    try:
        for i in range(200):
            word = "velodrome" if i % 50 == 7 else f"filler{i}"
            writer.submit(
                MessageRecord(
                    chat_id=CHAT,
                    message_id=i,
                    sender_id=HUGO + i % 3,
                    sender_name=f"F{i % 3}",
                    text=f"we talked about {word}",
                    date=at(i),
                    chat_title="Friends",
                    chat_type="supergroup",
                )
            )
        writer.flush(timeout=30)
    finally:
        writer.close()
    assert sorted(found_ids(Session, ["velodrome"], limit=10)) == [7, 57, 107, 157]
    assert found_ids(Session, ["filler123"]) == [123]


def test_index_follows_edits(Session) -> None:
    seed(Session)
    with Session.begin() as session:
        session.execute(update(Message).where(Message.message_id == 2).values(text="Vienna it was"))
    assert found_ids(Session, ["prague"]) == []
    assert found_ids(Session, ["vienna"]) == [2]


def test_index_follows_forget_optout_retention_and_deleted_chats(Session) -> None:
    seed(Session)
    with Session.begin() as session:  # /optout: the member's rows go
        set_opted_out(session, HUGO, True)
        forget_member(session, HUGO)
    assert found_ids(Session, ["bike", "chain", "prague"]) == [2]
    with Session.begin() as session:  # retention by age
        prune_messages(session, older_than=at(3))
    assert found_ids(Session, ["prague"]) == []
    assert found_ids(Session, ["climbing"]) == [4]
    with Session.begin() as session:  # /forget
        forget_chat(session, CHAT)
    assert found_ids(Session, ["climbing"]) == []
    with Session.begin() as session:  # retention by count, then the whole chat row (cascade)
        for i in range(10, 15):
            store(session, i, MIA, "Mia", f"kayak trip day {i}", i, chat=OTHER)
        prune_messages(session, keep_per_chat=2)
    assert sorted(found_ids(Session, ["kayak"], chat=OTHER)) == [13, 14]
    with Session.begin() as session:
        session.execute(delete(Chat).where(Chat.id == OTHER))
    assert found_ids(Session, ["kayak", "prague"], chat=OTHER) == []
    with Session.begin() as session:  # nothing left behind in the index either
        assert _index_size(session) == 0


def test_opted_out_members_are_never_found_even_if_rows_remain(Session) -> None:
    seed(Session)
    with Session.begin() as session:
        set_opted_out(session, HUGO, True)  # flag only: rows not deleted (yet)
    assert found_ids(Session, ["bike", "chain"]) == []
    with Session.begin() as session:
        set_opted_out(session, HUGO, False)
    assert found_ids(Session, ["bike", "chain"]) == [3, 1]


def test_other_bots_are_not_memory_but_anonymous_admins_are(Session) -> None:
    with Session.begin() as session:
        upsert_chat(session, CHAT, "Friends", "supergroup")
        upsert_member(session, 77, "WeatherBot", is_bot=True)
        add_message(
            session,
            chat_id=CHAT,
            message_id=1,
            sender_id=77,
            sender_name="WeatherBot",
            text="rain in Prague",
            date=at(1),
        )
        add_message(
            session,
            chat_id=CHAT,
            message_id=2,
            sender_id=None,
            sender_name="Friends",
            text="Prague meetup moved",
            date=at(2),
        )
    assert found_ids(Session, ["prague"]) == [2]


def test_the_migration_indexes_messages_stored_before_it(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine, _revision_before_search())
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO chats (id, title, type, allowed, muted, created_at) "
                "VALUES (:c, 'Friends', 'supergroup', false, false, :d)"
            ),
            {"c": CHAT, "d": at(0)},
        )
        connection.execute(
            text(
                "INSERT INTO messages (chat_id, message_id, sender_id, sender_name, text, date, "
                "from_bot) VALUES (:c, 1, 1, 'Hugo', 'the old story about Lisbon', :d, false)"
            ),
            {"c": CHAT, "d": at(1)},
        )
    upgrade(engine)
    Session = session_factory(engine)
    assert found_ids(Session, ["lisbon"]) == [1]
    with Session.begin() as session:
        assert session.scalar(select(Message.text)) == "the old story about Lisbon"
    engine.dispose()


def _revision_before_search() -> str:
    """The revision the search migration follows (looked up: revisions get re-chained)."""
    script = ScriptDirectory.from_config(alembic_config())
    (search,) = [r for r in script.walk_revisions() if r.path.endswith("_search.py")]
    return search.down_revision


def _index_size(session) -> int:
    if session.get_bind().dialect.name == "sqlite":
        # the FTS5 vocabulary of the external-content index: no term left means no row left
        session.execute(
            text(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_terms "
                "USING fts5vocab(main, messages_fts, row)"
            )
        )
        return session.scalar(text("SELECT count(*) FROM temp.fts_terms"))
    return session.scalar(text("SELECT count(*) FROM messages WHERE search_vector IS NOT NULL"))
