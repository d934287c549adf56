"""Storage: the bot's history and state in SQLite or PostgreSQL through SQLAlchemy 2.0.

Owns the typed models, engine/session setup, Alembic migrations, small query functions (they
take a session and never commit) and the batching message writer. Imports neither ``bot`` nor
``training``: it is the bottom layer.
"""
