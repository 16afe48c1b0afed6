"""Delivery: what a partner is shown of a permitted event, on every path (topic, REST read, later webhooks)."""
