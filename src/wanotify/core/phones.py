"""Phone numbers: E.164 validation with ``phonenumbers``, and masking for logs."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

_CC_REGIONS = phonenumbers.COUNTRY_CODE_TO_REGION_CODE


def _fast_e164(raw: str) -> str | None:
    """The common case, ``+`` and digits already in E.164, checked without the general
    parser (a third of the cost). None means "ask the full parser" (which decides)."""
    digits = raw[1:]
    if not (raw.startswith("+") and digits.isdigit() and digits.isascii() and 8 <= len(digits) <= 15):
        return None
    for n in (1, 2, 3):  # country codes are prefix-free: the first known prefix is it
        cc = int(digits[:n])
        if cc in _CC_REGIONS:
            national = digits[n:]
            if not national or national[0] == "0":  # trunk prefixes, Italian zeros: full parser
                return None
            num = phonenumbers.PhoneNumber(country_code=cc, national_number=int(national))
            return raw if phonenumbers.is_valid_number(num) else None
    return None


@lru_cache(maxsize=65536)  # repeat recipients (OTP users, reminders) skip the parse
def normalize_e164(value: str, region: str | None = None) -> str:
    """Return the E.164 form of ``value`` or raise ValueError saying why it is not a number."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a phone number in E.164 form, e.g. +919876543210")
    raw = value.strip()
    fast = _fast_e164(raw)
    if fast is not None:
        return fast
    if not raw.startswith("+") and region is None:
        raise ValueError(f"{mask_phone(raw)} must start with + and the country code (E.164)")
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{mask_phone(raw)} is not a valid phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def digits(e164: str) -> str:
    """The WhatsApp id form of a number: digits only, no +."""
    return e164.lstrip("+")


def mask_phone(number: str | None) -> str:
    """``+919876543210`` → ``+91******10``: enough to correlate, not enough to identify."""
    if not number:
        return ""
    s = str(number)
    plus = "+" if s.startswith("+") else ""
    d = s.lstrip("+")
    if len(d) <= 4:
        return plus + "*" * len(d)
    return f"{plus}{d[:2]}{'*' * (len(d) - 4)}{d[-2:]}"


def mask_email(address: str | None) -> str:
    if not address or "@" not in address:
        return "***" if address else ""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def region_of(e164: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return None
