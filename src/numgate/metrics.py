"""numgate's metrics: Prometheus series counted in every numgate process, read at ``GET /metrics``.

Counters and histograms are ``prometheus_client``'s. ``numgate serve`` and ``numgate worker``
call :func:`share` before they count anything: each process then keeps its series in files
under ``NUMGATE_METRICS_DIR`` (``<data dir>/metrics``), and ``/metrics`` sums every live
process's files (prometheus-client's multiprocess mode) — so a separate ``numgate worker``
sharing the data directory is counted too. The helper processes (classifier, sender) count
nothing themselves: what they did is counted by the worker that gets their answers.

What the database knows (queue depths, ledger totals) is read at scrape time, at most once every
:data:`DB_EVERY_S` seconds (see ``web/metrics.py``); the process counters stay cheap enough for
the hot paths: an increment is a float add in memory, and each process writes the values that
changed to its file every :data:`WRITE_EVERY_S` seconds (and when it exits, and before it
answers a scrape itself) instead of on every increment (:class:`WriteBehind`).
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

T = TypeVar("T")

#: seconds the database-derived series are reused between scrapes
DB_EVERY_S = 5.0
#: seconds between a process's writes of its changed values to its file: how far behind another
#: process's series may be at a scrape (a process killed with SIGKILL loses at most this much)
WRITE_EVERY_S = 1.0
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CALLBACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_shared_dir: Path | None = None
#: this process's store of its values, once shared
_store: WriteBehind | None = None


class _Children:
    """A labelled series' children kept by their label values: ``prometheus_client``'s
    ``labels()`` checks the values and builds its key on every call (a few µs per request, as
    much as the count itself); the children are the library's, the same it would return."""

    __slots__ = ("_made", "_series")

    def __init__(self, series: Any) -> None:
        self._series = series
        self._made: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._made.get(values)
        if child is None:
            child = self._made[values] = self._series.labels(*values)
        return child


class Metrics:
    """Every series numgate counts in-process (the database-derived ones are in
    ``web/metrics.py``). The hot paths count through the methods, which keep the labelled
    children."""

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
            "Time a receiver took to answer a callback POST (a batched POST, an array of callbacks, "
            "counts once)",
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

        self._requests = _Children(self.requests)
        self._request_seconds = _Children(self.request_seconds)
        self._checked = _Children(self.numbers_checked)
        self._charged = _Children(self.numbers_charged)
        self._attempts = _Children(self.callback_attempts)
        self._upstream_calls = _Children(self.upstream_calls)
        self._upstream_seconds = _Children(self.upstream_seconds)

    def answered(self, door: str, endpoint: str, code: str, seconds: float | None) -> None:
        """A vendor-door request answered with ``code``, ``seconds`` after its body was read
        (None: refused before its body was read, not timed)."""
        self._requests(door, endpoint, code).inc()
        if seconds is not None:
            self._request_seconds(door, endpoint).observe(seconds)

    def checked(self, level: str, outcome: str, charged: bool, n: int = 1) -> None:
        """``n`` numbers of ``level`` ended with ``outcome``."""
        self._checked(level, outcome).inc(n)
        if charged:
            self._charged(level).inc(n)

    def callbacks_attempted(self, by_outcome: dict[str, int]) -> None:
        """Callback attempts ended, counted by outcome (each callback of a batched POST once:
        one increment per outcome instead of one per callback)."""
        for outcome, n in by_outcome.items():
            self._attempts(outcome).inc(n)

    def callback_answered(self, seconds: float) -> None:
        """A receiver answered a callback POST (one or a batched array) after ``seconds``."""
        self.callback_seconds.observe(seconds)

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
            self._upstream_seconds(upstream, provider, operation).observe(time.perf_counter() - start)
            self._upstream_calls(upstream, provider, operation, outcome).inc()


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
    global _shared_dir, _store
    if _metrics is not None or _shared_dir is not None:
        return
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for f in directory.glob("*.db"):
        pid = f.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                f.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    _store = WriteBehind(directory)
    values.ValueClass = _store.value_class
    _shared_dir = directory
    atexit.register(_store.write)
    threading.Thread(
        target=_store.write_every, args=(WRITE_EVERY_S,), name="metrics-writer", daemon=True
    ).start()


class WriteBehind:
    """Values for ``prometheus_client`` counted in memory (:attr:`value_class`), and
    :meth:`write`, which puts those changed since the last write into this process's files under
    ``directory`` — the files and keys of the library's multiprocess mode, so its collector reads
    them as its own. The library's own class (``MultiProcessValue``) writes its file on every
    increment, under a lock, after asking the kernel for the pid."""

    def __init__(self, directory: Path) -> None:
        self._pid = os.getpid()
        self._files: dict[str, MmapedDict] = {}
        self._changed: set[Any] = set()
        self._lock = threading.Lock()
        self.value_class = self._value_class(directory)

    def _value_class(self, directory: Path) -> type:
        files, changed, lock, pid = self._files, self._changed, self._lock, self._pid

        class WriteBehindValue:
            _multiprocess = True

            def __init__(
                self,
                typ: str,
                metric_name: str,
                name: str,
                labelnames: list[str],
                labelvalues: list[str],
                help_text: str,
                multiprocess_mode: str = "",
                **kwargs: Any,
            ) -> None:
                prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
                with lock:
                    if prefix not in files:
                        files[prefix] = MmapedDict(str(directory / f"{prefix}_{pid}.db"))  # type: ignore[no-untyped-call]
                    self._file = files[prefix]
                    self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
                    self._value, self._timestamp = self._file.read_value(self._key)  # type: ignore[no-untyped-call]

            def inc(self, amount: float) -> None:
                with lock:
                    self._value += amount
                    changed.add(self)

            def set(self, value: float, timestamp: float | None = None) -> None:
                with lock:
                    self._value, self._timestamp = value, timestamp or 0.0
                    changed.add(self)

            def set_exemplar(self, exemplar: Any) -> None:  # the multiprocess mode keeps none
                return

            def get(self) -> float:
                return float(self._value)

            def get_exemplar(self) -> None:
                return None

        return WriteBehindValue

    def write(self) -> None:
        """The values changed since the last write, into the files (not in a forked child: the
        files are its parent's)."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            for v in self._changed:
                v._file.write_value(v._key, v._value, v._timestamp)
            self._changed.clear()

    def write_every(self, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            self.write()

    def close(self) -> None:
        self.write()
        with self._lock:
            for f in self._files.values():
                f.close()  # type: ignore[no-untyped-call]
            self._files.clear()


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
    if _store is not None:  # this process's own series as they are now
        _store.write()
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
