"""Alembic migrations of the control-plane schema (``env.py``, ``script.py.mako``, ``versions/``).

Run them with :func:`hub.control.db.upgrade`; nothing here is imported by the hub at runtime.
"""
