"""Consent: who may receive what, decided by pure functions on values (no I/O, no framework).

* :mod:`hub.consent.model` - Consent and operator Policies as immutable values; ``consent_from_fhir``.
* :mod:`hub.consent.labels` - DS4P security labels: ``effective_labels(facts)`` and the code rule table.
* :mod:`hub.consent.redaction` - minimum-necessary profiles and ``redact(resource_json, profile)``.
* :mod:`hub.consent.engine` - ``decide(facts, recipient, policies, consents) -> Decision`` and
  ``evaluate_consents`` (the consents' own answer, for the CDS Hooks consent service).
* :mod:`hub.consent.decision` - the Decision, Verdict, Obligation and Recipient values.

Loading consents, caching them per patient and auditing decisions happen around these, never inside.
"""
