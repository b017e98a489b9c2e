"""numgate's one entry point: serve, worker, migrate, demo, check, admin …, batches …, deliveries …,
sandbox …. Every command takes --json; `numgate --help` lists them."""

from __future__ import annotations

from typing import Annotated

import typer

from numgate import __version__
from numgate.cli.admin import admin
from numgate.cli.checkfile import check
from numgate.cli.common import whole_writes
from numgate.cli.records import batches_cmd, deliveries_cmd
from numgate.cli.serving import register
from numgate.cli.upstreams import report_cmd, route_cmd, upstream_cmd
from numgate.cli.users import user_cmd
from numgate.cli.whatsapp import number_cmd, sandbox_cmd, space_cmd

app = typer.Typer(
    name="numgate",
    help="numgate: a self-hostable phone-number verification gateway (NXCloud and Alibaba CAMS wire APIs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"numgate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """numgate: a self-hostable phone-number verification gateway (NXCloud and Alibaba CAMS wire APIs)."""


register(app)
app.command()(check)
app.add_typer(admin, name="admin")
admin.add_typer(space_cmd, name="space")
admin.add_typer(number_cmd, name="number")
admin.add_typer(upstream_cmd, name="upstream")
admin.add_typer(route_cmd, name="route")
admin.add_typer(report_cmd, name="report")
admin.add_typer(user_cmd, name="user")
app.add_typer(batches_cmd, name="batches")
app.add_typer(deliveries_cmd, name="deliveries")
app.add_typer(sandbox_cmd, name="sandbox")


def main() -> None:
    whole_writes()
    app()
