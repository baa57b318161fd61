"""E.164 normalisation: the fast path agrees with phonenumbers' full parser everywhere."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from wanotify.core.phones import _fast_e164, normalize_e164


def _full(raw: str) -> str | None:
    try:
        n = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164) if phonenumbers.is_valid_number(n) else None


def _samples() -> list[str]:
    rng = random.Random(7)
    out: list[str] = []
    for region in phonenumbers.SUPPORTED_REGIONS:
        for t in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            ex = phonenumbers.example_number_for_type(region, t)
            if ex is None:
                continue
            e164 = phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.E164)
            out.append(e164)
            d = e164[1:]
            for _ in range(3):  # near misses: one digit changed, one added, one dropped
                i = rng.randrange(1, len(d))
                out.append("+" + d[:i] + str(rng.randrange(10)) + d[i + 1 :])
                out.append("+" + d + str(rng.randrange(10)))
                out.append("+" + d[:-1])
    return out


def test_fast_path_never_disagrees_with_the_full_parser() -> None:
    samples = _samples()
    assert len(samples) > 2000
    fast_hits = 0
    for raw in samples:
        fast = _fast_e164(raw)
        if fast is not None:
            fast_hits += 1
            assert fast == _full(raw), raw
        assert (normalize_e164(raw) if _full(raw) else None) == _full(raw)
    assert fast_hits > len(samples) // 4  # the fast path does take the common case


@pytest.mark.parametrize("raw", ["+39 06 6982 1234", "+390669821234", "+44 7911 123456", "+4407911123456",
                                 "+1 (650) 555-1234", "+919811176543"])
def test_formatted_and_trunk_prefixed_numbers_use_the_full_parser(raw: str) -> None:
    assert normalize_e164(raw) == _full(raw)


@pytest.mark.parametrize("raw", ["+0123456789", "+999123456789", "+91123", "+9198111765431234567"])
def test_not_numbers_are_refused(raw: str) -> None:
    assert _fast_e164(raw) is None
    with pytest.raises(ValueError):
        normalize_e164(raw)
