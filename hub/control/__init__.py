"""Control plane: the relational store behind partners, identities, audit and delivery numbering.

It holds SQLAlchemy 2 (async) models, the Alembic migrations that create them and one small module per
job: ``db`` (engines, sessions, migrations), ``partners``, ``crosswalk``, ``audit``, ``sequences``.
It may touch only the control-plane database (SQLite by default, PostgreSQL in production); it never
imports the broker, HTTP or HL7 edges.
"""
