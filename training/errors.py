"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class InputError(Exception):
    """Bad input (a file, a directory, an option); the message names it and what is wrong."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """An exception's first line (or its type's name): enough for a one-line error."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
