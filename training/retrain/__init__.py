"""Retraining: fresh exports (and the bot's stored history) -> a candidate -> promote or keep.

Owns ``friendbot retrain`` (``pipeline.py``), its inputs (``inputs.py``), the models folder's
candidates and links (``models_folder.py``) and the schedule (``scheduler.py``), plus ``runs``,
``rollback`` and ``schedule``; its settings are a section of ``training/settings.py``. May import
``training.data``, ``training.model`` and ``storage``; never ``bot``. Training itself runs in a
child process (``python -m training.cli train``), so a crash there cannot take this one down.
"""
