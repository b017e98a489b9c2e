"""numgate's metrics: Prometheus series counted in every numgate process, read at ``GET /metrics``.

Counters and histograms are ``prometheus_client``'s. ``numgate serve`` and ``numgate worker``
call :func:`share` before they count anything: each process then keeps its series in files
under ``NUMGATE_METRICS_DIR`` (``<data dir>/metrics``), and ``/metrics`` sums every live
process's files (prometheus-client's multiprocess mode) — so a separate ``numgate worker``
sharing the data directory is counted too. The helper processes (classifier, sender) count
nothing themselves: what they did is counted by the worker that gets their answers.

What the database knows (queue depths, ledger totals) is read at scrape time, at most once every
:data:`DB_EVERY_S` seconds (see ``web/metrics.py``); the process counters stay cheap enough for
the hot paths (a labelled increment is a dict lookup and a float add, or an mmap write).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

T = TypeVar("T")

#: seconds the database-derived series are reused between scrapes
DB_EVERY_S = 5.0
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CALLBACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_shared_dir: Path | None = None


class Metrics:
    """Every series numgate counts in-process (the database-derived ones are in
    ``web/metrics.py``)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "numgate_requests",
            "Vendor-door requests answered, by door, endpoint (NXCloud path, CAMS action) and the "
            "vendor's code in the answer",
            ["door", "endpoint", "code"],
        )
        self.request_seconds = Histogram(
            "numgate_request_duration_seconds",
            "Time to answer a vendor-door request, from its body read to its answer",
            ["door", "endpoint"],
            buckets=REQUEST_BUCKETS,
        )
        self.numbers_submitted = Counter(
            "numgate_numbers_submitted", "Numbers accepted for checking, by check level", ["level"]
        )
        self.numbers_checked = Counter(
            "numgate_numbers_checked",
            "Numbers whose check ended, by level and outcome (ok, invalid_format, non_mobile, "
            "upstream_failed, no_information, internal)",
            ["level", "outcome"],
        )
        self.numbers_charged = Counter(
            "numgate_numbers_charged", "Numbers charged for (their check succeeded), by level", ["level"]
        )
        self.callback_attempts = Counter(
            "numgate_callback_attempts",
            "Callback attempts (each callback of a batched POST counts once), by outcome: "
            "delivered (2xx), error (another answer), overloaded (time-out, refused or reset "
            "connection, 429, 503), refused (the outbound guard or the URL)",
            ["outcome"],
        )
        self.callbacks_failed = Counter(
            "numgate_callbacks_failed", "Callbacks given up on (retry window over, or refused)"
        )
        self.callback_seconds = Histogram(
            "numgate_callback_duration_seconds",
            "Time a receiver took to answer a callback (each callback of a batched POST counts once)",
            buckets=CALLBACK_BUCKETS,
        )
        self.upstream_calls = Counter(
            "numgate_upstream_calls",
            "Calls to an upstream (hlr, call, waba) by provider (the simulator or a vendor), operation "
            "and outcome (ok, or the error's name)",
            ["upstream", "provider", "operation", "outcome"],
        )
        self.upstream_seconds = Histogram(
            "numgate_upstream_duration_seconds",
            "Time an upstream call took",
            ["upstream", "provider", "operation"],
            buckets=UPSTREAM_BUCKETS,
        )

    def checked(self, level: str, outcome: str, charged: bool, n: int = 1) -> None:
        """``n`` numbers of ``level`` ended with ``outcome``."""
        self.numbers_checked.labels(level, outcome).inc(n)
        if charged:
            self.numbers_charged.labels(level).inc(n)

    @contextlib.contextmanager
    def upstream_call(self, upstream: str, provider: str, operation: str) -> Iterator[None]:
        """Times the call; its outcome is ``ok`` or the name of the exception it raised."""
        start = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.upstream_seconds.labels(upstream, provider, operation).observe(time.perf_counter() - start)
            self.upstream_calls.labels(upstream, provider, operation, outcome).inc()


class Metered:
    """An upstream client whose coroutine methods are timed and counted
    (``numgate_upstream_calls_total{upstream, provider, operation, outcome}``)."""

    def __init__(self, inner: Any, upstream: str, provider: str) -> None:
        self._inner = inner
        self._upstream = upstream
        self._provider = provider

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name == "close" or not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            with metrics().upstream_call(self._upstream, self._provider, name):
                return await attr(*args, **kwargs)

        return call


def metered(inner: T, upstream: str, provider: str | None = None) -> T:
    """``inner`` with its calls counted; ``provider`` defaults to its ``name`` or class name."""
    if isinstance(inner, Metered):
        return inner  # type: ignore[return-value]
    name = provider or getattr(inner, "name", None) or type(inner).__name__.lower()
    return Metered(inner, upstream, name)  # type: ignore[return-value]


_metrics: Metrics | None = None


def share(directory: Path) -> None:
    """Count in files under ``directory``, shared with numgate's other processes. Call it before
    anything is counted (the first :func:`metrics`); a later call changes nothing. Files of
    processes that are gone are removed first (their counts end with them: Prometheus reads that
    as a counter reset)."""
    global _shared_dir
    if _metrics is not None or _shared_dir is not None:
        return
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for f in directory.glob("*.db"):
        pid = f.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                f.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _shared_dir = directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process: leave its file
        return True
    return True


def metrics() -> Metrics:
    """This process's metrics (created on first use)."""
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics


def registry() -> Any:
    """What ``/metrics`` exposes of the processes' counters: every numgate process's files when
    they are shared, else this process's own series."""
    if _shared_dir is None:
        return REGISTRY
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=str(_shared_dir))  # type: ignore[no-untyped-call]
    return reg


class DatabaseGauges:
    """Series read from the database at scrape time (reused for :data:`DB_EVERY_S` seconds):
    queue depths and ledger totals, the same whichever process did the work."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._at = -DB_EVERY_S
        self._families: list[Any] = []

    async def families(self) -> list[Any]:
        if time.monotonic() - self._at >= DB_EVERY_S:
            self._families = await self._read()
            self._at = time.monotonic()
        return self._families

    async def _read(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily
        from sqlalchemy import func, select

        from numgate.db.tables import balances, checks, count_in_states, deliveries, ledger_entries
        from numgate.delivery.outbox import FAILED, IN_FLIGHT, PENDING
        from numgate.ledger.money import SCALE
        from numgate.numbers.service import STATUS_LEASED, STATUS_PENDING

        le, b = ledger_entries.c, balances.c
        async with self._db.read() as tx:
            check_rows = await tx.all(count_in_states(checks, [STATUS_PENDING, STATUS_LEASED]))
            callback_rows = await tx.all(count_in_states(deliveries, [PENDING, IN_FLIGHT, FAILED]))
            ledger_rows = await tx.all(
                select(le.kind, le.currency, func.sum(le.amount)).group_by(le.kind, le.currency)
            )
            available_rows = await tx.all(select(b.currency, func.sum(b.available)).group_by(b.currency))
        check_names = {STATUS_PENDING: "pending", STATUS_LEASED: "in_flight"}
        checks_g = GaugeMetricFamily(
            "numgate_checks",
            "Numbers waiting for their check (pending) or being checked (in_flight)",
            labels=["state"],
        )
        counts = {s: 0 for s in check_names}
        counts.update({int(s): int(n) for s, n in check_rows})
        for s, n in counts.items():
            checks_g.add_metric([check_names[s]], n)
        callback_names = {PENDING: "pending", IN_FLIGHT: "in_flight", FAILED: "failed"}
        callbacks_g = GaugeMetricFamily(
            "numgate_callbacks",
            "Callbacks waiting to be sent or retried (pending), being sent (in_flight), given up on (failed)",
            labels=["state"],
        )
        counts = {s: 0 for s in callback_names}
        counts.update({int(s): int(n) for s, n in callback_rows})
        for s, n in counts.items():
            callbacks_g.add_metric([callback_names[s]], n)
        ledger_g = GaugeMetricFamily(
            "numgate_ledger_amount",
            "Sum of the ledger's entries of each kind (topup, reserve, charge, release), in currency units",
            labels=["kind", "currency"],
        )
        for kind, currency, total in ledger_rows:
            ledger_g.add_metric([kind, currency], int(total or 0) / SCALE)
        available_g = GaugeMetricFamily(
            "numgate_ledger_available",
            "Spendable balance of all accounts together, in currency units",
            labels=["currency"],
        )
        for currency, total in available_rows:
            available_g.add_metric([currency], int(total or 0) / SCALE)
        return [checks_g, callbacks_g, ledger_g, available_g]
