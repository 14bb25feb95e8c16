"""The registry's side: ``rules``, ``emit``, ``send``, ``redeliver`` and ``logs``.

Domain errors (a bad rule, an unknown rule or task, a damaged store row) are not caught here:
:mod:`receiver.cli.common` turns them into the one-line ``error:``.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import threading
import typing as t

import click

from ..core.events import (
    ACTIONS,
    REPOSITORY_ACTIONS,
    SEVERITIES,
    Event,
    build_event,
    parse_reference,
)
from ..core.formats import FORMATS
from ..core.text import printable
from ..registry.rules import DEFAULT_ACTIONS, TriggerRule, display_url, parse_header
from ..registry.sender import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    DEFAULT_TIMEOUT,
    MAX_SECONDS,
    Sender,
    wire_format,
)
from ..registry.store import (
    STATUSES,
    Attempt,
    Delivery,
    NotFound,
    Store,
    default_db_path,
)
from .common import F, UserError, _finite, _print_table, emit_json

# --- trigger rules ------------------------------------------------------------------------

def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _store(ctx: click.Context, *, create: bool = False) -> Store:
    """The store named by --db / RECEIVER_DB, opened (and tidied) once per command.

    :param create: make it if it does not exist (``rules create``, ``send``). Any other
        command reads a missing store as an empty one, without making it or its directories:
        a mistyped RECEIVER_DB must not leave stores about.
    """
    obj = ctx.ensure_object(dict)
    if "store" not in obj:
        path = obj.get("db") or default_db_path()
        opened = path if create or os.path.exists(path) else ":memory:"
        try:
            obj["store"] = Store(opened, on_warning=_warn)
        except OSError as exc:
            raise UserError(f"cannot open the store {path}: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:
            raise UserError(f"cannot open the store {path}: {exc}") from None
        ctx.call_on_close(obj["store"].close)
    return t.cast(Store, obj["store"])


def _headers(values: t.Iterable[str]) -> tuple[tuple[str, str], ...]:
    return tuple(parse_header(v) for v in values)


def _apply(options: t.Sequence[t.Callable[[t.Any], t.Any]], fn: F) -> F:
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
            options.append(click.option("--clear-headers", is_flag=True,
                                        help="Remove every header."))
        return _apply(options, fn)

    return decorate


@click.group()
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
    rule = TriggerRule(
        name=name, url=url, actions=actions or None,  # type: ignore[arg-type]
        namespace=namespace or None, repository=repository or "", tag=tag or "",
        headers=_headers(headers), description=description or "", enabled=not disabled,
        format=format_ or "tcr",
    )
    _store(ctx, create=True).add_rule(rule)
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
    rule = store.get_rule(name)
    if not changes:
        raise UserError(f"nothing to change in rule {name}: give the fields to change, such as "
                        "--url or --tag (see --help)")
    store.save_rule(rule.replace(**changes))
    click.echo(f"updated rule {name}")


def _set_enabled(ctx: click.Context, name: str, enabled: bool) -> None:
    store = _store(ctx)
    store.save_rule(store.get_rule(name).replace(enabled=enabled))
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
    _store(ctx).delete_rule(name)
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
                      r.namespace or "*", r.repository or "*", r.tag or "*",
                      printable(display_url(r.url))))
    _print_table(table)


@rules.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (header values masked).")
@click.pass_context
def rules_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show every field of the rule NAME; header values are masked."""
    data = _store(ctx).get_rule(name).to_dict()
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
        click.echo(f"{key + ':':<13}{printable(value)}")


# --- sending ------------------------------------------------------------------------------

def _sender_options(fn: F) -> F:
    options = [
        click.option("--timeout", type=click.FloatRange(0.001, MAX_SECONDS),
                     default=DEFAULT_TIMEOUT, callback=_finite,
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


def _sender(ctx: click.Context, timeout: float, attempts: int, backoff: float,
            as_json: bool, *, create: bool = False) -> Sender:
    """A sender that says what happens as it happens: a line on stdout as each delivery
    ends (not with --json, whose stdout is the JSON alone), a line on stderr for each
    attempt that will be tried again."""
    lock = threading.Lock()

    def done(delivery: Delivery) -> None:
        if not as_json:
            with lock:
                click.echo(_line(delivery))

    def retry(delivery: Delivery, attempt: Attempt, delay: float) -> None:
        answer = _snippet(attempt.answer_text(), 100)
        with lock:
            click.echo(
                f"task {delivery.task_id}  rule {delivery.rule or '-'}  attempt "
                f"{attempt.attempt} of {attempts} failed: {attempt.error}"
                + (f" (answer: {answer})" if answer else "")
                + f"; next try in {_seconds(delay)}",
                err=True,
            )

    sender = Sender(_store(ctx, create=create), timeout=timeout, attempts=attempts,
                    backoff=backoff,
                    on_done=done, on_retry=retry)
    ctx.call_on_close(sender.close)
    return sender


def _line(d: Delivery) -> str:
    """A delivery's line: task id, rule, status, HTTP status, attempts, and what went wrong."""
    http = f"HTTP {d.http_status}" if d.http_status is not None else "no answer"
    error = f"  ({d.error})" if d.error and d.error != f"HTTP {d.http_status}" else ""
    return (f"task {d.task_id}  rule {d.rule or '-'}  {d.status}  {http}  "
            f"attempts {d.attempts}{error}")


def _snippet(text: str, width: int) -> str:
    """*text* on one line, at most *width* characters, safe for a terminal."""
    text = " ".join(text.split())
    if len(text) > width:
        text = text[: width - 3] + "..."
    return text if text.isprintable() else repr(text)[1:-1]


def _seconds(delay: float) -> str:
    return f"{delay:.1f}s" if delay >= 1 else f"{delay * 1000:.0f}ms"


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


def _report(deliveries: list[Delivery], as_json: bool, failed: bool = False) -> None:
    """The end of emit, send and redeliver: the rows as JSON with --json (each line was
    printed as its delivery ended otherwise); exit status 1 if one did not succeed."""
    if as_json:
        emit_json([d.to_dict() for d in deliveries])
    if failed or any(d.status != "success" for d in deliveries):
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


@click.command(help="""Fire ACTION through the matching rules, as the registry would.
""" + _REF_HELP + """
    Every enabled rule that matches gets one delivery in the rule's format (see `rules
    show`), or in --format for all of them, logged in the trigger log. Prints a line per
    delivery as it ends (task id, rule, status, HTTP status, attempts) and, on stderr, a
    line per attempt that will be tried again (what failed, the start of the answer, the
    wait); --json prints the rows instead, at the end. `receiver logs --task ID` shows every
    attempt. Exits 1 if any delivery failed.

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
    broken: list[str] = []

    def skip(rule: TriggerRule, reason: str) -> None:
        # Only a hand-edited store holds such a rule; say so where the user looks.
        skipped.append(rule.name)
        if rule.defect is not None:
            broken.append(rule.name)
        click.echo(f"rule {rule.name} skipped: {reason}", err=True)

    sender = _sender(ctx, timeout, attempts, backoff, as_json)
    deliveries = sender.emit(event, format_, on_skip=skip)
    if not deliveries and not skipped and not as_json:
        click.echo(f"no enabled rule matches {action}" + (f" {ref}" if ref else ""), err=True)
    _report(deliveries, as_json, failed=bool(broken))


@click.command(help="""Send one ACTION event to --url, without any rule.
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
    delivery = _sender(ctx, timeout, attempts, backoff, as_json, create=True).send(
        event, url, parsed, format_)
    _report([delivery], as_json)


@click.command()
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
    delivery = _sender(ctx, timeout, attempts, backoff, as_json).redeliver(task_id, parsed)
    _report([delivery], as_json)


@click.command()
@click.argument("rule", required=False)
@click.option("--task", "task_id", type=click.IntRange(1, 2**63 - 1), metavar="ID",
              help="Show one task: its fields, the body it sent, and each attempt (start, "
                   "duration, HTTP status, error, the first 4 KiB of the answer).")
@click.option("--metrics", is_flag=True,
              help="Print the deliveries by rule and outcome, in Prometheus' text format "
                   "(for node_exporter's textfile collector).")
@click.option("--status", type=click.Choice(STATUSES), help="Only rows with this status.")
@click.option("--limit", type=click.IntRange(1, 2**63 - 1), default=20, show_default=True,
              help="At most this many rows, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON, bodies included.")
@click.pass_context
def logs(ctx: click.Context, rule: str | None, task_id: int | None, metrics: bool,
         status: str | None, limit: int, as_json: bool) -> None:
    """Show the trigger log, newest first, for every rule or for RULE; or one task with
    --task ID; or the delivery counters with --metrics.

    \b
      receiver logs deploy --status failed
      receiver logs --task 42 --json
      cd /var/lib/node_exporter/textfile &&
          receiver logs --metrics > receiver.prom.tmp && mv receiver.prom.tmp receiver.prom

    The log keeps RECEIVER_LOG_RETENTION days (default 30); the counters are never pruned.
    """
    given = [name for name, value in (("RULE", rule), ("--status", status)) if value]
    if ctx.get_parameter_source("limit") is not click.core.ParameterSource.DEFAULT:
        given.append("--limit")
    if task_id is not None and (given or metrics):
        raise UserError(f"--task shows one task: leave out {', '.join(given) or '--metrics'}")
    if metrics and (given or as_json):
        raise UserError("--metrics prints every counter in Prometheus' text format: leave out "
                        + ", ".join(given + (["--json"] if as_json else [])))
    store = _store(ctx)
    if task_id is not None:
        _show_task(store, task_id, as_json)
        return
    if metrics:
        from ..registry.metrics import exposition

        click.echo(exposition(store.delivery_counts(), store.rule_names()), nl=False)
        return
    rows = store.list_deliveries(rule=rule, status=status, limit=limit)
    if rule is not None and not rows:
        try:
            store.get_rule(rule)
        except NotFound:
            hint = f" (to show task {rule}: receiver logs --task {rule})" if rule.isdigit() else ""
            raise NotFound(f"no rule named {rule!r}, and no trigger log for one{hint}") from None
    if as_json:
        emit_json([d.to_dict() for d in rows])
        return
    if not rows:
        click.echo("the trigger log is empty" + (" for that selection" if rule or status else ""),
                   err=True)
        return
    table: list[tuple[t.Any, ...]] = [("TASK", "RULE", "ACTION", "REPOSITORY", "TAGS", "STATUS",
                                       "HTTP", "ATTEMPTS", "CREATED", "ERROR")]
    for d in rows:
        table.append((d.task_id, d.rule or "-", d.action, d.repository or "-",
                      ",".join(d.tags) or "-", d.status, d.http_status or "-", d.attempts,
                      d.created_at, d.error or ""))
    _print_table(table)


def _show_task(store: Store, task_id: int, as_json: bool) -> None:
    """``logs --task``: one row, its body and its attempts."""
    d = store.get_delivery(task_id)
    attempts = store.attempts(task_id)
    if as_json:
        data = d.to_dict()
        data["attempt_log"] = [a.to_dict() for a in attempts]
        emit_json(data)
        return
    body = d.decoded_body()
    for key, value in (
        ("task", d.task_id), ("rule", d.rule or "-"), ("action", d.action),
        ("repository", d.repository or "-"), ("tags", ",".join(d.tags) or "-"),
        ("url", printable(d.url)), ("status", d.status),
        ("http", d.http_status if d.http_status is not None else "-"),
        ("attempts", d.attempts), ("error", d.error or "-"), ("created", d.created_at),
        ("updated", d.updated_at),
    ):
        click.echo(f"{key + ':':<12}{value}")
    click.echo("body:")
    for line in json.dumps(body, indent=2, ensure_ascii=False).splitlines():
        click.echo("  " + line)
    if not attempts:
        click.echo("no attempt logged" + (" (logged before attempts were kept)"
                                         if d.attempts else ""))
        return
    # One block per attempt, its answer whole (up to the 4 KiB kept): the part that says
    # what went wrong (a receiver's "failed": [...]) is often at the end.
    for a in attempts:
        http = a.http_status if a.http_status is not None else "-"
        click.echo(f"attempt {a.attempt}: {a.started_at}  {a.duration_ms:.1f}ms  HTTP {http}"
                   f"  error: {a.error or '-'}")
        answer = a.answer_text()
        click.echo(f"  answer: {_snippet(answer, 4096) if answer else '(none)'}")
