"""What every ``receiver`` command shares: the one-line error, JSON output, and the one
place where domain errors become that line.

Every command imports this module, so it imports only what every command needs: ``json``
and ``sqlite3`` are imported where they are used (``receiver match`` needs neither).
"""

from __future__ import annotations

import math
import signal
import sys
import typing as t

import click

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


class UserError(click.ClickException):
    """A mistake of the user's: one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: t.IO[str] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _Terminated(Exception):
    """SIGTERM arrived; raised in the main thread so that deliveries close their rows."""


def _on_sigterm(signum: int, frame: t.Any) -> None:
    raise _Terminated()


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter("must be a finite number of seconds")
    return value


class _Group(click.Group):
    """A group whose usage errors are one line on stderr, exit status 2, like ours."""

    def main(
        self,
        args: t.Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: t.Any,
    ) -> t.Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        previous: dict[signal.Signals, t.Any] = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal went away
                previous[sig] = signal.signal(sig, _on_sigterm)
        except ValueError:  # not the main thread, where Python runs signal handlers
            pass
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            sys.exit(2)
        except click.UsageError as exc:
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            message = exc.format_message()
            if message.startswith("Got unexpected extra argument"):
                # Not echoed: a 'Key: Value' that lost its --header is usually a secret.
                message = "unexpected extra arguments"
                command = exc.ctx.command if exc.ctx is not None else None
                if command is not None and any(
                    "--header" in getattr(param, "opts", ()) for param in command.params
                ):
                    message += " (a header needs --header 'Key: Value')"
            click.echo(f"error: {where}{message} (see --help)", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except _Terminated:
            click.echo("terminated", err=True)
            sys.exit(143)
        except UnicodeEncodeError:
            click.echo("error: an argument is not valid UTF-8 text", err=True)
            sys.exit(2)
        except Exception as exc:
            if _is_sqlite_error(exc):
                click.echo(f"error: the store failed: {exc}", err=True)
                sys.exit(1)
            shown = domain_message(exc)
            if shown is None:
                raise
            click.echo(f"error: {shown}", err=True)
            # An outage (the queue is down) is not the user's mistake: status 1, as for sqlite3.
            sys.exit(1 if type(exc).__name__ == "QueueUnavailable" else 2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        sys.exit(result if isinstance(result, int) else 0)


def _is_sqlite_error(exc: BaseException) -> bool:
    """Whether *exc* is an ``sqlite3.Error``; a command that never imported sqlite3 has none."""
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(exc, sqlite3.Error)


#: The errors of the modules the commands call, whose message is written for the user:
#: module -> class names. Looked up in ``sys.modules`` so that a command that never
#: imported the sender (say) does not import it to translate an error.
DOMAIN_ERRORS = {
    "receiver.core.matcher": ("PatternError",),
    "receiver.registry.rules": ("RuleError",),
    "receiver.registry.store": ("NotFound",),
    "receiver.jobs": ("QueueError",),
    "receiver.jobs.base": ("QueueUnavailable",),
    "receiver.core.settings": ("ConfigError",),
}


def domain_message(exc: BaseException) -> str | None:
    """The one line shown for *exc* if it is a domain error (see :data:`DOMAIN_ERRORS`);
    ``None`` for anything else, which is a bug and keeps its traceback."""
    for module_name, names in DOMAIN_ERRORS.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in names:
            if isinstance(exc, getattr(module, name)):
                message = str(exc)
                return f"configuration error: {message}" if name == "ConfigError" else message
    return None


def emit_json(data: t.Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _print_table(rows: list[tuple[t.Any, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
