"""The ``receiver`` command: try patterns, manage trigger rules, send events, read the log,
check bodies against the wire formats, and run or inspect the receiver's jobs.

Each command lives in the module that its work belongs to, imported only when the command
runs: ``receiver match`` loads click and the matcher, not Flask or the sender. Every mistake
a user can make ends with one line on stderr (see :mod:`receiver.cli.common`).
"""

from __future__ import annotations

import importlib
import typing as t

import click

from .. import __version__
from .common import _Group

#: Command name -> "module:attribute", in the order ``--help`` lists them.
COMMANDS = {
    "match": "match:match",
    "rules": "registry:rules",
    "emit": "registry:emit",
    "send": "registry:send",
    "redeliver": "registry:redeliver",
    "logs": "registry:logs",
    "validate": "checking:validate",
    "schema": "checking:schema",
    "worker": "queue:worker",
    "jobs": "queue:jobs",
}


class _LazyGroup(_Group):
    """Imports a command's module when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, attribute = where.partition(":")
        command = getattr(importlib.import_module(f".{module}", __name__), attribute)
        return t.cast(click.Command, command)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    # click.version_option's output, without its translation lookups at import time.
    if value and not ctx.resilient_parsing:
        click.echo(f"receiver, version {__version__}")
        ctx.exit()


def _default_db() -> str:
    from ..registry.store import default_db_path

    return str(default_db_path())


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_version, help="Show the version and exit.")
@click.option("--db", envvar="RECEIVER_DB", metavar="PATH", show_envvar=True,
              help="The SQLite store of rules and trigger log "
                   "[default: $XDG_DATA_HOME/receiver/receiver.db].")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    """Receive, send and test TCR / Harbor webhook events.

    \b
    Try a pattern:        receiver match --repository '/app*/**' app1/web
    Manage rules:         receiver rules create NAME --url URL ...
    Fire an event:        receiver emit pushImage prod/app:v1 --format harbor
    Read the trigger log: receiver logs
    Check a body:         receiver validate body.json --strict
    Get a JSON Schema:    receiver schema --format cloudevents
    See handler jobs:     receiver jobs --status dead

    The receiver itself runs under gunicorn: `gunicorn wsgi:app`.
    """
    ctx.ensure_object(dict)["db"] = db


__all__ = ["main"]
