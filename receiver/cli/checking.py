"""Checking bodies against the wire formats: ``validate`` and ``schema``."""

from __future__ import annotations

import dataclasses
import os
import sys
import typing as t

import click

from ..core.events import subject
from ..core.formats import FORMATS
from ..core.text import printable
from .common import UserError, emit_json

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
                tags = printable(",".join(self.tags)) or "-"
                what += f" {printable(self.repository)} tags={tags}"
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
    from ..core.formats import detect, guess
    from ..core.formats.strict import unknown_keys
    from ..core.schemas import UnknownAction, ValidationError, load_event
    from ..web.endpoint import Rejection, decode  # the receiver's own rules for a body

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


def _body_limit() -> int:
    """The receiver's body size cap: ``RECEIVER_MAX_BODY`` when it is a number, else 1 MiB."""
    from ..web.app import DEFAULT_MAX_BODY

    given = os.environ.get("RECEIVER_MAX_BODY", "").strip()
    return int(given) if given.isascii() and given.isdigit() and int(given) > 0 \
        else DEFAULT_MAX_BODY


def _read(name: str, limit: int) -> bytes | None:
    """At most *limit* bytes of the file (``-``: standard input); ``None`` when it holds more,
    so that ``validate /dev/zero`` ends at once instead of filling the memory."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise UserError(f"cannot read {printable(name)}: {exc.strerror or exc}") from None
    return None if len(data) > limit else data


@click.command()
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
    limit = _body_limit()
    verdicts = []
    for name in files:
        raw = _read(name, limit)
        if raw is None:  # the receiver answers 413
            verdicts.append(_Verdict(name, "invalid", errors=(
                f"body is larger than the receiver's limit of {limit} bytes "
                "(RECEIVER_MAX_BODY)",)))
        else:
            verdicts.append(_check(name, raw, format_, strict))
    if as_json:
        emit_json([v.to_dict() for v in verdicts])
    else:
        for v in verdicts:
            click.echo(v.line())
    if any(v.status != "ok" for v in verdicts):
        raise SystemExit(1)


@click.command()
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
