"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

CHAT_LINES = [
    "Alice: hey guys whats up 😂",
    "Bob: nothing much, you?",
    "Carol: lets go climbing tomorrow!!",
    "Alice: lol sure, 10am?",
    "Dave: count me in. bringing coffee",
    "Bob: ok ok fine",
]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tiny models run fastest on one thread, and CI machines are shared: no oversubscription."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny T5 + chat tokenizer saved as ``friendbot train`` saves a chat model.

    Tests that need a loadable model (the bot, the reply engine) but not a good one use this;
    it takes about a second to build. Its friendbot.json gives the plain T5 lengths (512/64)
    and no speakers, so the bot treats it as an unknown group.
    """
    from training.model.model_dir import write_info
    from training.model.tiny import TinyShape, build_model, train_tokenizer

    out = tmp_path_factory.mktemp("tiny-model")
    tokenizer = train_tokenizer(CHAT_LINES * 50, vocab_size=200)
    model = build_model(tokenizer, TinyShape(d_model=32, d_ff=64, num_heads=2, d_kv=16))
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    write_info(
        out,
        {
            "base_model": "tiny",
            "task": "chat",
            "speakers": [],
            "max_source_length": 512,
            "max_target_length": 64,
        },
    )
    return out
