"""The WhatsApp part of the CLI: ``admin space``, ``admin number`` and ``sandbox outbox``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from numgate import ids
from numgate.cli import JsonOpt, admin, app, emit, run
from numgate.core import Core
from numgate.waba.model import PhoneNumber

space_cmd = typer.Typer(
    help="CAMS spaces (CustSpaceId). A space is an app under its CAMS name: its id is also its appkey.",
    no_args_is_help=True,
)
number_cmd = typer.Typer(help="WhatsApp Business numbers attached to apps / spaces.", no_args_is_help=True)
sandbox_cmd = typer.Typer(help="The sandbox WhatsApp upstream (simulator).", no_args_is_help=True)
admin.add_typer(space_cmd, name="space")
admin.add_typer(number_cmd, name="number")
app.add_typer(sandbox_cmd, name="sandbox")


def number_json(n: PhoneNumber) -> dict[str, Any]:
    return {
        "phone": n.phone,
        "appkey": n.appkey,
        "account_id": n.account_id,
        "verified_name": n.verified_name,
        "upstream_id": n.upstream_id,
        "verification": n.verification.value,
        "registration": n.registration.value,
        "status": n.status,
        "quality": n.quality,
        "tier": n.tier,
    }


@space_cmd.command("create")
def space_create(
    account_id: Annotated[int, typer.Argument(metavar="ACCOUNT_ID")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name for the space.")],
    as_json: JsonOpt = False,
) -> None:
    """Create a CAMS space for an account; prints its CustSpaceId (also usable as an appkey)."""
    a = run(lambda core: core.tenancy.create_app(account_id, name, appkey=ids.new_space_id()))
    data = {
        "cust_space_id": a.appkey,
        "appkey": a.appkey,
        "app_id": a.id,
        "account_id": a.account_id,
        "name": a.name,
    }
    emit(data, as_json, text=f"space {a.name}\nCustSpaceId {a.appkey}")


@number_cmd.command("add")
def number_add(
    space_or_appkey: Annotated[str, typer.Argument(metavar="SPACE_OR_APPKEY")],
    phone: Annotated[
        str, typer.Argument(metavar="PHONE", help="Digits with country code (a leading + is fine).")
    ],
    name: Annotated[
        str, typer.Option("--name", metavar="VERIFIED_NAME", help="The display (verified) name.")
    ] = "numgate",
    as_json: JsonOpt = False,
) -> None:
    """Attach a WhatsApp number to an app or space (as the sign-up page and AddChatappPhoneNumber do)."""
    n = run(lambda core: core.waba.add_number(None, space_or_appkey, phone, name))
    emit(number_json(n), as_json, text=f"+{n.phone} attached to {n.appkey} ({n.app_name})")


@number_cmd.command("list")
def number_list(
    space_or_appkey: Annotated[str | None, typer.Argument(metavar="[SPACE_OR_APPKEY]")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List attached numbers and where each stands in its lifecycle."""
    numbers = run(lambda core: core.waba.list_numbers(None, space_or_appkey))
    rows = [number_json(n) for n in numbers]
    t = Table("phone", "appkey", "name", "verification", "registration", "status")
    for r in rows:
        t.add_row(
            r["phone"], r["appkey"], r["verified_name"], r["verification"], r["registration"], r["status"]
        )
    emit(rows, as_json, t)


@sandbox_cmd.command("outbox")
def sandbox_outbox(
    phone: Annotated[str | None, typer.Option("--phone", help="Only messages to this number.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The codes the simulator "sent" by SMS or voice, newest first."""
    from numgate.waba.simulator import read_outbox

    async def read(core: Core) -> list[Any]:
        return await read_outbox(core.db, phone, limit)

    messages = run(read)
    rows = [
        {
            "id": m.id,
            "phone": m.phone,
            "channel": m.channel,
            "locale": m.locale,
            "text": m.text,
            "sent_at": datetime.fromtimestamp(m.created_ms / 1000, UTC).isoformat(timespec="seconds"),
        }
        for m in messages
    ]
    t = Table("sent at (UTC)", "phone", "channel", "locale", "message")
    for r in rows:
        t.add_row(r["sent_at"], r["phone"], r["channel"], r["locale"], r["text"])
    emit(rows, as_json, t)
