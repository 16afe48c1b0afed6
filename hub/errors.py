"""One error tree for the hub.

::

    HubError                      base of everything the hub raises on purpose
    ├── PermanentError            retrying the same input gives the same failure
    │   ├── InvalidInput          bad input: answered precisely (OperationOutcome, NAK) or dead-lettered
    │   │   └── Conflict          the write conflicts with what is stored (an id already held)
    │   ├── NotAuthorized         no or wrong credential / a partner acting outside its rights
    │   └── ConfigurationError    the operator must change something (port in use, missing binary)
    └── RetryableError            transient: the broker or database is unavailable; try again later
        ├── BrokerUnavailable     the broker did not acknowledge a write in time
        └── StoreUnavailable      the control-plane database did not answer

Adapters translate third-party exceptions into this tree with ``raise X(...) from exc``;
the core only ever sees these types. Messages must never contain PHI.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class PermanentError(HubError):
    """Retrying the same input gives the same failure."""


class InvalidInput(PermanentError):
    """Input that cannot be accepted; ``expression`` is the FHIRPath (or HL7 location) of the problem."""

    def __init__(self, message: str, *, expression: str | None = None, code: str = "invalid") -> None:
        super().__init__(message)
        self.expression = expression
        self.code = code


class Conflict(InvalidInput):
    """The write conflicts with what is stored, e.g. a create whose id another resource holds (409 at HTTP)."""

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        super().__init__(message, expression=expression, code="conflict")


class NotAuthorized(PermanentError):
    """A missing or wrong credential, or a partner acting outside its rights."""


class ConfigurationError(PermanentError):
    """Something the operator must change; the message says what to do."""


class RetryableError(HubError):
    """A transient failure: the same operation may succeed later."""


class BrokerUnavailable(RetryableError):
    """The Kafka broker did not acknowledge in time."""


class StoreUnavailable(RetryableError):
    """The control-plane database did not answer."""
