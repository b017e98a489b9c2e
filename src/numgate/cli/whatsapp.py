"""The WhatsApp commands: ``admin space``, ``admin number`` and ``sandbox outbox``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from numgate import ids
from numgate.cli.common import JsonOpt, emit, run, when
from numgate.core import Core
from numgate.waba.model import PhoneNumber

space_cmd = typer.Typer(
    help="CAMS spaces (CustSpaceId). A space is an app under its CAMS name: its id is also its appkey.",
    no_args_is_help=True,
)
number_cmd = typer.Typer(help="WhatsApp Business numbers attached to apps / spaces.", no_args_is_help=True)
sandbox_cmd = typer.Typer(help="The sandbox WhatsApp upstream (simulator).", no_args_is_help=True)


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
    """List attached numbers (every account's), and where each stands in its lifecycle."""
    numbers = run(lambda core: core.waba.list_numbers(None, space_or_appkey))
    rows = [number_json(n) for n in numbers]
    t = Table("phone", "account", "appkey", "name", "verification", "registration", "status")
    for r in rows:
        t.add_row(
            r["phone"],
            str(r["account_id"]),
            r["appkey"],
            r["verified_name"],
            r["verification"],
            r["registration"],
            r["status"],
        )
    emit(rows, as_json, t)


@number_cmd.command("delete")
def number_delete(
    phone: Annotated[str, typer.Argument(metavar="PHONE", help="Digits with country code.")],
    as_json: JsonOpt = False,
) -> None:
    """Detach a number from numgate (with its code requests and registration history). Nothing is
    changed upstream: deregister it first if it should stop working."""
    n = run(lambda core: core.waba.delete_number(phone))
    emit(number_json(n) | {"deleted": True}, as_json, text=f"+{n.phone} detached from {n.appkey}")


@sandbox_cmd.command("outbox")
def sandbox_outbox(
    phone: Annotated[str | None, typer.Option("--phone", help="Only messages to this number.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The codes the simulator "sent" by SMS or voice, newest first."""
    from numgate.waba.simulator import read_outbox

    async def read(core: Core) -> list[Any]:
        return await read_outbox(core.db, phone, limit)

    rows = [
        {
            "id": m.id,
            "phone": m.phone,
            "channel": m.channel,
            "locale": m.locale,
            "text": m.text,
            "sent_at": when(m.created_ms),
        }
        for m in run(read)
    ]
    t = Table("sent at", "phone", "channel", "locale", "message")
    for r in rows:
        t.add_row(r["sent_at"], r["phone"], r["channel"], r["locale"], r["text"])
    emit(rows, as_json, t)
