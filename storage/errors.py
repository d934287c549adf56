"""The one error storage raises for a database a command cannot use as asked."""


class StorageError(Exception):
    """The database is missing, damaged, of another version, unreachable or not writable.

    The message is one line naming the database (its path, or its URL without the password)
    and what is wrong; the CLI prints it and exits with status 2, as for any input a user can
    fix (storage cannot import training's ``InputError``: it is the bottom layer).
    """

    exit_code = 2
