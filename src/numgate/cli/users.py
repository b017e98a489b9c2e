"""``numgate admin user``: the people who sign in to the console (docs/console.md)."""

from __future__ import annotations

import secrets
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from numgate.cli.common import JsonOpt, emit, fail, run, when, yes_no

user_cmd = typer.Typer(
    help="Console users (sign-in to /console): operators see everything, tenant users one account.",
    no_args_is_help=True,
)


def _row(u: Any) -> dict[str, Any]:
    return {
        "email": u.email,
        "role": u.role,
        "account_id": u.account_id,
        "enabled": u.enabled,
        "created": when(u.created_ms),
        "last_sign_in": when(u.last_sign_in_ms) if u.last_sign_in_ms else None,
    }


@user_cmd.command("create")
def user_create(
    email: str,
    operator: Annotated[bool, typer.Option("--operator", help="Sees and manages every account.")] = False,
    account: Annotated[
        int | None, typer.Option(help="A tenant user: sees only this account's data.", metavar="ID")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password (10+ characters) from stdin; else one is generated, printed once.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a console user: --operator, or --account ID for a tenant user."""
    if operator == (account is not None):
        fail("give exactly one of --operator or --account ID", code=2)
    generated = not password_stdin
    password = secrets.token_urlsafe(12) if generated else sys.stdin.readline().rstrip("\r\n")
    user = run(lambda core: core.users.create(email, password, account_id=account))
    data = _row(user) | ({"password": password} if generated else {})
    emit(
        data,
        as_json,
        text=f"created {user.role} {user.email}"
        + (f" — password (shown once): {password}" if generated else ""),
    )


@user_cmd.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """Every console user, with their role and last sign-in."""
    data = [_row(u) for u in run(lambda core: core.users.list())]
    t = Table("email", "role", "account", "enabled", "created", "last sign-in")
    for r in data:
        t.add_row(
            r["email"],
            r["role"],
            str(r["account_id"] or ""),
            yes_no(r["enabled"]),
            r["created"],
            r["last_sign_in"] or "",
        )
    emit(data, as_json, t)


@user_cmd.command("disable")
def user_disable(email: str, as_json: JsonOpt = False) -> None:
    """Disable a console user: they can no longer sign in, and their open sessions end."""
    emit(_row(run(lambda core: core.users.set_enabled(email, False))), as_json, text=f"disabled {email}")


@user_cmd.command("enable")
def user_enable(email: str, as_json: JsonOpt = False) -> None:
    """Enable a disabled console user again."""
    emit(_row(run(lambda core: core.users.set_enabled(email, True))), as_json, text=f"enabled {email}")
