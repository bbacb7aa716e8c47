"""Alembic migrations that create and change the store's schema."""
