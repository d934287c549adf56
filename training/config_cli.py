"""Typer commands whose options are a config dataclass's fields: each option declared once.

A config dataclass (``TrainConfig``, ``PrepareOptions``) declares every option in one place:
name, type, default and help (``option(...)``). ``config_command`` turns a function that takes
such a config into a Typer command with one ``--option`` per field, so the command line, its
help, the defaults and what the config records (``friendbot.json``) cannot drift apart. Typer
still does all the parsing: this only writes the signature it reads.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from training.errors import InputError


def option(default: Any = dataclasses.MISSING, *, help: str, **cli: Any) -> Any:
    """A config field and its command-line face: ``help``, and rarely ``flags`` (spellings),
    ``cli_type`` + ``cli_default`` (the form typed, when the field holds a parsed value) or
    ``cli=False`` (not an option)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def config_command(func: Callable[..., Any], *, config_file: bool = False) -> Callable[..., Any]:
    """``func(..., config: SomeConfig)`` as a command taking one option per field of SomeConfig.

    With ``config_file``, ``--config FILE`` (TOML, keys = field names) supplies values that the
    command line overrides: they become the options' defaults before any option is read.
    """
    hints = typing.get_type_hints(func, include_extras=True)
    [(target, cls)] = [(k, h) for k, h in hints.items() if dataclasses.is_dataclass(h)]
    types = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True)]
    declared = inspect.signature(func).parameters.values()
    own = [p.replace(annotation=hints[p.name]) for p in declared if p.name != target]
    if config_file:
        own.append(_config_file_parameter({f.name for f in fields}))
    params = own + [_parameter(f, types[f.name]) for f in fields]

    def command(**values: Any) -> Any:
        values.pop("config_file", None)
        config = cls(**{f.name: _from_cli(values.pop(f.name), types[f.name]) for f in fields})
        return func(**values, **{target: config})

    command.__name__, command.__doc__ = func.__name__, func.__doc__
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command


def _is_variadic_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[-1:] == (Ellipsis,)


def _parameter(f: dataclasses.Field[Any], hint: Any) -> inspect.Parameter:
    """The Typer option of one field: a ``tuple[str, ...]`` field is a repeatable option."""
    meta = f.metadata
    cli_type, default = meta.get("cli_type", hint), meta.get("cli_default", f.default)
    if _is_variadic_tuple(hint):
        cli_type, default = list[typing.get_args(hint)[0]] | None, None
    option_info = typer.Option(*meta.get("flags", ()), help=meta["help"])
    return inspect.Parameter(
        f.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=inspect.Parameter.empty if default is dataclasses.MISSING else default,
        annotation=Annotated[cli_type, option_info],
    )


def _from_cli(value: Any, hint: Any) -> Any:
    return tuple(value or ()) if _is_variadic_tuple(hint) else value


def _config_file_parameter(names: set[str]) -> inspect.Parameter:
    def load(ctx: typer.Context, path: Path | None) -> None:
        if path is not None:
            ctx.default_map = {**(ctx.default_map or {}), **_read_config_file(ctx, path, names)}

    help_text = "TOML file of option values (keys: option names with _); the command line wins."
    info = typer.Option("--config", help=help_text, is_eager=True, callback=load, metavar="FILE")
    kind, annotation = inspect.Parameter.KEYWORD_ONLY, Annotated[Path | None, info]
    return inspect.Parameter("config_file", kind, default=None, annotation=annotation)


def _read_config_file(ctx: typer.Context, path: Path, names: set[str]) -> dict[str, Any]:
    """The file's values, each checked as its option would check it (one line naming both)."""
    import difflib
    import tomllib

    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid TOML file ({exc})") from None
    values = {key.replace("-", "_"): value for key, value in values.items()}
    params = {p.name: p for p in ctx.command.params}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]}?" if close else "keys are option names, with _"
            raise InputError(f"{path}: unknown option {key!r} ({hint})")
        try:
            params[key].process_value(ctx, value)
        except typer.BadParameter as exc:
            raise InputError(f"{path}: {key} = {value!r}: {exc.message}") from None
    return values
