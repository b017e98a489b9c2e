"""The Basic classification takes shortcuts through libphonenumber (it asks for a number's region
and type once, where the public functions each ask again); it must give exactly what the public
functions give, for every region's example numbers and for random digits."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType, carrier

from numgate.numbers.classify import _KINDS, NumberKind, classify


def public_answer(item: str) -> tuple[bool, str, str, str] | None:
    try:
        num = phonenumbers.parse("+" + item.lstrip("+"), None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(num) or ""
    kind = _KINDS.get(phonenumbers.number_type(num), NumberKind.OTHER)
    return (
        phonenumbers.is_valid_number(num),
        "" if region in ("ZZ", "001") else region,
        kind.value,
        carrier.name_for_number(num, "en") if kind is NumberKind.MOBILE else "",
    )


def samples() -> list[str]:
    out: list[str] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for t in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.TOLL_FREE):
            ex = phonenumbers.example_number_for_type(region, t)
            if ex is not None:
                out.append(f"{ex.country_code}{ex.national_number}")
    for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        ex = phonenumbers.example_number_for_non_geo_entity(cc)
        if ex is not None:
            out.append(f"{ex.country_code}{ex.national_number}")
    rnd = random.Random(20261123)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    for _ in range(3000):  # random national parts: mostly invalid, some valid, all parseable
        out.append(f"{rnd.choice(codes)}{rnd.randrange(10**5, 10**11)}")
    return out


def test_classify_matches_the_public_functions() -> None:
    items = samples()
    assert len(items) > 3500
    valid = 0
    for item in items:
        b = classify(item)
        expected = public_answer(item)
        if expected is None:
            assert b is None, item
            continue
        assert b is not None, item
        assert (b.valid, b.region, b.kind.value, b.carrier) == expected, item
        valid += b.valid
    assert valid > 500  # the comparison covered valid numbers of many kinds, not only rejects


@pytest.mark.parametrize("item", ["12", "abc", "+", "99912345678", "+1-415-555-0100"])
def test_unparseable_items(item: str) -> None:
    assert classify(item) is None
