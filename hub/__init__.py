"""CareHub: an event-driven health-information-exchange integration hub."""

__version__ = "0.1.0"
