"""The bot: the Telegram application, the reply engine, the local terminal chat, the CLI root.

Owns python-telegram-bot wiring (``app``), thin handlers (``handlers``), the reply policy, the
responder that runs the model off the event loop, the reply engine (HF / CTranslate2 loading
and decoding, ``engine``), the bot's settings, and ``friendbot run|chat|history|demo``.
May import ``training`` (the text format, the model directory, retraining's entry points) and
``storage``; nothing imports ``bot``.
"""
