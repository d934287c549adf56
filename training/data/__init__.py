"""Reading Telegram Desktop exports into datasets: ``friendbot chats`` and ``friendbot prepare``.

Owns the export layouts and their fast readers, message normalization, sessions, pairs, the
dataset files (``prepare.py``) and prepare's options (``options.py``). Imports only
``training.errors`` / ``training.output_dirs`` / ``training.formatting`` /
``training.config_cli`` outside itself; never ``training.model``, ``training.retrain``,
``bot`` or ``storage``.
"""
