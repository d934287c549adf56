"""What a usable model directory is (training.model.model_dir.validate), case by case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from training.errors import InputError
from training.model.model_dir import (
    INFO_FILE,
    INFO_FORMAT,
    read_info,
    validate,
    write_info,
)


@pytest.fixture
def model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny chat model to break."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def one_line_error(model_dir: Path, **kwargs: Any) -> str:
    with pytest.raises(InputError) as err:
        validate(model_dir, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_trained_model_validates_into_typed_info(model: Path) -> None:
    info = validate(model)

    assert info.path == model.resolve()
    assert (info.task, info.is_chat, info.base_model) == ("chat", True, "tiny")
    assert (info.max_source_length, info.max_target_length) == (512, 64)
    assert info.speakers == ()
    assert info.embedding_rows == len(info.tokenizer)
    assert info.fields == read_info(model)


def test_a_symlinked_model_resolves(model: Path, tmp_path: Path) -> None:
    (tmp_path / "current").symlink_to(model)
    assert validate(tmp_path / "current").path == model.resolve()


def test_without_tokenizer_json_the_4_token_fallback_is_refused(model: Path) -> None:
    from transformers import AutoTokenizer

    (model / "tokenizer.json").unlink()
    assert len(AutoTokenizer.from_pretrained(model)) == 4  # what every reader used to get

    message = one_line_error(model)
    assert message.startswith(f"{model}: no tokenizer vocabulary (tokenizer.json")
    assert "no tokenizer vocabulary" in one_line_error(model, chat=False)


def test_a_tokenizer_of_another_model_is_refused(model: Path, tmp_path: Path) -> None:
    from training.model.tiny import train_tokenizer

    words = [f"word{i} thing{i * 7} other{i * 13}" for i in range(400)]
    other = train_tokenizer(words, vocab_size=300)
    other.save_pretrained(model)

    message = one_line_error(model)
    assert f"the tokenizer has {len(other)} tokens but the model" in message
    assert "embedding rows" in message


def test_a_chat_model_without_friendbot_json_is_refused(model: Path) -> None:
    (model / INFO_FILE).unlink()

    message = one_line_error(model)
    assert message.startswith(f"{model}: no friendbot.json, so its prompt lengths are unknown")
    # as a task model (a plain FLAN-T5 directory) it is fine, with T5's own limits
    plain = validate(model, chat=False)
    assert (plain.task, plain.max_source_length, plain.max_target_length) == (None, 512, 64)


def test_a_task_model_is_not_a_chat_model(model: Path) -> None:
    write_info(model, {**read_info(model), "task": "paraphrase"})
    assert "a paraphrase model, not a chat model" in one_line_error(model)
    assert validate(model, chat=False).task == "paraphrase"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"format": None}, "no format number"),
        ({"format": INFO_FORMAT + 1}, "newer than this friendbot reads"),
        ({"task": "poetry"}, "task 'poetry': expected one of chat, paraphrase, joke"),
        ({"max_source_length": "32"}, "max_source_length '32': expected a positive whole"),
        ({"max_target_length": 0}, "max_target_length 0: expected a positive whole"),
        ({"max_source_length": True}, "max_source_length True"),
        ({"speakers": "Ann"}, "speakers: expected a list of names"),
        ({"base_model": 3}, "base_model 3"),
        ({"metrics": []}, "metrics: expected an object"),
    ],
)
def test_friendbot_json_fields_readers_use_are_checked(
    model: Path, change: dict[str, Any], says: str
) -> None:
    record = {**json.loads((model / INFO_FILE).read_text()), **change}
    record = {k: v for k, v in record.items() if v is not None}
    (model / INFO_FILE).write_text(json.dumps(record))

    message = one_line_error(model, chat=False)
    assert message.startswith(f"{model / INFO_FILE}: ")
    assert says in message


def test_friendbot_json_that_is_not_json_or_not_an_object(model: Path) -> None:
    (model / INFO_FILE).write_text("{not json")
    assert "not valid JSON" in one_line_error(model)
    (model / INFO_FILE).write_text("[1, 2]")
    assert "expected a JSON object" in one_line_error(model)


def test_write_info_stamps_the_format_and_refuses_what_readers_refuse(tmp_path: Path) -> None:
    record = {"task": "chat", "max_source_length": 32, "max_target_length": 64}
    write_info(tmp_path, record)
    assert read_info(tmp_path) == {"format": INFO_FORMAT, **record}
    with pytest.raises(ValueError, match="max_source_length"):
        write_info(tmp_path, {**record, "max_source_length": None})


def test_config_without_vocab_size_and_truncated_weights(model: Path) -> None:
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "cannot load the model weights" in one_line_error(model)

    (model / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert "no vocab_size" in one_line_error(model)


def test_missing_files_and_an_unmerged_adapter(model: Path, tmp_path: Path) -> None:
    assert "no such model directory" in one_line_error(tmp_path / "nope")
    (model / "model.safetensors").unlink()
    assert "no model weights" in one_line_error(model)
    (model / "config.json").unlink()
    assert "not a model directory (no config.json" in one_line_error(model)
    (model / "adapter_config.json").write_text("{}")
    assert "LoRA adapter" in one_line_error(model)
