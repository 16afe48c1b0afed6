"""Tests of the inbound edges (hub/adapters)."""
