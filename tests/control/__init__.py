"""Tests of the control plane (hub/control) on SQLite and PostgreSQL."""
