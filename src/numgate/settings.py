"""Every setting numgate reads, in one place.

Each setting comes from a ``NUMGATE_*`` environment variable and has a safe default, so the
default run needs nothing but Python: sandbox upstreams, an SQLite file under ``./var``. Every
value is checked when it is read: a mistake is a :class:`ConfigurationError` that names the
variable and says what it takes (the CLI prints it as one line and exits with code 2).
"""

from __future__ import annotations

import ipaddress
import os
import resource
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from numgate.errors import ConfigurationError

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
WABA_UPSTREAMS = ("simulator", "meta")
#: descriptors kept free for the database pool, helper pipes, logs and files
DESCRIPTOR_RESERVE = 256


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, value: str) -> int:
        try:
            n = int(value.strip())
        except ValueError:
            raise ConfigurationError(f"{name} must be an integer, got {value!r}") from None
        _bounded(name, n, lo, hi)
        return n

    return parse


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[str, str], float]:
    def parse(name: str, value: str) -> float:
        try:
            x = float(value.strip())
        except ValueError:
            raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
        if x != x or x in (float("inf"), float("-inf")):
            raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
        _bounded(name, x, lo, hi)
        return x

    return parse


def _bounded(name: str, x: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and x < lo:
        raise ConfigurationError(f"{name} must be at least {lo:g}, got {x:g}")
    if hi is not None and x > hi:
        raise ConfigurationError(f"{name} must be at most {hi:g}, got {x:g}")


def _choice(*options: str) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        v = value.strip().lower()
        if v not in options:
            raise ConfigurationError(f"{name} must be one of {', '.join(options)}; got {value!r}")
        return v

    return parse


def _text(name: str, value: str) -> str:
    return value.strip()


def _path(name: str, value: str) -> Path:
    return Path(value.strip())


def _url(name: str, value: str) -> str:
    return value.strip().rstrip("/")


def parse_allowlist(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse ``NUMGATE_CALLBACK_ALLOW``: comma-separated CIDRs or addresses, or ``loopback``."""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if item == "loopback":
            networks += [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigurationError(
                f"NUMGATE_CALLBACK_ALLOW: {item!r} is not an address, a CIDR or 'loopback'"
            ) from None
    return tuple(networks)


def _allowlist(name: str, value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return parse_allowlist(value)


def _helpers(configured: int | None) -> int:
    """Helper processes: as configured, else one when there is a second CPU to run it."""
    if configured is not None:
        return max(configured, 0)
    return 1 if (os.cpu_count() or 1) >= 2 else 0


def descriptor_limit() -> int:
    """The process's descriptor limit, raised to the hard limit first (what the OS allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - not allowed here: keep the soft limit
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass(frozen=True)
class Settings:
    """numgate's configuration. Build it with :meth:`from_env`; tests use :func:`dataclasses.replace`."""

    data_dir: Path = Path("var")
    database_url: str = ""
    secret_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    sandbox: bool = True
    #: outbound callback targets allowed despite being loopback/private/link-local
    callback_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    callback_retry_interval_s: float = 60.0
    callback_retry_window_s: float = 3600.0
    callback_timeout_s: float = 10.0
    callback_concurrency: int = 64
    #: longest callback URL accepted (drUrl, an app's callback URL)
    callback_url_max: int = 2048
    #: bytes of a receiver's answer read (it is only logged); the rest is not read
    callback_response_max: int = 64 * 1024
    #: sender processes that make the callback POSTs; None: one when the machine has two or
    #: more CPUs, else 0 (the delivery worker's own event loop)
    callback_processes: int | None = None
    #: run check and delivery workers inside ``numgate serve``
    inprocess_workers: bool = True
    worker_chunk: int = 250
    #: chunks a check worker has under way at once (one classified while another is claimed or
    #: finished)
    worker_chunks_in_flight: int = 2
    worker_lease_s: float = 60.0
    worker_poll_s: float = 0.2
    #: processes that run the Basic (libphonenumber) checks of a check worker; None: one when
    #: the machine has two or more CPUs, else 0 (a thread of the worker's own process)
    check_processes: int | None = None
    redis_url: str | None = None
    #: every key numgate writes in Redis starts with this
    redis_prefix: str = "numgate:"
    #: per account and operation, calls per second (NXCloud 288 / -1, CAMS System.LimitControl)
    rate_limit_per_second: int = 10
    log_level: str = "info"
    access_log: bool = True
    #: None: the simulator in sandbox mode; outside it, an explicit choice is required
    waba_upstream: str | None = None
    meta_base_url: str = "https://graph.facebook.com/v21.0"
    meta_token: str | None = None
    meta_waba_id: str | None = None
    #: first wait before retrying a rate-limited Graph call (doubles each time, 4 tries)
    meta_backoff_s: float = 1.0
    #: largest request body accepted (413 past it, the rest unread)
    max_body: int = 1024 * 1024
    #: a connection refused for its body's size is dropped this many seconds after the answer
    linger_s: float = 2.0
    #: a connection must send its request headers within this many seconds
    header_timeout_s: float = 10.0
    #: and its body within this many seconds of its headers
    body_timeout_s: float = 30.0
    #: open connections at most; None: the descriptor limit less a reserve
    max_connections: int | None = None
    #: connect and statement timeout of the database, and of Redis
    db_timeout_s: float = 5.0
    #: an SQLite WAL larger than this is truncated by the next checkpoint
    sqlite_wal_max: int = 64 * 1024 * 1024
    #: on SIGTERM: seconds for requests and workers to finish before what is left is cut off
    drain_s: float = 10.0
    #: where vendors reach numgate (their webhooks: ``<public url>/upstreams/<name>/events``)
    public_url: str | None = None
    #: seconds an upstream call may take (each HTTP request to a vendor)
    upstream_timeout_s: float = 10.0
    #: seconds a number waits for a vendor's webhook (a test call's last event) before the next
    #: upstream of its route is tried
    upstream_wait_s: float = 180.0
    #: ``GET /metrics`` asks for ``Authorization: Bearer <token>``; without one it is served only
    #: when numgate listens on a loopback address
    metrics_token: str | None = None
    #: where numgate's processes keep their counters for ``/metrics``; None: <data dir>/metrics
    metrics_dir: Path | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'numgate.db').resolve()}"

    @property
    def resolved_metrics_dir(self) -> Path:
        return self.metrics_dir if self.metrics_dir is not None else self.data_dir / "metrics"

    @property
    def resolved_check_processes(self) -> int:
        return _helpers(self.check_processes)

    @property
    def resolved_callback_processes(self) -> int:
        return _helpers(self.callback_processes)

    @property
    def resolved_max_connections(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        return max(descriptor_limit() - DESCRIPTOR_RESERVE, 64)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def resolved_waba_upstream(self) -> str:
        if self.waba_upstream is not None:
            return self.waba_upstream
        if self.sandbox:
            return "simulator"
        raise ConfigurationError(
            "NUMGATE_SANDBOX is false but NUMGATE_WABA_UPSTREAM is not set: outside sandbox mode "
            "numgate answers WhatsApp calls from no simulator unless told to. Set "
            "NUMGATE_WABA_UPSTREAM=meta (with NUMGATE_META_TOKEN and NUMGATE_META_WABA_ID), or "
            "NUMGATE_WABA_UPSTREAM=simulator to keep the simulator on purpose"
        )

    def check(self) -> Settings:
        """Settings that only make sense together; raises ConfigurationError."""
        self.resolved_waba_upstream  # noqa: B018 - raises when the choice is missing
        if self.waba_upstream == "meta" and not (self.meta_token and self.meta_waba_id):
            raise ConfigurationError(
                "NUMGATE_WABA_UPSTREAM=meta needs NUMGATE_META_TOKEN (a system-user token) and "
                "NUMGATE_META_WABA_ID (the WhatsApp Business Account id)"
            )
        if self.max_connections is not None and self.max_connections > descriptor_limit():
            raise ConfigurationError(
                f"NUMGATE_MAX_CONNECTIONS is {self.max_connections} but this process may open only "
                f"{descriptor_limit()} descriptors: lower it or raise `ulimit -n`"
            )
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for name, (attr, parse, _) in ENV.items():
            value = e.get(name)
            if value is None or (value.strip() == "" and parse is not _bool):
                continue
            kw[attr] = parse(name, value)
        return cls(**kw).check()


#: every variable: the field it sets, how it is read, and what it means (README's table)
ENV: dict[str, tuple[str, Callable[[str, str], Any], str]] = {
    "NUMGATE_DATA_DIR": ("data_dir", _path, "where the SQLite file and the generated master key live"),
    "NUMGATE_DATABASE_URL": ("database_url", _text, "`sqlite:///path.db` or `postgresql://user@host/db`"),
    "NUMGATE_SECRET_KEY": ("secret_key", _text, "Fernet master key(s) for secrets at rest"),
    "NUMGATE_HOST": ("host", _text, "bind address"),
    "NUMGATE_PORT": ("port", _int(1, 65535), "port"),
    "NUMGATE_SANDBOX": ("sandbox", _bool, "sandbox upstreams (simulators)"),
    "NUMGATE_CALLBACK_ALLOW": ("callback_allow", _allowlist, "addresses callbacks may reach anyway"),
    "NUMGATE_CALLBACK_RETRY_INTERVAL": (
        "callback_retry_interval_s",
        _float(0.01),
        "seconds between attempts",
    ),
    "NUMGATE_CALLBACK_RETRY_WINDOW": ("callback_retry_window_s", _float(0), "seconds of retries"),
    "NUMGATE_CALLBACK_TIMEOUT": ("callback_timeout_s", _float(0.1, 600), "seconds per attempt"),
    "NUMGATE_CALLBACK_CONCURRENCY": ("callback_concurrency", _int(1, 10_000), "POSTs at once"),
    "NUMGATE_CALLBACK_URL_MAX": ("callback_url_max", _int(64, 65_536), "longest callback URL"),
    "NUMGATE_CALLBACK_RESPONSE_MAX": ("callback_response_max", _int(0), "bytes of an answer read"),
    "NUMGATE_CALLBACK_PROCESSES": ("callback_processes", _int(0, 64), "sender processes"),
    "NUMGATE_INPROCESS_WORKERS": ("inprocess_workers", _bool, "serve also runs the workers"),
    "NUMGATE_WORKER_CHUNK": ("worker_chunk", _int(1, 100_000), "numbers claimed per cycle"),
    "NUMGATE_WORKER_CHUNKS_IN_FLIGHT": (
        "worker_chunks_in_flight",
        _int(1, 16),
        "chunks a check worker has under way",
    ),
    "NUMGATE_WORKER_LEASE": ("worker_lease_s", _float(1), "lease seconds"),
    "NUMGATE_CHECK_PROCESSES": ("check_processes", _int(0, 64), "classifier processes"),
    "NUMGATE_REDIS_URL": ("redis_url", _text, "Redis for replay memory and rate limits"),
    "NUMGATE_REDIS_PREFIX": ("redis_prefix", _text, "prefix of numgate's Redis keys"),
    "NUMGATE_RATE_LIMIT": ("rate_limit_per_second", _int(0), "calls per second per account and operation"),
    "NUMGATE_LOG_LEVEL": ("log_level", _choice(*LOG_LEVELS), "log level"),
    "NUMGATE_ACCESS_LOG": ("access_log", _bool, "one log line per request"),
    "NUMGATE_WABA_UPSTREAM": ("waba_upstream", _choice(*WABA_UPSTREAMS), "WhatsApp upstream"),
    "NUMGATE_META_TOKEN": ("meta_token", _text, "Meta system-user token"),
    "NUMGATE_META_WABA_ID": ("meta_waba_id", _text, "WhatsApp Business Account id"),
    "NUMGATE_META_BASE_URL": ("meta_base_url", _url, "Graph API base"),
    "NUMGATE_META_BACKOFF": ("meta_backoff_s", _float(0), "first wait on Graph rate limits"),
    "NUMGATE_MAX_BODY": ("max_body", _int(1024), "largest request body, bytes"),
    "NUMGATE_LINGER": ("linger_s", _float(0, 60), "seconds a refused connection lingers half-closed"),
    "NUMGATE_HEADER_TIMEOUT": ("header_timeout_s", _float(0.1), "seconds to send request headers"),
    "NUMGATE_BODY_TIMEOUT": ("body_timeout_s", _float(0.1), "seconds to send a request body"),
    "NUMGATE_MAX_CONNECTIONS": ("max_connections", _int(16), "open connections at most"),
    "NUMGATE_DB_TIMEOUT": ("db_timeout_s", _float(0.1, 300), "database and Redis timeout, seconds"),
    "NUMGATE_SQLITE_WAL_MAX": ("sqlite_wal_max", _int(1024 * 1024), "WAL size that triggers a truncation"),
    "NUMGATE_DRAIN": ("drain_s", _float(0, 300), "seconds to drain on SIGTERM"),
    "NUMGATE_PUBLIC_URL": ("public_url", _url, "the URL vendors' webhooks reach numgate at"),
    "NUMGATE_UPSTREAM_TIMEOUT": ("upstream_timeout_s", _float(0.1, 600), "seconds per upstream HTTP call"),
    "NUMGATE_UPSTREAM_WAIT": ("upstream_wait_s", _float(1, 86_400), "seconds to wait for a vendor's webhook"),
    "NUMGATE_METRICS_TOKEN": ("metrics_token", _text, "bearer token `GET /metrics` asks for"),
    "NUMGATE_METRICS_DIR": ("metrics_dir", _path, "where the processes keep their counters"),
}
