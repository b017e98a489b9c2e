"""What a list cleaner's cell becomes before it is checked: the number's digits with country code,
or the reason it cannot be one.

The API takes numbers as NXCloud does — digits with country code, one leading ``+`` — and an item
that is not one fails alone (code 114). A file from a spreadsheet or a CRM needs more
(``numgate check FILE``):

- common punctuation is dropped: spaces, ``-``, ``.``, ``/``, parentheses (``(415) 555-0123``);
- ``00`` and ``+`` start an international number (``0044 20 7946 0000``);
- with a region (``--region GB``), a number without either is read in that region's national
  format (``020 7946 0000``); without one it must carry its country code;
- a cell a spreadsheet turned into scientific notation (``2.34803E+12``) has lost digits: it is
  refused with that reason, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

_PUNCTUATION = re.compile(r"[\s\-./()\u00a0\u2010-\u2015\u2212]")
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$")


@dataclass(frozen=True)
class Item:
    """``digits`` (country code first, no ``+``) when the cell reads as a number, else ``reason``."""

    digits: str | None
    reason: str = ""


def read_cell(cell: str, region: str | None = None) -> Item:
    text = cell.strip()
    if not text:
        return Item(None, "empty cell")
    if _SCIENTIFIC.match(text.replace(" ", "")):
        return Item(
            None,
            f"{text} is in scientific notation: the spreadsheet lost digits; export the column as text",
        )
    if text.endswith(".0") and text[:-2].isdigit():  # a number column exported as a float
        text = text[:-2]
    compact = _PUNCTUATION.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if compact.startswith("+"):
        rest = compact[1:]
        if rest.isascii() and rest.isdigit():
            return Item(rest)
        return Item(None, f"{text} has characters other than digits and punctuation")
    if not (compact.isascii() and compact.isdigit()):
        return Item(None, f"{text} has characters other than digits and punctuation")
    if region is None:
        return Item(compact)
    try:
        parsed = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException as exc:
        return Item(None, f"{text} is not a {region} number: {exc}")
    return Item(f"{parsed.country_code}{parsed.national_number}")
