"""Every setting numgate reads, in one place.

Each setting comes from a ``NUMGATE_*`` environment variable and has a safe default, so the
default run needs nothing but Python: sandbox upstreams, an SQLite file under ``./var``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from numgate.errors import ConfigurationError


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigurationError(f"expected a boolean (true/false), got {value!r}")


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {value!r}") from None


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from None


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


def _helpers(configured: int | None) -> int:
    """Helper processes: as configured, else one when there is a second CPU to run it."""
    if configured is not None:
        return max(configured, 0)
    return 1 if (os.cpu_count() or 1) >= 2 else 0


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
    #: sender processes that make the callback POSTs; None: one when the machine has two or
    #: more CPUs, else 0 (the delivery worker's own event loop)
    callback_processes: int | None = None
    #: run check and delivery workers inside ``numgate serve``
    inprocess_workers: bool = True
    worker_chunk: int = 250
    worker_lease_s: float = 60.0
    worker_poll_s: float = 0.2
    #: processes that run the Basic (libphonenumber) checks of a check worker; None: one when
    #: the machine has two or more CPUs, else 0 (a thread of the worker's own process)
    check_processes: int | None = None
    redis_url: str | None = None
    #: per account and action, calls per second (NXCloud -1 / CAMS System.LimitControl)
    rate_limit_per_second: int = 10
    log_level: str = "info"
    access_log: bool = True
    waba_upstream: str = "simulator"
    meta_base_url: str = "https://graph.facebook.com/v21.0"
    meta_token: str | None = None
    meta_waba_id: str | None = None
    #: first wait before retrying a rate-limited Graph call (doubles each time, 4 tries)
    meta_backoff_s: float = 1.0
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'numgate.db').resolve()}"

    @property
    def resolved_check_processes(self) -> int:
        return _helpers(self.check_processes)

    @property
    def resolved_callback_processes(self) -> int:
        return _helpers(self.callback_processes)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env
        get = e.get
        kw: dict[str, object] = {}
        if v := get("NUMGATE_DATA_DIR"):
            kw["data_dir"] = Path(v)
        if v := get("NUMGATE_DATABASE_URL"):
            kw["database_url"] = v
        if v := get("NUMGATE_SECRET_KEY"):
            kw["secret_key"] = v
        if v := get("NUMGATE_HOST"):
            kw["host"] = v
        if v := get("NUMGATE_PORT"):
            kw["port"] = _int("NUMGATE_PORT", v)
        if (v := get("NUMGATE_SANDBOX")) is not None:
            kw["sandbox"] = _bool(v)
        if v := get("NUMGATE_CALLBACK_ALLOW"):
            kw["callback_allow"] = parse_allowlist(v)
        if v := get("NUMGATE_CALLBACK_RETRY_INTERVAL"):
            kw["callback_retry_interval_s"] = _float("NUMGATE_CALLBACK_RETRY_INTERVAL", v)
        if v := get("NUMGATE_CALLBACK_RETRY_WINDOW"):
            kw["callback_retry_window_s"] = _float("NUMGATE_CALLBACK_RETRY_WINDOW", v)
        if v := get("NUMGATE_CALLBACK_TIMEOUT"):
            kw["callback_timeout_s"] = _float("NUMGATE_CALLBACK_TIMEOUT", v)
        if v := get("NUMGATE_CALLBACK_CONCURRENCY"):
            kw["callback_concurrency"] = _int("NUMGATE_CALLBACK_CONCURRENCY", v)
        if v := get("NUMGATE_CALLBACK_PROCESSES"):
            kw["callback_processes"] = _int("NUMGATE_CALLBACK_PROCESSES", v)
        if (v := get("NUMGATE_INPROCESS_WORKERS")) is not None:
            kw["inprocess_workers"] = _bool(v)
        if v := get("NUMGATE_WORKER_CHUNK"):
            kw["worker_chunk"] = _int("NUMGATE_WORKER_CHUNK", v)
        if v := get("NUMGATE_WORKER_LEASE"):
            kw["worker_lease_s"] = _float("NUMGATE_WORKER_LEASE", v)
        if v := get("NUMGATE_CHECK_PROCESSES"):
            kw["check_processes"] = _int("NUMGATE_CHECK_PROCESSES", v)
        if v := get("NUMGATE_REDIS_URL"):
            kw["redis_url"] = v
        if v := get("NUMGATE_RATE_LIMIT"):
            kw["rate_limit_per_second"] = _int("NUMGATE_RATE_LIMIT", v)
        if v := get("NUMGATE_LOG_LEVEL"):
            kw["log_level"] = v.lower()
        if (v := get("NUMGATE_ACCESS_LOG")) is not None:
            kw["access_log"] = _bool(v)
        if v := get("NUMGATE_WABA_UPSTREAM"):
            if v not in {"simulator", "meta"}:
                raise ConfigurationError("NUMGATE_WABA_UPSTREAM must be 'simulator' or 'meta'")
            kw["waba_upstream"] = v
        if v := get("NUMGATE_META_BASE_URL"):
            kw["meta_base_url"] = v.rstrip("/")
        if v := get("NUMGATE_META_TOKEN"):
            kw["meta_token"] = v
        if v := get("NUMGATE_META_WABA_ID"):
            kw["meta_waba_id"] = v
        if v := get("NUMGATE_META_BACKOFF"):
            kw["meta_backoff_s"] = _float("NUMGATE_META_BACKOFF", v)
        return cls(**kw)  # type: ignore[arg-type]
