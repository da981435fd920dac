"""Phone numbers: normalise to E.164 before matching or looking up.

``+34915551234``, ``0034915551234`` and ``915551234`` (from a Spanish trunk)
all become ``+34915551234``. Anything that is not a plausible number (internal
extensions, ``anonymous``, garbage) is returned cleaned but unchanged so that
rules can still match it literally.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

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
    if not _PLAUSIBLE.fullmatch(candidate):
        return text
    if candidate is text and text[0] == "+" and _given_back(text[1:]):
        return text
    return _parsed(text, candidate, region)


_PLAUSIBLE = re.compile(r"\+?\d{3,20}")


def _given_back(digits: str) -> bool:
    """True when phonenumbers would return ``+digits`` as it is: its country code (found as
    phonenumbers finds it) has no national prefix to strip after it, so the E.164 form is
    the input, or the number is not possible and the input comes back anyway. About half
    the country codes (Spain's, Italy's...): most trunks' caller IDs skip the parser's
    ~20 us (~90 us with cold caches, in the daemon). Checked against phonenumbers for every
    country code by tests/unit/test_numbers.py."""
    if not digits or digits[0] == "0":
        return False
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return _no_national_prefix(code)
    return False


@cache
def _no_national_prefix(code: int) -> bool:
    region = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code][0]
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    return metadata is not None and not metadata.national_prefix_for_parsing


def _parsed(text: str, candidate: str, region: str) -> str:
    """``normalize`` by phonenumbers itself."""
    try:
        parsed = phonenumbers.parse(candidate, None if candidate.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_possible_number(parsed):
        return text
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
