"""Phone numbers as the onboarding service takes them: digits with country code."""

from __future__ import annotations

import phonenumbers

from numgate.errors import InvalidParameter, MissingParameter


def normalise_phone(text: str, field: str = "phone_number") -> str:
    """Digits with country code; a leading ``+``, spaces and dashes are tolerated."""
    raw = (text or "").strip()
    if not raw:
        raise MissingParameter(field)
    digits = raw.lstrip("+").replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 6 <= len(digits) <= 15:
        raise InvalidParameter(
            field, f"{field} must be the number's digits with country code, e.g. 8613800001234 (got {raw!r})"
        )
    return digits


def split_phone(phone: str, cc: str | None = None, field: str = "phone_number") -> tuple[str, str]:
    """(country code, national number). With ``cc`` the number is the national part."""
    if cc is not None:
        cc = cc.strip().lstrip("+")
        if not cc.isdigit() or phonenumbers.region_code_for_country_code(int(cc)) == "ZZ":
            raise InvalidParameter("cc", f"{cc!r} is not a country calling code (e.g. 86, 1, 44)")
        national = normalise_phone(phone, field)
        return cc, national
    digits = normalise_phone(phone, field)
    try:
        parsed = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        raise InvalidParameter(field, f"{digits} does not start with a known country calling code") from None
    code = str(parsed.country_code)
    return code, digits[len(code) :]
