"""Phone numbers: normalise to E.164 before matching or looking up.

``+34915551234``, ``0034915551234`` and ``915551234`` (from a Spanish trunk)
all become ``+34915551234``. Anything that is not a plausible number (internal
extensions, ``anonymous``, garbage) is returned cleaned but unchanged so that
rules can still match it literally.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SEPARATORS = re.compile(r"[\s().\-/]")
MAX_LEN = 64


def clean(raw: str | None) -> str:
    """Strip control characters and separators; cap the length."""
    if not raw:
        return ""
    return _SEPARATORS.sub("", _CONTROL.sub("", raw))[:MAX_LEN]


@lru_cache(maxsize=4096)  # pure, and on every call's path (routing, pops, the store)
def normalize(raw: str | None, region: str = "ES") -> str:
    """Return the E.164 form of ``raw`` dialled in ``region``, or the cleaned input."""
    text = clean(raw)
    if not text:
        return ""
    candidate = "+" + text[2:] if text.startswith("00") else text
    if not re.fullmatch(r"\+?\d{3,20}", candidate):
        return text
    try:
        parsed = phonenumbers.parse(candidate, None if candidate.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_possible_number(parsed):
        return text
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
