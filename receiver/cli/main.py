"""The ``receiver`` command: try patterns, manage trigger rules, send events, read the log,
check bodies against the wire formats.

This module only parses arguments and prints; the work is done by the modules it calls.
Every mistake a user can make ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import math
import os
import signal
import sqlite3
import sys
import threading
import typing as t

import click

from .. import __version__
from ..core.matcher import PatternError, repository_fullmatch, tag_fullmatch
from ..core.events import (ACTIONS, REPOSITORY_ACTIONS, SEVERITIES, Event, build_event,
                     parse_reference, subject)
from ..core.formats import FORMATS
from ..registry.rules import DEFAULT_ACTIONS, RuleError, TriggerRule, parse_header
from ..registry.sender import (DEFAULT_ATTEMPTS, DEFAULT_BACKOFF, DEFAULT_TIMEOUT, MAX_SECONDS, Sender,
                     wire_format)
from ..core.text import printable
from ..jobs import JOB_STATUSES, Job, Queue, QueueError, QueueUnavailable, open_queue
from ..jobs.base import iso
from ..registry.store import STATUSES, Delivery, NotFound, Store, default_db_path

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

    def main(self, *args: t.Any, standalone_mode: bool = True, **kwargs: t.Any) -> t.Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        previous: dict[int, t.Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal went away
                previous[sig] = signal.signal(sig, _on_sigterm)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            sys.exit(2)
        except click.UsageError as exc:
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            message = exc.format_message()
            if message.startswith("Got unexpected extra argument"):
                # Not echoed: a 'Key: Value' that lost its --header is usually a secret.
                message = "unexpected extra arguments (a header needs --header 'Key: Value')"
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
        except sqlite3.Error as exc:
            click.echo(f"error: the store failed: {exc}", err=True)
            sys.exit(1)
        except QueueUnavailable as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except UnicodeEncodeError:
            click.echo("error: an argument is not valid UTF-8 text", err=True)
            sys.exit(2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        sys.exit(result if isinstance(result, int) else 0)


def emit_json(data: t.Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="receiver")
@click.option("--db", envvar="RECEIVER_DB", metavar="PATH", show_envvar=True,
              help=f"The SQLite store of rules and trigger log [default: {default_db_path()}].")
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


@main.command()
@click.option("--repository", "repository", metavar="PATTERN", help="A repository pattern.")
@click.option("--tag", "tag", metavar="PATTERN", help="A tag pattern.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("names", nargs=-1, required=True)
def match(repository: str | None, tag: str | None, as_json: bool, names: tuple[str, ...]) -> None:
    """Test NAMES against a repository or tag pattern, as a trigger rule would.

    Repository names are relative to the namespace (`path1/app` in `public`); a leading
    `/` in the pattern is optional and an empty pattern matches everything.

    \b
      receiver match --repository '/{path1, path2}*/**' path1x/app other/app
      receiver match --tag '{env1*, env2*}' env1-a env3

    Prints one line per name, `NAME match` or `NAME no match`, and exits 0; a malformed
    pattern is reported on stderr with exit status 2.
    """
    if (repository is None) == (tag is None):
        raise UserError("give exactly one of --repository PATTERN or --tag PATTERN")
    try:
        if repository is not None:
            fullmatch, pattern, kind = repository_fullmatch(repository), repository, "repository"
        else:
            assert tag is not None
            fullmatch, pattern, kind = tag_fullmatch(tag), tag, "tag"
    except PatternError as exc:
        raise UserError(str(exc)) from None
    results = [(name, fullmatch(name) is not None) for name in names]
    if as_json:
        emit_json(
            {
                kind: pattern,
                "results": [{"name": n, "match": m} for n, m in results],
            }
        )
        return
    for name, matched in results:
        click.echo(f"{name} {'match' if matched else 'no match'}")


# --- trigger rules ------------------------------------------------------------------------

def _store(ctx: click.Context) -> Store:
    """The store named by --db / RECEIVER_DB, opened once per command."""
    obj = ctx.ensure_object(dict)
    if "store" not in obj:
        try:
            obj["store"] = Store(obj.get("db") or default_db_path())
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open the store {obj.get('db') or default_db_path()}: {exc}") from None
        ctx.call_on_close(obj["store"].close)
    return obj["store"]


def _headers(values: t.Iterable[str]) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(parse_header(v) for v in values)
    except RuleError as exc:
        raise UserError(str(exc)) from None


def _apply(options: list[t.Callable[[F], F]], fn: F) -> F:
    """Decorate *fn* with *options*, the first listed shown first in --help."""
    for option in reversed(options):
        fn = option(fn)
    return fn


def _rule_options(create: bool) -> t.Callable[[F], F]:
    """The options shared by `rules create` and `rules update`."""

    def decorate(fn: F) -> F:
        options = [
            click.option("--url", required=create, help="The target URL (http or https)."),
            click.option("--action", "actions", multiple=True, metavar="ACTION",
                         help="An action to fire on, one of " + ", ".join(ACTIONS)
                              + "; repeat for several"
                              + (". Default: those of " + ", ".join(DEFAULT_ACTIONS)
                                 + " that the format carries." if create
                                 else "; replaces the rule's actions.")),
            click.option("--format", "format_", type=click.Choice(list(FORMATS)),
                         help="The wire format of its deliveries: tcr (TCR, Harbor 1.x), harbor "
                              "(Harbor 2.x) or cloudevents (Harbor 2.8+)"
                              + (" [default: tcr]." if create else ".")
                              + " cloudevents has no chart events, tcr no scanningStopped, "
                                "replication or tagRetention."),
            click.option("--namespace", help="The namespace the rule applies to; '' for all."),
            click.option("--repository", metavar="PATTERN",
                         help="Repository pattern relative to the namespace, e.g. '/app*/**'."),
            click.option("--tag", metavar="PATTERN", help="Tag pattern, e.g. 'v*'; empty for all."),
            click.option("--header", "headers", multiple=True, metavar="'KEY: VALUE'",
                         help="A header sent with each delivery, e.g. for auth; repeatable"
                              + ("." if create else "; replaces all the rule's headers.")),
            click.option("--description", help="Free text."),
        ]
        if create:
            options.append(click.option("--disabled", is_flag=True, help="Create it switched off."))
        else:
            options.append(click.option("--clear-headers", is_flag=True, help="Remove every header."))
        return _apply(options, fn)

    return decorate


@main.group()
def rules() -> None:
    """Create, configure, enable, disable, list and delete trigger rules.

    A rule fires for an event when its action, namespace, repository pattern and tag
    pattern all match; each delivery then carries the resources whose tag matched, in the
    rule's wire format (--format). replication and tagRetention events have no repository:
    a rule with either action takes no namespace, repository or tag pattern (it would never
    fire for them), and is refused if given one.
    """


@rules.command("create")
@click.argument("name")
@_rule_options(create=True)
@click.pass_context
def rules_create(ctx: click.Context, name: str, url: str, actions: tuple[str, ...],
                 format_: str | None, namespace: str | None, repository: str | None,
                 tag: str | None, headers: tuple[str, ...], description: str | None,
                 disabled: bool) -> None:
    """Create the rule NAME (lower-case letters, digits and -._).

    A rule's actions must be ones its format carries; the rule is refused otherwise.

    \b
      receiver rules create deploy --url http://127.0.0.1:8000/webhook --namespace prod \\
          --tag 'v*' --header 'Authorization: Bearer s3cret' --format harbor
    """
    try:
        rule = TriggerRule(
            name=name, url=url, actions=actions or None, namespace=namespace or None,  # type: ignore[arg-type]
            repository=repository or "", tag=tag or "", headers=_headers(headers),
            description=description or "", enabled=not disabled, format=format_ or "tcr",
        )
        _store(ctx).add_rule(rule)
    except RuleError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"created rule {name}" + (" (disabled)" if disabled else ""))


@rules.command("update")
@click.argument("name")
@_rule_options(create=False)
@click.pass_context
def rules_update(ctx: click.Context, name: str, url: str | None, actions: tuple[str, ...],
                 format_: str | None, namespace: str | None, repository: str | None,
                 tag: str | None, headers: tuple[str, ...], description: str | None,
                 clear_headers: bool) -> None:
    """Change the given fields of the rule NAME; the others stay as they are.

    A new --format must carry every action of the rule: give --action too if it does not.
    """
    store = _store(ctx)
    changes: dict[str, t.Any] = {}
    for key, value in (("url", url), ("namespace", namespace), ("repository", repository),
                       ("tag", tag), ("description", description), ("format", format_)):
        if value is not None:
            changes[key] = value
    if actions:
        changes["actions"] = actions
    if headers or clear_headers:
        changes["headers"] = _headers(headers)
    try:
        store.save_rule(store.get_rule(name).replace(**changes))
    except (RuleError, NotFound) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"updated rule {name}")


def _set_enabled(ctx: click.Context, name: str, enabled: bool) -> None:
    store = _store(ctx)
    try:
        store.save_rule(store.get_rule(name).replace(enabled=enabled))
    except (NotFound, RuleError) as exc:
        raise UserError(str(exc)) from None
    click.echo(f"{'enabled' if enabled else 'disabled'} rule {name}")


@rules.command("enable")
@click.argument("name")
@click.pass_context
def rules_enable(ctx: click.Context, name: str) -> None:
    """Switch the rule NAME on."""
    _set_enabled(ctx, name, True)


@rules.command("disable")
@click.argument("name")
@click.pass_context
def rules_disable(ctx: click.Context, name: str) -> None:
    """Switch the rule NAME off: events no longer fire it."""
    _set_enabled(ctx, name, False)


@rules.command("delete")
@click.argument("name")
@click.pass_context
def rules_delete(ctx: click.Context, name: str) -> None:
    """Delete the rule NAME (its trigger log stays)."""
    try:
        _store(ctx).delete_rule(name)
    except NotFound as exc:
        raise UserError(str(exc)) from None
    click.echo(f"deleted rule {name}")


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (header values masked).")
@click.pass_context
def rules_list(ctx: click.Context, as_json: bool) -> None:
    """List every rule."""
    found = _store(ctx).list_rules()
    if as_json:
        emit_json([r.to_dict() for r in found])
        return
    if not found:
        click.echo("no rules; create one with: receiver rules create NAME --url URL", err=True)
        return
    table = [("NAME", "ENABLED", "FORMAT", "ACTIONS", "NAMESPACE", "REPOSITORY", "TAG", "URL")]
    for r in found:
        table.append((r.name, "yes" if r.enabled else "no", r.format, ",".join(r.actions),
                      r.namespace or "*", r.repository or "*", r.tag or "*", r.url))
    _print_table(table)


@rules.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (header values masked).")
@click.pass_context
def rules_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show every field of the rule NAME; header values are masked."""
    try:
        rule = _store(ctx).get_rule(name)
    except NotFound as exc:
        raise UserError(str(exc)) from None
    data = rule.to_dict()
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if key == "headers":
            value = ", ".join(f"{k}: {v}" for k, v in value) or "-"
        elif key == "actions":
            value = ", ".join(value)
        elif key == "enabled":
            value = "yes" if value else "no"
        elif value in (None, ""):
            value = "*" if key in ("namespace", "repository", "tag") else "-"
        click.echo(f"{key + ':':<13}{value}")


# --- sending ------------------------------------------------------------------------------

def _sender_options(fn: F) -> F:
    options = [
        click.option("--timeout", type=click.FloatRange(0.001, MAX_SECONDS), default=DEFAULT_TIMEOUT,
                     callback=_finite,
                     envvar="RECEIVER_SEND_TIMEOUT", show_default=True, show_envvar=True,
                     help="Seconds allowed for each attempt."),
        click.option("--attempts", type=click.IntRange(1, 100), default=DEFAULT_ATTEMPTS,
                     envvar="RECEIVER_SEND_ATTEMPTS", show_default=True, show_envvar=True,
                     help="Attempts per delivery."),
        click.option("--backoff", type=click.FloatRange(0, MAX_SECONDS), default=DEFAULT_BACKOFF,
                     callback=_finite,
                     envvar="RECEIVER_SEND_BACKOFF", show_default=True, show_envvar=True,
                     help="Seconds before the 2nd attempt; doubles after, plus jitter."),
        click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON."),
    ]
    return _apply(options, fn)


def _sender(ctx: click.Context, timeout: float, attempts: int, backoff: float) -> Sender:
    return Sender(_store(ctx), timeout=timeout, attempts=attempts, backoff=backoff)


def _operator() -> str:
    """Who fires the event by default: the OS user, or "" when there is none to name."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (a bare container)
        return ""


def _parse_ref(ref: str) -> tuple[str, list[str] | None, str | None]:
    """REF as (repository, tags, digest), in the grammar of ``deliver()``
    (:func:`receiver.core.events.parse_reference`): ``NS/REPO`` (tags ``None``: ``latest``),
    ``NS/REPO:TAG[,TAG...]``, ``NS/REPO@DIGEST`` or ``NS/REPO:TAG@DIGEST``."""
    try:
        return parse_reference(ref)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _event(action: str, ref: str | None, options: dict[str, t.Any]) -> Event:
    """The event the registry would send for ACTION on REF, with the event options."""
    options = dict(options)
    digest = options.pop("digest")
    repo: str | None = None
    tags: list[str] | None = None
    if action in REPOSITORY_ACTIONS:
        if ref is None:
            raise UserError(f"{action} needs what it is about: NS/REPO[:TAG] or "
                            "NS/REPO@DIGEST after the action")
        repo, tags, in_ref = _parse_ref(ref)
        if in_ref is not None and digest is not None:
            raise UserError("give the digest once: in NS/REPO@DIGEST or with --digest")
        digest = in_ref or digest
    elif ref is not None:
        raise UserError(f"{action} has no repository: leave out {ref!r} "
                        "(--project names the project)")
    elif digest is not None:
        raise UserError(f"{action} has no repository, so no --digest")
    if options["operator"] is None and action in REPOSITORY_ACTIONS:
        # replication and tagRetention: build_event writes what Harbor does (the trigger).
        options["operator"] = _operator()
    options["deleted"] = tuple(options["deleted"])
    try:
        return build_event(action, repo, tags, digest=digest, **options)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _report(deliveries: list[Delivery], as_json: bool) -> None:
    if as_json:
        emit_json([d.to_dict() for d in deliveries])
    else:
        for d in deliveries:
            http = f"HTTP {d.http_status}" if d.http_status is not None else "no answer"
            error = f"  ({d.error})" if d.error and d.error != f"HTTP {d.http_status}" else ""
            click.echo(f"task {d.task_id}  rule {d.rule or '-'}  {d.status}  {http}  "
                       f"attempts {d.attempts}{error}")
    if any(d.status != "success" for d in deliveries):
        raise SystemExit(1)


def _severity(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A severity as Harbor spells it, whatever the case it was typed in."""
    if value is None:
        return None
    for name in SEVERITIES:
        if name.lower() == value.lower():
            return name
    raise click.BadParameter(f"{value!r} is not one of {', '.join(SEVERITIES)}")


def _vulnerabilities(ctx: click.Context, param: click.Parameter,
                     value: str | None) -> dict[str, int] | None:
    """``High=2,Low=5`` as ``{"High": 2, "Low": 5}``; severities in any case."""
    if value is None:
        return None
    names = {s.lower(): s for s in SEVERITIES[1:]}
    counts: dict[str, int] = {}
    for item in value.split(","):
        key, sep, number = (part.strip() for part in item.partition("="))
        if not sep or key.lower() not in names or not number.isdigit():
            raise click.BadParameter(
                f"{item!r} must be SEVERITY=COUNT, e.g. High=2,Low=5; severities: "
                + ", ".join(SEVERITIES[1:]))
        counts[names[key.lower()]] = int(number)
    return counts


_action_choice = click.Choice(ACTIONS)
_event_options = [
    click.option("--digest", help="The image digest (default: a random sha256 per tag); "
                                  "or write NS/REPO@DIGEST."),
    click.option("--operator", help="Who did it, as the registry reports (an account id) "
                                    "[default: your user name; for replication its --trigger "
                                    "and for tagRetention MANUAL, as Harbor 2.2 to 2.8 write "
                                    "them]."),
    click.option("--host", default="registry.example.com", show_default=True,
                 help="The registry host in resource URLs."),
    click.option("--severity", metavar="SEVERITY", callback=_severity,
                 help="Scans: the highest severity found, one of " + ", ".join(SEVERITIES)
                      + " [default: the highest of --vulnerabilities, else None]; without "
                        "--vulnerabilities, one vulnerability of that severity."),
    click.option("--vulnerabilities", metavar="SEVERITY=N,...", callback=_vulnerabilities,
                 help="Scans: how many were found per severity, e.g. High=2,Low=5."),
    click.option("--scanner", metavar="NAME", help="Scans: the scanner [default: Trivy]."),
    click.option("--status", metavar="TEXT",
                 help="Scans: Success, Error or Stopped [default: by action]; replication: "
                      "Success, Error, Stopped or Running [default: Success; a Success lists "
                      "the artifact copied, an Error the one that failed]; tagRetention: the "
                      "result [default: SUCCESS, the only one Harbor writes]."),
    click.option("--details", metavar="TEXT",
                 help="Quota events: the registry's text [default: a realistic one]."),
    click.option("--trigger", metavar="TEXT",
                 help="Replication: MANUAL, SCHEDULE or EVENT, as Harbor 2.2+ writes it "
                      "[default: MANUAL]; it is also the operator unless --operator is given."),
    click.option("--project", metavar="NS",
                 help="Replication and tagRetention: the project [tagRetention default: library]."),
    click.option("--retained", type=int, metavar="N",
                 help="tagRetention: artifacts kept [default: 0]."),
    click.option("--deleted", multiple=True, metavar="REPO:TAG",
                 help="tagRetention: an artifact it deleted, e.g. api:v0.9; repeatable."),
]
_formats = click.Choice(list(FORMATS))


def _with_event_options(fn: F) -> F:
    return _apply(_event_options, fn)


_REF_HELP = """
    REF is what the event is about:

    \b
      NS/REPO                the tag latest
      NS/REPO:TAG[,TAG...]   image tags; chart versions for chart actions
      NS/REPO@DIGEST         an artifact pushed (pulled...) by digest, without a tag
      NS/REPO:TAG@DIGEST     a tag and its digest (the same as --digest)

    replication and tagRetention have no REF. Scan events take --severity,
    --vulnerabilities, --scanner and --status; quota events --details; replication
    --status, --trigger and --project; tagRetention --project, --status, --retained and
    --deleted. An option the action does not have is an error, as is a format that has no
    such event (cloudevents has no chart events; tcr no scanningStopped, replication or
    tagRetention).

    Replication and tagRetention bodies are Harbor 2.2 to 2.8's: the operator is the
    replication's trigger (MANUAL, SCHEDULE or EVENT) and a manual retention run's MANUAL
    (a scheduled one's is Schedule), unless --operator is given; from 2.9 Harbor names the
    user instead.
"""


def _check_format(format_: str | None, event: Event) -> None:
    if format_ is not None:
        try:
            wire_format(format_, event)
        except ValueError as exc:
            raise UserError(str(exc)) from None


@main.command(help="""Fire ACTION through the matching rules, as the registry would.
""" + _REF_HELP + """
    Every enabled rule that matches gets one delivery in the rule's format (see `rules
    show`), or in --format for all of them, logged in the trigger log. Prints one line per
    delivery: task id, rule, status, HTTP status and attempts. Exits 1 if any delivery
    failed.

    \b
      receiver emit pushImage prod/app:v1.2.0,latest
      receiver emit pushImage prod/app@sha256:<64 hex> --format harbor
      receiver emit uploadChart charts/web:0.3.1
      receiver emit scanningCompleted prod/app:v1 --vulnerabilities High=2,Low=5
      receiver emit scanningCompleted prod/app:v1 --severity High
      receiver emit quotaWarning prod/app:v1 \\
          --details 'quota usage reach 85%: resource storage used 8.7 GiB of 10.0 GiB'
      receiver emit replication --status Error --trigger SCHEDULE --project prod
      receiver emit tagRetention --project prod --retained 10 --deleted app:v0.9
""")
@click.argument("action", type=_action_choice, metavar="ACTION")
@click.argument("ref", metavar="[REF]", required=False)
@click.option("--format", "format_", type=_formats,
              help="Send every delivery in this format [default: each rule's own format].")
@_with_event_options
@_sender_options
@click.pass_context
def emit(ctx: click.Context, action: str, ref: str | None, format_: str | None, timeout: float,
         attempts: int, backoff: float, as_json: bool, **options: t.Any) -> None:
    event = _event(action, ref, options)
    _check_format(format_, event)
    skipped: list[str] = []

    def skip(rule: TriggerRule, reason: str) -> None:
        # Only a hand-edited store holds such a rule; say so where the user looks.
        skipped.append(rule.name)
        click.echo(f"rule {rule.name} skipped: {reason}", err=True)

    deliveries = _sender(ctx, timeout, attempts, backoff).emit(event, format_, on_skip=skip)
    if not deliveries and not skipped and not as_json:
        click.echo(f"no enabled rule matches {action}" + (f" {ref}" if ref else ""), err=True)
    _report(deliveries, as_json)


@main.command(help="""Send one ACTION event to --url, without any rule.
""" + _REF_HELP + """
    \b
      receiver send pushImage prod/app:v1 --url http://127.0.0.1:8000/webhook \\
          --header 'Authorization: Bearer s3cret' --format cloudevents
      receiver send pushImage prod/app:v1 --url http://127.0.0.1:8000/webhook \\
          --header 'Authentication: s3cret'      # --format tcr: TCR's custom headers
""")
@click.argument("action", type=_action_choice, metavar="ACTION")
@click.argument("ref", metavar="[REF]", required=False)
@click.option("--url", required=True, help="Where to POST.")
@click.option("--header", "headers", multiple=True, metavar="'KEY: VALUE'",
              help="A header to send, e.g. for auth; repeatable.")
@click.option("--format", "format_", type=_formats, default="tcr", show_default=True,
              help="The wire format of the body.")
@_with_event_options
@_sender_options
@click.pass_context
def send(ctx: click.Context, action: str, ref: str | None, url: str, headers: tuple[str, ...],
         format_: str, timeout: float, attempts: int, backoff: float, as_json: bool,
         **options: t.Any) -> None:
    event = _event(action, ref, options)
    _check_format(format_, event)
    parsed = _headers(headers)
    try:
        delivery = _sender(ctx, timeout, attempts, backoff).send(event, url, parsed, format_)
    except RuleError as exc:
        raise UserError(str(exc)) from None
    _report([delivery], as_json)


@main.command()
@click.argument("task_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--header", "headers", multiple=True, metavar="'KEY: VALUE'",
              help="Headers for a task sent without a rule (their values are never logged).")
@_sender_options
@click.pass_context
def redeliver(ctx: click.Context, task_id: int, headers: tuple[str, ...], timeout: float,
              attempts: int, backoff: float, as_json: bool) -> None:
    """Send the logged body of TASK_ID again, as a new trigger-log row.

    A rule's task goes to the rule's current URL with its current headers.
    """
    parsed = _headers(headers)
    try:
        delivery = _sender(ctx, timeout, attempts, backoff).redeliver(task_id, parsed)
    except (NotFound, ValueError) as exc:
        raise UserError(str(exc)) from None
    _report([delivery], as_json)


@main.command()
@click.argument("rule", required=False)
@click.option("--status", type=click.Choice(STATUSES), help="Only rows with this status.")
@click.option("--limit", type=click.IntRange(1, 2**63 - 1), default=20, show_default=True,
              help="At most this many rows, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON, bodies included.")
@click.pass_context
def logs(ctx: click.Context, rule: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Show the trigger log, newest first, for every rule or for RULE."""
    store = _store(ctx)
    rows = store.list_deliveries(rule=rule, status=status, limit=limit)
    if rule is not None and not rows:
        try:
            store.get_rule(rule)
        except NotFound:
            raise UserError(f"no rule named {rule!r}, and no trigger log for one") from None
    if as_json:
        emit_json([d.to_dict() for d in rows])
        return
    if not rows:
        click.echo("the trigger log is empty" + (" for that selection" if rule or status else ""),
                   err=True)
        return
    table = [("TASK", "RULE", "ACTION", "REPOSITORY", "TAGS", "STATUS", "HTTP", "ATTEMPTS",
              "CREATED", "ERROR")]
    for d in rows:
        table.append((d.task_id, d.rule or "-", d.action, d.repository or "-", ",".join(d.tags) or "-",
                      d.status, d.http_status or "-", d.attempts, d.created_at, d.error or ""))
    _print_table(table)


# --- checking bodies ----------------------------------------------------------------------

#: How many problems a text line lists before it counts the rest (--json lists them all).
_MAX_SHOWN = 20


@dataclasses.dataclass(frozen=True)
class _Verdict:
    """What `receiver validate` found in one file."""

    file: str
    status: str  # "ok", "invalid" or "ignored" (a type no format knows: the receiver's 202)
    format: str | None = None
    type: str | None = None  # the body's wire type, as written (PUSH_ARTIFACT...)
    action: str | None = None
    repository: str | None = None
    tags: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    unknown_keys: tuple[str, ...] | None = None  # None: not looked for (no --strict)

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "file": self.file, "ok": self.status == "ok", "status": self.status,
            "format": self.format, "type": self.type, "action": self.action,
            "repository": self.repository,
            "tags": list(self.tags), "errors": list(self.errors),
            "unknown_keys": None if self.unknown_keys is None else list(self.unknown_keys),
        }

    def line(self) -> str:
        name = printable(self.file)
        if self.status == "ok":
            what = self.action or ""
            if self.repository is not None:
                what += f" {printable(self.repository)} tags={printable(','.join(self.tags)) or '-'}"
            return f"{name}: ok {what} ({self.format})"
        if self.status == "ignored":
            return f"{name}: ignored: {self.errors[0]}"
        problems = [*self.errors, *(f"unknown key {k}" for k in self.unknown_keys or ())]
        shown = "; ".join(printable(p) for p in problems[:_MAX_SHOWN])
        more = len(problems) - _MAX_SHOWN
        return f"{name}: invalid: {shown}" + (f"; and {more} more" if more > 0 else "")


def _paths(messages: t.Any, path: str = "") -> list[str]:
    """marshmallow's nested ``messages`` as ``path: message`` items, e.g.
    ``event_data.resources[0].digest: Not a valid digest...``."""
    if isinstance(messages, dict):
        out = []
        for key, value in messages.items():
            if key == "_schema":
                sub = path
            elif isinstance(key, int):
                sub = f"{path}[{key}]"
            elif isinstance(key, str) and key.isidentifier():
                sub = f"{path}.{key}" if path else key
            else:  # a key of a mapping (a scan report's media type): as strict.py writes it
                sub = f"{path}[{key!r}]"
                if isinstance(value, dict) and set(value) <= {"key", "value"}:
                    for part, inner in value.items():
                        out += _paths(inner, sub if part == "value" else f"{sub} (key)")
                    continue
            out += _paths(value, sub)
        return out
    if isinstance(messages, list):
        return [item for m in messages for item in _paths(m, path)]
    return [f"{path}: {messages}" if path else str(messages)]


def _check(name: str, raw: bytes, format_: str, strict: bool) -> _Verdict:
    """The verdict the receiver would reach on *raw* (and, with *strict*, its unknown keys)."""
    from ..web.endpoint import Rejection, decode  # the receiver's own rules for a body
    from ..core.formats import detect, guess
    from ..core.formats.strict import unknown_keys
    from ..core.schemas import UnknownAction, ValidationError, load_event

    try:
        _, data = decode(raw)
    except Rejection as exc:
        return _Verdict(name, "invalid", errors=(exc.reason,))
    fmt = FORMATS[format_] if format_ != "auto" else detect(data)
    kind = data.get("type") if isinstance(data, dict) else None
    kind = kind if isinstance(kind, str) else None  # every format's type is under "type"
    try:
        event = load_event(data, format_)
    except UnknownAction as exc:
        # No action: the receiver runs no handler. The type says what came.
        return _Verdict(name, "ignored", format=exc.format, type=exc.action,
                        errors=(f"unknown type {exc.action!r}",))
    except ValidationError as exc:
        errors = tuple(_paths(exc.messages))
        unknown = tuple(unknown_keys(fmt, data)) if strict and fmt else (() if strict else None)
        return _Verdict(name, "invalid", format=fmt.name if fmt else
                        (guess(data) if isinstance(data, dict) else None), type=kind,
                        action=fmt.types.get(kind) if fmt and kind is not None else None,
                        errors=errors, unknown_keys=unknown)
    except RecursionError:
        return _Verdict(name, "invalid", type=kind, errors=("nested too deeply",))
    full_name, tags = subject(event)
    unknown = tuple(unknown_keys(FORMATS[event.format], data)) if strict else None
    return _Verdict(name, "invalid" if unknown else "ok", format=event.format, type=kind,
                    action=event.action, repository=full_name or None, tags=tags,
                    unknown_keys=unknown)


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"cannot read {printable(name)}: {exc.strerror or exc}") from None


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...",
                type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--format", "format_", type=click.Choice(["auto", *FORMATS]), default="auto",
              show_default=True,
              help="Accept this format only; auto detects it from the body, as the receiver does.")
@click.option("--strict", is_flag=True,
              help="Also report every key the format does not declare, at any depth, as "
                   "invalid: the registry's payload has grown past this version.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list with one object per file: file, ok, status, format, "
                   "type (the body's own), action (null unless a format knows the type), "
                   "repository, tags, errors, unknown_keys.")
def validate(files: tuple[str, ...], format_: str, strict: bool, as_json: bool) -> None:
    """Check webhook bodies (JSON files; - reads standard input) as the receiver would.

    Prints one line per file:

    \b
      body.json: ok pushImage prod/api tags=v1 (harbor)
      bad.json: invalid: event_data.resources[0].digest: Not a valid digest...
      new.json: ignored: unknown type 'ARTIFACT_LABELED'

    An unknown type is what the receiver answers 202 "ignored" to: no handler runs. Exits 0
    when every file is ok, 1 when one is invalid or ignored, 2 on a usage error (a file
    that does not exist). A CloudEvent in binary mode (ce-* headers) has no file form.

    \b
      receiver validate samples/*.json --strict
      curl -s https://example.com/hook.json | receiver validate - --format cloudevents
    """
    verdicts = [_check(name, _read(name), format_, strict) for name in files]
    if as_json:
        emit_json([v.to_dict() for v in verdicts])
    else:
        for v in verdicts:
            click.echo(v.line())
    if any(v.status != "ok" for v in verdicts):
        raise SystemExit(1)


@main.command()
@click.option("--format", "format_", type=click.Choice(list(FORMATS)),
              help="One format's schema [default: an object mapping each format to its schema].")
def schema(format_: str | None) -> None:
    """Print the JSON Schema (draft 2020-12) of a wire format's bodies.

    Generated from the declaration the receiver loads bodies with, for contract tests and
    for tools in other languages.

    \b
      receiver schema --format harbor > harbor.schema.json
    """
    from ..core.formats.jsonschema import json_schema

    if format_ is not None:
        emit_json(json_schema(FORMATS[format_]))
    else:
        emit_json({name: json_schema(fmt) for name, fmt in FORMATS.items()})


# --- the receiver's queue ------------------------------------------------------------------

_QUEUE_HELP = ("The receiver's queue: sqlite:///PATH or redis://HOST:PORT/DB "
               "[default: sqlite under $XDG_DATA_HOME/receiver].")
_queue_option = click.option("--queue", "queue_url", envvar="RECEIVER_QUEUE", show_envvar=True,
                             metavar="URL", help=_QUEUE_HELP)


def _queue(ctx: click.Context, url: str | None, existing: bool = False) -> Queue:
    """The queue at *url*, opened once per command.

    :param existing: refuse an SQLite file that does not exist, rather than create one.
    """
    if url == "sync":
        raise UserError("RECEIVER_QUEUE is 'sync': handlers run in the request and there is no "
                        "queue; give --queue URL")
    try:
        queue = open_queue(url)
    except QueueError as exc:
        raise UserError(str(exc)) from None
    path = getattr(queue, "path", None)
    if existing and path is not None and not path.exists():
        raise UserError(f"no queue at {path}: a server creates it when it starts; is "
                        "--queue (RECEIVER_QUEUE) what the server uses?")
    ctx.call_on_close(queue.close)
    return queue


@main.command()
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Jobs run at once.")
@_queue_option
@click.pass_context
def worker(ctx: click.Context, threads: int, queue_url: str | None) -> None:
    """Run the receiver's handler jobs in the foreground, until Ctrl-C or SIGTERM.

    For servers started with RECEIVER_WORKERS=0, which only queue. It imports the same
    RECEIVER_HANDLERS as the servers (from the current directory too, as gunicorn does)
    and reads the same RECEIVER_* settings (attempts, backoff, lease). On Ctrl-C or SIGTERM
    it stops taking jobs, lets the running ones finish, and leaves the rest queued.
    """
    from flask import Flask

    from ..web.app import ConfigError, configure_logging, import_handlers, load_config
    from ..handlers.runner import make_pool

    queue = _queue(ctx, queue_url)
    config = load_config({"RECEIVER_WORKERS": threads})
    if not config.get("RECEIVER_HANDLERS"):
        raise UserError("RECEIVER_HANDLERS is not set: a worker runs the handlers the servers "
                        "queue jobs for, so it needs the same handler modules")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        configure_logging(config.get("RECEIVER_LOG_LEVEL"))
        modules = import_handlers(config["RECEIVER_HANDLERS"])
        app = Flask("receiver")  # the sender of the handlers' signals, as in a server
        app.config.update(config)
        pool = make_pool(app, queue, config)
    except ConfigError as exc:
        raise UserError(f"configuration error: {exc}") from None
    queue.check()
    pool.start()
    click.echo(f"worker: {threads} thread(s) on {queue.url}, handlers from "
               f"{', '.join(modules)}; Ctrl-C to stop", err=True)
    try:
        threading.Event().wait()
    except (KeyboardInterrupt, _Terminated):
        click.echo("worker: stopping; waiting for the running jobs", err=True)
    finally:
        pool.stop()
    click.echo("worker: stopped", err=True)


@main.group(invoke_without_command=True)
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs with this status.")
@click.option("--event", "event_id", metavar="ID",
              help="Only the jobs of this event: its id, or the id's beginning as the table shows.")
@click.option("--handler", metavar="NAME", help="Only jobs of this handler (module.function).")
@click.option("--limit", type=click.IntRange(1, 100000), default=20, show_default=True,
              help="At most this many jobs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@_queue_option
@click.pass_context
def jobs(ctx: click.Context, status: str | None, event_id: str | None, handler: str | None,
         limit: int, as_json: bool, queue_url: str | None) -> None:
    """List the receiver's handler jobs, newest first; `jobs show` and `jobs retry` below.

    \b
      receiver jobs --status dead
      receiver jobs show 12
      receiver jobs retry --dead
    """
    ctx.ensure_object(dict)["queue_url"] = queue_url
    if ctx.invoked_subcommand is not None:
        return
    queue = _queue(ctx, queue_url, existing=True)
    if event_id is not None and len(event_id) < 32:
        event_id = _full_event_id(queue, event_id)
    found = queue.jobs(status=status, event_id=event_id, handler=handler, limit=limit)
    if as_json:
        emit_json([job.to_json() for job in found])
        return
    if not found:
        click.echo("no jobs" + (" for that selection" if status or event_id or handler else ""),
                   err=True)
        return
    table = [("JOB", "EVENT", "HANDLER", "ACTION", "REPOSITORY", "TAGS", "STATUS", "ATTEMPTS",
              "UPDATED", "ERROR")]
    for job in found:
        # A succeeded job's last error is history: --json and `jobs show` keep it.
        error = "" if job.status == "succeeded" else job.error or ""
        table.append((job.job_id, job.event_id[:12], job.handler, job.action, job.repository or "-",
                      ",".join(job.tags) or "-", job.status, job.attempts, iso(job.updated_at),
                      error))
    _print_table(table)


def _full_event_id(queue: Queue, prefix: str) -> str:
    """The event id that *prefix* begins, among the newest jobs; a UserError if ambiguous."""
    ids = {job.event_id for job in queue.jobs(limit=10000) if job.event_id.startswith(prefix)}
    if len(ids) > 1:
        raise UserError(f"event id {prefix!r} is ambiguous: give more of it")
    return ids.pop() if ids else prefix


# The subcommands' own --queue reads no environment variable: the group's --queue (or
# RECEIVER_QUEUE) applies unless it is given here.
_sub_queue_option = click.option("--queue", "queue_url", metavar="URL", help=_QUEUE_HELP)


def _queue_of(ctx: click.Context, queue_url: str | None) -> Queue:
    return _queue(ctx, queue_url or ctx.obj.get("queue_url"), existing=True)


@jobs.command("show")
@click.argument("job_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--json", "as_json", is_flag=True, help="Print the job, its event's body included.")
@_sub_queue_option
@click.pass_context
def jobs_show(ctx: click.Context, job_id: int, as_json: bool, queue_url: str | None) -> None:
    """Show one job: its handler, status, attempts, last error and the event's body."""
    job = _queue_of(ctx, queue_url).job(job_id)
    if job is None:
        raise UserError(f"no job {job_id}")
    body = _body(job)
    if as_json:
        emit_json({**job.to_json(), "body": body})
        return
    for key, value in job.to_json().items():
        if key == "tags":
            value = ",".join(value) or "-"
        click.echo(f"{key + ':':12} {'-' if value is None else value}")
    if job.status == "queued" and job.run_at is not None:
        click.echo(f"{'next run:':12} {iso(job.run_at)}")
    click.echo("body:")
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


def _body(job: Job) -> t.Any:
    try:
        return json.loads(job.body or "null")
    except ValueError:
        return job.body


@jobs.command("retry")
@click.argument("job_ids", nargs=-1, type=click.IntRange(1, 2**63 - 1), metavar="JOB_ID...")
@click.option("--dead", "every_dead", is_flag=True, help="Queue every dead job again.")
@_sub_queue_option
@click.pass_context
def jobs_retry(ctx: click.Context, job_ids: tuple[int, ...], every_dead: bool,
               queue_url: str | None) -> None:
    """Queue dead jobs again with their attempts reset: JOB_ID... or --dead for all.

    A running server or `receiver worker` picks them up within a second.
    """
    if job_ids and every_dead:
        raise UserError("give JOB_ID... or --dead, not both")
    if not job_ids and not every_dead:
        raise UserError("give the JOB_IDs to queue again, or --dead for every dead job")
    queue = _queue_of(ctx, queue_url)
    queued = queue.requeue(None if every_dead else job_ids)
    for job_id in queued:
        click.echo(f"job {job_id} queued again")
    if every_dead and not queued:
        click.echo("no dead jobs", err=True)
    missed = [job_id for job_id in job_ids if job_id not in queued]
    for job_id in missed:
        job = queue.job(job_id)
        reason = "no such job" if job is None else f"it is {job.status}, not dead"
        click.echo(f"error: job {job_id} not queued again: {reason}", err=True)
    if missed:
        raise SystemExit(1)


def _print_table(rows: list[tuple[t.Any, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
