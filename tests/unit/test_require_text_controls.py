"""``require_text`` refuses exactly the C0 control characters and DEL in single-line text (the regex that
replaced the per-character loop refuses the same characters)."""

from __future__ import annotations

import pytest

from hub.control.validation import require_text
from hub.errors import InvalidInput


def _refused(value: str) -> bool:
    try:
        require_text("field", value, 100)
    except InvalidInput:
        return True
    return False


def test_exactly_c0_controls_and_del_are_refused_anywhere_in_the_text() -> None:
    for code in [*range(0x300), 0x2028, 0x2029, 0xFEFF, 0x10FFFF]:
        expected = code < 32 or code == 127
        assert expected == _refused(f"a{chr(code)}b"), hex(code)


def test_multi_line_text_may_hold_newlines_and_the_message_never_echoes_the_value() -> None:
    require_text("reason", "line one\nline two\ttabbed", 100, single_line=False)
    with pytest.raises(InvalidInput) as refused:
        require_text("source", "urn:mrn|SECRET\n", 100)
    assert "SECRET" not in str(refused.value)
