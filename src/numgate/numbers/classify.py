"""Offline classification with libphonenumber. Its metadata is loaded once per process."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType, carrier, national_significant_number
from phonenumbers.phonenumberutil import _number_type_helper

from numgate.errors import InvalidParameter

MIN_DIGITS, MAX_DIGITS = 6, 17


class NumberKind(Enum):
    OTHER = "other"
    FIXED_LINE = "fixed_line"
    MOBILE = "mobile"
    TOLL_FREE = "toll_free"
    VOIP = "voip"
    UAN = "uan"
    PERSONAL = "personal"
    VOICEMAIL = "voicemail"
    PREMIUM = "premium"


_KINDS = {
    PhoneNumberType.FIXED_LINE: NumberKind.FIXED_LINE,
    PhoneNumberType.MOBILE: NumberKind.MOBILE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: NumberKind.MOBILE,
    PhoneNumberType.TOLL_FREE: NumberKind.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE: NumberKind.PREMIUM,
    PhoneNumberType.SHARED_COST: NumberKind.PREMIUM,
    PhoneNumberType.VOIP: NumberKind.VOIP,
    PhoneNumberType.PERSONAL_NUMBER: NumberKind.PERSONAL,
    PhoneNumberType.PAGER: NumberKind.OTHER,
    PhoneNumberType.UAN: NumberKind.UAN,
    PhoneNumberType.VOICEMAIL: NumberKind.VOICEMAIL,
}


#: a kind by its value (a dict lookup: calling the Enum class costs more, once per number)
_KIND_OF_VALUE = {k.value: k for k in NumberKind}


class Basic(NamedTuple):
    """A number's offline classification (a named tuple: one is made per number checked, in
    about a third of a frozen dataclass's time)."""

    valid: bool
    region: str
    country_code: int
    national_number: str
    e164: str
    kind: NumberKind
    carrier: str

    def row(self) -> tuple[bool, str, int, str, str, str, str]:
        """Its fields flat, the kind by value: what crosses a process boundary (plain values
        pickle in C) and what a stored result keeps (``CheckResult.to_json``)."""
        return (
            self.valid,
            self.region,
            self.country_code,
            self.national_number,
            self.e164,
            self.kind.value,
            self.carrier,
        )

    @classmethod
    def of_row(cls, r: Sequence[Any]) -> Basic:
        """The inverse of :meth:`row`."""
        return cls(r[0], r[1], r[2], r[3], r[4], _KIND_OF_VALUE[r[5]], r[6])


def digits_of(item: str) -> str | None:
    """The digits of one submitted item (trimmed, one leading ``+`` allowed), or None."""
    s = item.strip()
    if s.startswith("+"):
        s = s[1:]
    if not s.isdigit() or not s.isascii() or not MIN_DIGITS <= len(s) <= MAX_DIGITS:
        return None
    return s


def calling_code_of(item: str) -> int | None:
    """The country calling code an item starts with, without a full parse (cheap: used at submit)."""
    d = digits_of(item)
    if d is None:
        return None
    for n in (1, 2, 3):
        cc = int(d[:n])
        if cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return cc
    return None


def parse_region(code: str, field: str = "region") -> str:
    """An ISO 3166 alpha-2 region libphonenumber knows (numgate can price and parse it), upper-cased."""
    r = code.strip().upper()
    if r not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidParameter(
            field,
            f"{field} must be an ISO 3166 alpha-2 code of a numbering region (e.g. NG, US, GB), got {code!r}",
        )
    return r


def main_region(calling_code: int) -> str | None:
    region = phonenumbers.region_code_for_country_code(calling_code)
    return None if region in (None, "ZZ", "001") else region


def classify(item: str) -> Basic | None:
    """Classify one item; None when it cannot be parsed as a phone number (code 114)."""
    d = digits_of(item)
    if d is None:
        return None
    try:
        num = phonenumbers.parse("+" + d, None)
    except phonenumbers.NumberParseException:
        return None
    # what is_valid_number, number_type and carrier.name_for_number each work out again from
    # the start (the region, then the number's type), done once: a third of the work for the
    # same answers (tests/test_classify.py holds it to the public functions)
    region_code = phonenumbers.region_code_for_number(num)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(num.country_code, region_code)  # type: ignore[arg-type]
    ntype = (
        PhoneNumberType.UNKNOWN
        if metadata is None
        else _number_type_helper(national_significant_number(num), metadata)
    )
    kind = _KINDS.get(ntype, NumberKind.OTHER)
    region = "" if region_code in (None, "ZZ", "001") else region_code
    return Basic(
        valid=region_code is not None and ntype != PhoneNumberType.UNKNOWN,
        region=region,
        country_code=num.country_code or 0,
        national_number=str(num.national_number),
        e164=f"+{num.country_code}{num.national_number}",
        kind=kind,
        carrier=carrier.name_for_valid_number(num, "en") if kind is NumberKind.MOBILE else "",
    )


def warm_up() -> None:
    """Load the metadata once, before the first batch (so the first numbers are not slow)."""
    for sample in ("+14155550100", "+447700900123", "+8613800138000", "+2348000010000"):
        classify(sample)
