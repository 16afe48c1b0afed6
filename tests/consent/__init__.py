"""Tests of the pure consent engine: model, labels, redaction, decide."""
