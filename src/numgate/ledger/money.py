"""Amounts are integers in ten-thousandths of a currency unit (the NXCloud price has 4 decimals)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from numgate.errors import InvalidParameter

SCALE = 10_000


def parse_amount(text: str | float | int, *, field: str = "amount", allow_negative: bool = False) -> int:
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidParameter(field, f"{field} must be a decimal number, got {text!r}") from None
    if not value.is_finite():
        raise InvalidParameter(field, f"{field} must be a finite number")
    scaled = value * SCALE
    if scaled != scaled.to_integral_value():
        raise InvalidParameter(field, f"{field} has more than 4 decimal places: {text}")
    if scaled < 0 and not allow_negative:
        raise InvalidParameter(field, f"{field} cannot be negative")
    return int(scaled)


def to_decimal(amount: int) -> Decimal:
    return (Decimal(amount) / SCALE).quantize(Decimal("0.0001"))


def to_float(amount: int) -> float:
    return round(amount / SCALE, 4)


def parse_currency(code: str) -> str:
    c = code.strip().upper()
    if len(c) != 3 or not c.isalpha():
        raise InvalidParameter("currency", f"currency must be a 3-letter ISO 4217 code, got {code!r}")
    return c
