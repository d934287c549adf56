"""`friendbot train`'s options come from TrainConfig alone: flags, help, defaults, --config,
and the hyperparameters friendbot.json records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from tests.cli_runner import friendbot
from tests.training.fixtures.chatdata import write_dataset
from training.cli import new_app, run
from training.config_cli import config_command, option
from training.model import cli as model_cli
from training.model.config import TrainConfig

# Every spelling `friendbot train` accepted when each option was still declared by hand.
OLD_TRAIN_FLAGS = (
    "--base-model", "--checkpoint-every", "--compile", "--cpu", "--data", "--dropout", "--epochs",
    "--eval-every", "--grad-accum", "--keep-checkpoints", "--learning-rate", "--log-every",
    "--lora", "--lora-alpha", "--lora-dropout", "--lora-r", "--lora-targets", "--lr",
    "--max-grad-norm", "--max-source-length", "--max-steps", "--max-target-length", "--merge",
    "--min-delta", "--no-merge", "--no-progress", "--out", "--overwrite", "--patience",
    "--persona-prob", "--precision", "--progress", "--resume", "--schedule", "--seed", "--task",
    "--threads", "--tiny-vocab", "--token-budget", "--warmup", "--weight-decay",
)  # fmt: skip


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one error line stays one line


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """The configs `friendbot train` hands to the trainer (which is not run)."""
    import training.model.finetune as finetune

    seen: list[TrainConfig] = []
    monkeypatch.setattr(finetune, "train", lambda config: seen.append(config) or config.out)
    monkeypatch.setattr(model_cli, "_print_train_summary", lambda model_dir: None)
    return seen


def train_params() -> dict[str, typer.core.TyperOption]:
    app = new_app()
    model_cli.register(app)
    command = get_command(app).commands["train"]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params}


def test_every_field_is_an_option_with_its_help_and_default() -> None:
    params = train_params()
    for f in dataclasses.fields(TrainConfig):
        param = params[f.name]
        assert param.help == f.metadata["help"], f.name
        if f.default is dataclasses.MISSING:
            assert param.required, f.name
        else:
            assert param.default == f.default, f.name
    assert set(params) == {f.name for f in dataclasses.fields(TrainConfig)} | {"config_file"}


def test_every_old_spelling_is_still_accepted() -> None:
    spellings = {o for p in train_params().values() for o in (*p.opts, *p.secondary_opts)}
    assert set(OLD_TRAIN_FLAGS) <= spellings


def test_options_reach_the_trainer(trained: list[TrainConfig], tmp_path: Path) -> None:
    code, out = friendbot(
        "train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m"), "--lr", "0.5",
        "--no-merge", "--compile", "--no-progress", "--max-steps", "7", "--base-model", "org/m",
        "--lora",
    )  # fmt: skip
    assert code == 0, out
    [config] = trained
    assert (config.learning_rate, config.merge_lora, config.compile) == (0.5, False, True)
    assert (config.progress, config.max_steps, config.base_model) == (False, 7, "org/m")
    assert config.data == tmp_path / "d" and config.lora


def test_config_file_gives_values_and_the_command_line_wins(
    trained: list[TrainConfig], tmp_path: Path
) -> None:
    file = tmp_path / "train.toml"
    file.write_text(
        f'data = "{tmp_path / "d"}"\nout = "{tmp_path / "m"}"\nmax_steps = 6\nseed = 3\n'
        'learning-rate = 0.002\nlora = true\nlora_targets = "q,v"\n'
    )
    code, out = friendbot("train", "--seed", "5", "--config", str(file), "--no-lora")
    assert code == 0, out
    [config] = trained
    assert config.data == tmp_path / "d" and config.out == tmp_path / "m"
    assert (config.max_steps, config.learning_rate, config.lora_targets) == (6, 0.002, "q,v")
    assert config.seed == 5 and config.lora is False  # given on the command line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epoch = 3\n", "unknown option 'epoch' (did you mean epochs?)"),
        ('epochs = "many"\n', "epochs = 'many': "),  # then the parser's words for it
        ("epochs = \n", "not a valid TOML file"),
        ("[train]\nepochs = 3\n", "unknown option 'train'"),
        (None, "cannot read the config file"),
    ],
)
def test_config_file_mistakes_are_one_line_naming_the_file(
    text: str | None, message: str, trained: list[TrainConfig], tmp_path: Path
) -> None:
    file = tmp_path / "train.toml"
    if text is not None:
        file.write_text(text)
    where = ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "m")]
    code, out = friendbot("train", *where, "--config", str(file))
    assert code == 2
    assert out.startswith(f"friendbot: error: {file}: ") and message in out, out
    assert out.strip().count("\n") == 0 and not trained


def test_a_new_field_is_an_option_and_a_hyperparameter_with_no_other_edit(
    tmp_path: Path,
) -> None:
    """What adding an option to TrainConfig takes: the field. Nothing else is edited here."""
    extended = dataclasses.make_dataclass(
        "Extended",
        [("new_knob", int, option(7, help="A knob added later."))],
        bases=(TrainConfig,),
    )
    seen: list[TrainConfig] = []

    def train(config: TrainConfig) -> None:
        seen.append(config)

    train.__annotations__["config"] = extended  # the command takes the extended config
    app = new_app()
    app.command("train")(config_command(train, config_file=True))
    app.command("other")(lambda: None)  # two commands: `train` stays a subcommand
    param = {p.name: p for p in get_command(app).commands["train"].params}["new_knob"]
    assert param.help == "A knob added later." and param.default == 7
    assert "--new-knob" in param.opts

    where = ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "m")]
    run(app, ["train", *where, "--new-knob", "9"])
    (tmp_path / "k.toml").write_text("new_knob = 11\n")
    run(app, ["train", *where, "--config", str(tmp_path / "k.toml")])
    assert [c.hyperparameters()["new_knob"] for c in seen] == [9, 11]
    assert set(seen[0].hyperparameters()) == {f.name for f in dataclasses.fields(extended)}


def test_friendbot_json_records_every_option_as_trained(tmp_path: Path) -> None:
    """The real run: values from --config and the command line land in friendbot.json."""
    data = write_dataset(tmp_path / "data")
    file = tmp_path / "quick.toml"
    file.write_text(
        f'data = "{data}"\nmax_steps = 4\ntoken_budget = 512\neval_every = 2\nlog_every = 2\n'
        "tiny_vocab = 300\nmax_source_length = 48\nprogress = false\nseed = 1\n"
    )
    code, out = friendbot(
        "train", "--config", str(file), "--out", str(tmp_path / "m"), "--seed", "4"
    )
    assert code == 0, out
    recorded = json.loads((tmp_path / "m" / "friendbot.json").read_text())["hyperparameters"]
    assert set(recorded) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert recorded["max_steps"] == 4 and recorded["tiny_vocab"] == 300
    assert recorded["seed"] == 4 and recorded["data"] == str(data)
    assert recorded["out"] == str(tmp_path / "m")
