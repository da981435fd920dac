"""Caller-ID normalisation: E.164 out, whatever the trunk sends; the shortcut for
``+number`` caller IDs gives exactly what phonenumbers gives, for every country code."""

from __future__ import annotations

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from ctiserver.core import numbers
from ctiserver.core.numbers import _parsed, clean, normalize


def test_the_usual_forms_of_a_spanish_number_become_one() -> None:
    for raw in ("+34915551234", "0034915551234", "915551234", "91 555 12 34", "(91) 555-1234"):
        assert normalize(raw, "ES") == "+34915551234", raw
    assert normalize("+44 020 7946 0000", "ES") == "+442079460000"  # UK: the 0 goes
    assert normalize("+390612345678", "ES") == "+390612345678"  # Italy: the 0 stays
    assert normalize("anonymous", "ES") == "anonymous"
    assert normalize("1001\x00\x1b", "ES") == "1001"
    assert normalize("+99912345", "ES") == "+99912345"  # no such country code: as it came


@settings(max_examples=3000, deadline=None)
@given(code=st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)),
       zeros=st.text("0", max_size=3), rest=st.text("0123456789", max_size=16))
def test_the_plus_number_shortcut_agrees_with_phonenumbers(code: int, zeros: str,
                                                           rest: str) -> None:
    text = f"+{code}{zeros}{rest}"
    numbers.normalize.cache_clear()
    assert normalize(text, "ES") == _parsed(clean(text), clean(text), "ES")
