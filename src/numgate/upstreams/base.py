"""What an adapter is and what it answers.

An adapter speaks one vendor's wire API for one of the operator's accounts. Synchronous vendors
answer :meth:`SyncAdapter.check` with an :class:`Answer` per number (in batches of at most
``max_batch``). Vendors that answer later (a test call's status events, NXCloud's callbacks)
implement :class:`AsyncAdapter`: ``start`` places the request and returns the vendor's reference;
their webhooks reach ``POST /upstreams/<name>/events?job=<token>``, where ``parse_event``
authenticates the request the vendor's way and says which job it is about, and ``conclude`` turns
the events a job collected into its answer once the last one has come.

Every vendor error becomes, at this seam and nowhere else, an :class:`Answer` with ``failure`` set
(or :class:`Throttled` / :class:`~numgate.numbers.providers.ProviderFailed` raised for a whole
call): the routing moves the number to the next upstream of its route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from numgate.numbers.providers import Dial, Live, ProviderFailed
from numgate.numbers.results import Level


class Failure(Enum):
    #: the vendor failed (an error answer, a time-out, a malformed body): 112 after the route
    FAILED = "failed"
    #: the vendor answered and knew nothing about the number: 122 after the route
    NO_INFORMATION = "no_information"
    #: the vendor asked us to slow down (and our retries ran out)
    THROTTLED = "throttled"


class Throttled(ProviderFailed):
    """The vendor kept answering "too many requests" through our back-off."""


@dataclass(frozen=True)
class Answer:
    """One number's answer from one upstream call."""

    result: Live | Dial | None = None
    failure: Failure | None = None
    #: what the call cost the operator, ten-thousandths of ``currency``, when the vendor said
    cost: int | None = None
    currency: str | None = None
    detail: str = ""

    @classmethod
    def failed(cls, detail: str, kind: Failure = Failure.FAILED) -> Answer:
        return cls(None, kind, detail=detail)


@dataclass(frozen=True)
class Account:
    """One of the operator's accounts at a vendor (``numgate admin upstream add``)."""

    id: int
    name: str
    kind: str
    base_url: str
    key: str | None
    secret: str | None
    from_number: str | None
    #: kind-specific settings (NXCloud: ``appkey``)
    options: dict[str, str]
    #: the cost of one call when the vendor's answer does not say (ten-thousandths)
    unit_cost: int
    cost_currency: str
    enabled: bool
    health: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """An inbound webhook, authenticated: which job it concerns and whether it is the last."""

    #: the vendor's reference of the job (a call SID, a message id)
    vendor_ref: str
    #: what the event says, kept with the job (JSON-serialisable)
    data: dict[str, Any]
    final: bool


class BadEvent(Exception):
    """An inbound request that is not a genuine event of this upstream (bad signature, unknown
    job, malformed): answered 403/400, nothing recorded."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Inbound:
    """An inbound webhook as the adapter sees it."""

    url: str  # the full URL the vendor called (signatures cover it)
    headers: dict[str, str]  # lower-case names
    body: bytes
    content_type: str


class Adapter(Protocol):
    account: Account
    level: Level

    async def close(self) -> None: ...


class SyncAdapter(Adapter, Protocol):
    #: numbers per vendor call, at most
    max_batch: int

    async def check(self, numbers: list[str], max_age_s: int = 0) -> dict[str, Answer]:
        """An answer for each E.164 number (``+`` and digits); raises ``Throttled`` or
        ``ProviderFailed`` when the whole call failed. ``max_age_s``: how old an answer the
        tenant accepts (a vendor with its own cache may answer from it, for less)."""
        ...


async def each_number(numbers: list[str], one: Callable[[str], Awaitable[Answer]]) -> dict[str, Answer]:
    """For a vendor that takes one number a request: the requests at once (the adapter's HTTP
    session bounds them), a failed one an answer of its own (throttled or failed)."""
    answers = await asyncio.gather(*(one(n) for n in numbers), return_exceptions=True)
    out: dict[str, Answer] = {}
    for n, a in zip(numbers, answers, strict=True):
        if isinstance(a, ProviderFailed):
            out[n] = Answer.failed(str(a), Failure.THROTTLED if isinstance(a, Throttled) else Failure.FAILED)
        elif isinstance(a, BaseException):
            raise a
        else:
            out[n] = a
    return out


class AsyncAdapter(Adapter, Protocol):
    async def start(self, numbers: list[tuple[str, str]], events_url: str) -> dict[str, str | Answer]:
        """Place the request for each ``(e164, job token)``: per token, the vendor's reference
        (its answer comes later), or an :class:`Answer` at once (the vendor refused the number,
        or failed). ``events_url`` is ``<NUMGATE_PUBLIC_URL>/upstreams/<name>/events``; the
        adapter adds ``?job=<token>`` — or, for a vendor with one callback URL per request of
        several numbers, ``?job=<group>`` where every token is ``<group>.<n>``. A token missing
        from the answer failed."""
        ...

    def parse_event(self, inbound: Inbound, token: str | None) -> Event:
        """Authenticate and read a webhook; raises :class:`BadEvent`."""
        ...

    def conclude(self, events: list[dict[str, Any]]) -> Answer:
        """The answer once the final event has come (``events``: every event's data, in order)."""
        ...
