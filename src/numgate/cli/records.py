"""``numgate batches`` (progress) and ``numgate deliveries`` (the callback log, sending again)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from numgate.cli.common import JsonOpt, emit, fail, money, run, when
from numgate.core import Core

batches_cmd = typer.Typer(help="Number Check batches and how far each has got.", no_args_is_help=True)
deliveries_cmd = typer.Typer(
    help="The callback delivery log; send failed callbacks again.", no_args_is_help=True
)


class DeliveryStatus(StrEnum):
    pending = "pending"
    in_flight = "in-flight"
    delivered = "delivered"
    failed = "failed"


def _status(value: str | None) -> DeliveryStatus | None:
    """Accepts every state the list shows, and "in flight" / "in_flight" for in-flight."""
    if value is None:
        return None
    v = value.strip().lower().replace(" ", "-").replace("_", "-")
    for s in DeliveryStatus:
        if v == s.value:
            return s
    raise typer.BadParameter(f"{value!r}: choose from {', '.join(s.value for s in DeliveryStatus)}")


# batches ----------------------------------------------------------------------------------------


def _progress_row(b: Any) -> dict[str, Any]:
    data = b.to_json()
    data["created"] = when(b.created_ms)
    data["finished"] = when(b.finished_ms)
    data["charged"] = money(b.charged)
    data["unit_price"] = money(b.unit_price)
    for k in ("created_ms", "finished_ms"):
        data.pop(k)
    return data


@batches_cmd.command("list")
def batches_list(
    account: Annotated[int | None, typer.Option(help="Only this account's batches.")] = None,
    running: Annotated[bool, typer.Option("--running", help="Only batches not finished yet.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Batches, newest first: numbers done of total, outcomes, charges, callbacks."""
    rows = [
        _progress_row(b)
        for b in run(lambda core: core.batches.recent(account, limit=limit, unfinished=running))
    ]
    t = Table(
        "messageId", "batchNo", "account", "level", "done", "ok", "failed", "charged", "callbacks", "created"
    )
    for r in rows:
        failed = sum(n for k, n in r["outcomes"].items() if k != "ok")
        callbacks = " ".join(f"{k} {n}" for k, n in sorted(r["callbacks"].items()))
        t.add_row(
            r["message_id"],
            r["batch_no"],
            str(r["account_id"]),
            str(r["level"]),
            f"{r['done']}/{r['total']}",
            str(r["outcomes"].get("ok", 0)),
            str(failed),
            f"{r['charged']} {r['currency']}",
            callbacks,
            r["created"],
        )
    emit(rows, as_json, t)


@batches_cmd.command("show")
def batches_show(message_id: str, as_json: JsonOpt = False) -> None:
    """One batch: progress, each outcome, the charge, and its callbacks by status."""
    r = _progress_row(run(lambda core: core.batches.get(message_id)))
    lines = [
        f"messageId     {r['message_id']}",
        f"batchNo       {r['batch_no']}",
        f"account       {r['account_id']} (app {r['appkey']})",
        f"level         {r['level']}   country {r['country'] or '-'}",
        f"price         {r['unit_price']} {r['currency']} a number",
        f"progress      {r['done']}/{r['total']}" + (" (complete)" if r["complete"] else ""),
        "outcomes      " + (", ".join(f"{k} {n}" for k, n in sorted(r["outcomes"].items())) or "none yet"),
        f"charged       {r['charged']} {r['currency']}",
        f"callback URL  {r['callback_url'] or '(none: results are queryable only)'}",
        "callbacks     " + (", ".join(f"{k} {n}" for k, n in sorted(r["callbacks"].items())) or "none yet"),
        f"created       {r['created']}",
        f"finished      {r['finished'] or '-'}",
    ]
    emit(r, as_json, text="\n".join(lines))


# deliveries -------------------------------------------------------------------------------------

STATUS_HELP = "pending, in-flight (also: 'in flight'), delivered or failed."


def _delivery_row(d: Any) -> dict[str, Any]:
    data = d.to_json()
    data["created"] = when(d.created_ms)
    data["updated"] = when(d.updated_ms)
    data["next_attempt"] = when(d.next_attempt_ms)
    for k in ("created_ms", "updated_ms", "next_attempt_ms"):
        data.pop(k)
    return data


@deliveries_cmd.command("list")
def deliveries_list(
    account: Annotated[int | None, typer.Option(help="Only this account's callbacks.")] = None,
    status: Annotated[str | None, typer.Option(metavar="STATUS", help=STATUS_HELP)] = None,
    batch: Annotated[
        str | None, typer.Option(metavar="MESSAGE_ID", help="Only this batch's callbacks.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Callbacks with their attempts, status, latency, last error and next attempt; failed ones first."""
    try:
        wanted = _status(status)
    except typer.BadParameter as exc:
        fail(f"--status: {exc}", 2)
    rows = [
        _delivery_row(d)
        for d in run(
            lambda core: core.deliveries.recent(
                account_id=account, status=wanted.value if wanted else None, batch=batch, limit=limit
            )
        )
    ]
    t = Table("delivery id", "status", "attempts", "last HTTP", "ms", "next attempt", "url", "last error")
    for r in rows:
        t.add_row(
            r["delivery_id"],
            r["status"],
            str(r["attempts"]),
            str(r["last_status"] or ""),
            str(r["last_latency_ms"] if r["last_latency_ms"] is not None else ""),
            r["next_attempt"],
            r["url"],
            r["last_error"] or "",
        )
    emit(rows, as_json, t)


@deliveries_cmd.command("show")
def deliveries_show(delivery_id: str, as_json: JsonOpt = False) -> None:
    """One callback: its log and the exact body sent."""
    r = _delivery_row(run(lambda core: core.deliveries.get(delivery_id)))
    emit(r, as_json, text="\n".join(f"{k:14} {'' if v is None else v}" for k, v in r.items()))


@deliveries_cmd.command("receivers")
def deliveries_receivers(as_json: JsonOpt = False) -> None:
    """Each receiver (scheme, host, port): callbacks queued, in flight and failed, and its pace as a
    delivery worker last reported it — connection limit, pause, success rate, latency p50/p99."""
    reports = run(lambda core: core.deliveries.receivers())
    rows: list[dict[str, Any]] = []
    for r in reports:
        row = r.to_json()
        row["reported"] = when(r.pace_ms)
        row.pop("pace_ms")
        rows.append(row)
    t = Table(
        "receiver",
        "queued",
        "in flight",
        "failed",
        "limit",
        "paused",
        "success",
        "p50 ms",
        "p99 ms",
        "reported",
    )
    for row in rows:
        pace = row["pace"] or {}
        rate = pace.get("success_rate")
        t.add_row(
            row["receiver"],
            str(row["queued"]),
            str(row["in_flight"]),
            str(row["failed"]),
            str(pace.get("limit", "")),
            f"{pace['paused_for_s']} s" if pace.get("paused_for_s") else "",
            f"{rate:.0%}" if rate is not None else "",
            str(pace.get("p50_ms") or ""),
            str(pace.get("p99_ms") or ""),
            row["reported"],
        )
    emit(rows, as_json, t)


@deliveries_cmd.command("retry")
def deliveries_retry(
    delivery_ids: Annotated[list[str] | None, typer.Argument(metavar="[DELIVERY_ID]...")] = None,
    batch: Annotated[
        str | None, typer.Option(metavar="MESSAGE_ID", help="Every failed callback of this batch.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send failed callbacks again now (these, or all failed ones of a batch), with a new retry
    window; each keeps its delivery id, so receivers still de-duplicate."""
    if not delivery_ids and batch is None:
        fail("name the deliveries to send again, or a batch with --batch MESSAGE_ID", 2)

    async def main(core: Core) -> int:
        return await core.deliveries.retry(delivery_ids or None, batch=None if delivery_ids else batch)

    n = run(main)
    asked = len(delivery_ids) if delivery_ids else None
    note = f" ({asked - n} of those were not failed)" if asked is not None and n < asked else ""
    emit({"queued": n}, as_json, text=f"queued {n} callback(s) to be sent again{note}")
