"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class InputError(Exception):
    """Bad input (a file, a directory, an option); the message names it and what is wrong."""

    exit_code = 2
