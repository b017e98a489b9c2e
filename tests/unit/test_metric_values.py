"""The write-behind value class: counts stay in memory until the process writes them, then
prometheus-client's own multiprocess collector reads them from the files as it reads its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from numgate.metrics import WriteBehind


def collected(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=str(directory))  # type: ignore[no-untyped-call]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in reg.collect() for s in fam.samples}


def test_counts_reach_the_files_only_when_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = WriteBehind(tmp_path)
    monkeypatch.setattr(values, "ValueClass", store.value_class)  # as share() sets it
    reg = CollectorRegistry()
    counter = Counter("t_calls", "calls", ["kind"], registry=reg)
    hist = Histogram("t_seconds", "time", buckets=(0.1, 1.0), registry=reg)
    counter.labels("a").inc(2)
    counter.labels("b").inc()
    hist.observe(0.05)
    hist.observe(0.5)
    assert collected(tmp_path).get(("t_calls_total", (("kind", "a"),))) in (None, 0.0)

    store.write()
    after = collected(tmp_path)
    assert after[("t_calls_total", (("kind", "a"),))] == 2
    assert after[("t_calls_total", (("kind", "b"),))] == 1
    assert after[("t_seconds_bucket", (("le", "0.1"),))] == 1
    assert after[("t_seconds_bucket", (("le", "1.0"),))] == 2
    assert after[("t_seconds_count", ())] == 2
    assert abs(after[("t_seconds_sum", ())] - 0.55) < 1e-9

    counter.labels("a").inc()
    store.write()
    store.write()  # nothing changed since: the same values
    assert collected(tmp_path)[("t_calls_total", (("kind", "a"),))] == 3
    store.close()


def test_a_new_value_starts_from_what_its_process_wrote(tmp_path: Path) -> None:
    """The files are per process (pid in the name): a second value class of the same process,
    as after a restart of the counting in it, continues from the file, as the library does."""
    first = WriteBehind(tmp_path)
    first.value_class("counter", "t_x", "t_x_total", [], [], "x").inc(5)
    first.close()  # writes what changed
    second = WriteBehind(tmp_path)
    assert second.value_class("counter", "t_x", "t_x_total", [], [], "x").get() == 5
    second.close()
