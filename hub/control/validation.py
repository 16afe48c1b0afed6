"""Small pure checks shared by the control-plane modules (lengths, required text).

Holds helpers that raise :class:`hub.errors.InvalidInput` naming the field; messages never echo the
value (it may be a patient identifier). No I/O.
"""

from __future__ import annotations

import re

from hub.errors import InvalidInput

#: C0 control characters and DEL (one regex scan: this check runs on every audited decision).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def require_text(field: str, value: str, max_length: int, *, single_line: bool = True) -> None:
    """Raise InvalidInput unless ``value`` is a non-blank string of at most ``max_length`` characters.

    ``single_line`` also refuses control characters (newlines included).
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} is required and must not be blank", expression=field)
    if len(value) > max_length:
        raise InvalidInput(f"{field} must be at most {max_length} characters", expression=field)
    if single_line and _CONTROL.search(value):
        raise InvalidInput(f"{field} must not contain control characters", expression=field)
