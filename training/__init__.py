"""Training: from a Telegram export to a model directory, and retraining it on a schedule.

Owns: ``data/`` (export reading -> sessions -> pairs -> dataset files: ``friendbot chats``,
``prepare``), ``model/`` (tokenization, the tiny model, fine-tuning, evaluation, the model
directory and its CTranslate2 conversion: ``train``, ``evaluate``, ``export-ct2``),
``retrain/`` (the retraining pipeline, its inputs, settings and schedule: ``retrain``, ``runs``,
``rollback``, ``schedule``), and the pieces both training and the bot share: the text format
(``formatting``), user-fixable errors (``errors``), output directories (``output_dirs``), the
settings every process reads (``settings``: the bot's extend them), the CLI core (``cli``) and
the options a config dataclass declares (``config_cli``).

Must not import ``bot`` (by ``import`` or by launching ``python -m bot...``): training runs on
a machine without Telegram code. May import ``storage``.
"""
