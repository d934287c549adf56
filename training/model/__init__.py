"""Models: tokenization, the tiny offline model, fine-tuning, evaluation, the model directory.

Owns ``friendbot train`` (``finetune.py``: the steps; ``pretrained.py``: base model and
tokenizer; ``loop.py``: the training loop; ``checkpoints.py``: what ``--resume`` reads),
``friendbot evaluate`` (``evaluate.py``), ``friendbot export-ct2`` (``ct2.py``) and what a
model directory is and whether it is usable (``model_dir.py``). Reads datasets only through
their files (parquet), so it never imports ``training.data``'s reading code; never imports
``training.retrain``, ``bot`` or ``storage``.
"""
