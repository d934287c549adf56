"""Reading Telegram Desktop exports into datasets: ``friendbot chats`` and ``friendbot prepare``.

Owns the export layouts and their fast readers, message normalization, sessions, pairs and the
dataset files (``prepare.py``). Imports only ``training.errors`` / ``training.output_dirs`` /
``training.formatting`` outside itself; never ``training.model``, ``training.retrain``,
``bot`` or ``storage``.
"""
