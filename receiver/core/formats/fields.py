"""The field and validator types the wire formats are declared with.

Each knows its JSON Schema fragment (``json_schema``), so that :mod:`.jsonschema` can write
the schema of a format from the same declaration that loads and dumps it. The rules are those
of JSON itself: an integer may be written ``3.0`` (JSON Schema says so too), a boolean is
never a number, and a pattern is searched for as the ``jsonschema`` package does.
"""

from __future__ import annotations

import math
import re
import typing as t
from datetime import datetime, timezone

from marshmallow import ValidationError, fields

__all__ = [
    "RFC3339",
    "Bool",
    "Int",
    "Pattern",
    "TagOrDigest",
    "TextOrInt",
    "UnixTime",
    "is_integral",
    "whole",
]

# Unix seconds from 1970 up to the last second of year 9999, the range datetime can hold.
MAX_SECONDS = 253402300799


def whole(pattern: str) -> str:
    """A JSON Schema ``pattern`` that matches the whole value, alike in Python's ``re``
    (whose ``$`` also matches before a final newline) and in ECMA-262 (which JSON Schema
    specifies): ``^(?:...)(?!\n)$``."""
    return rf"^(?:{pattern})(?!\n)$"


def is_integral(value: t.Any) -> t.TypeGuard[int | float]:
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value) and value.is_integer()


class Int(fields.Field):
    """A JSON integer (``3`` or ``3.0``, never ``true``), loaded as ``int``."""

    json_schema: t.ClassVar[dict[str, t.Any]] = {"type": "integer"}
    default_error_messages = {"invalid": "Not a valid integer."}  # noqa: RUF012

    def _serialize(self, value: t.Any, attr: t.Any, obj: t.Any, **kwargs: t.Any) -> t.Any:
        return value

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> int:
        if not is_integral(value):
            raise self.make_error("invalid")
        return int(value)


class Bool(fields.Field):
    """A JSON boolean, nothing else (marshmallow's Boolean also takes ``"yes"`` and ``1``)."""

    json_schema: t.ClassVar[dict[str, t.Any]] = {"type": "boolean"}
    default_error_messages = {"invalid": "Not a valid boolean."}  # noqa: RUF012

    def _serialize(self, value: t.Any, attr: t.Any, obj: t.Any, **kwargs: t.Any) -> t.Any:
        return value

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> bool:
        if type(value) is not bool:
            raise self.make_error("invalid")
        return value


class UnixTime(fields.Field):
    """Whole Unix seconds on the wire; a timezone-aware UTC datetime in Python."""

    json_schema: t.ClassVar[dict[str, t.Any]] = {
        "type": "integer", "minimum": 0, "maximum": MAX_SECONDS,
        "description": "Unix time, whole seconds",
    }
    default_error_messages = {  # noqa: RUF012
        "invalid": "Not a valid Unix time: expected whole seconds as a number.",
        "range": "Unix time out of range.",
    }

    def _serialize(
        self, value: datetime | None, attr: t.Any, obj: t.Any, **kwargs: t.Any
    ) -> int | None:
        return None if value is None else int(value.timestamp())

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> datetime:
        if not is_integral(value):
            raise self.make_error("invalid")
        if not 0 <= value <= MAX_SECONDS:
            raise self.make_error("range")
        return datetime.fromtimestamp(int(value), tz=timezone.utc)


class TextOrInt(fields.Field):
    """A string or an integer, as it came (a scan severity: a name, or Harbor 1.9's number)."""

    json_schema: t.ClassVar[dict[str, t.Any]] = {"type": ["string", "integer"]}
    default_error_messages = {"invalid": "Not a string or an integer."}  # noqa: RUF012

    def _serialize(self, value: t.Any, attr: t.Any, obj: t.Any, **kwargs: t.Any) -> t.Any:
        return value

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> t.Any:
        if type(value) is not str and not is_integral(value):
            raise self.make_error("invalid")
        return value


# RFC 3339's date-time, as CloudEvents' "time" (leap seconds aside: Python has none). Years
# 1000 to 8999, so that any offset stays within what a datetime holds.
_RFC3339 = whole(
    r"[1-8][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
_rfc3339 = re.compile(_RFC3339)


class RFC3339(fields.Field):
    """An RFC 3339 date-time (``2026-11-27T08:00:00Z``); a timezone-aware UTC datetime."""

    json_schema: t.ClassVar[dict[str, t.Any]] = {
        "type": "string", "format": "date-time", "pattern": _RFC3339,
    }
    default_error_messages = {  # noqa: RUF012
        "invalid": "Not an RFC 3339 date-time, such as 2026-11-27T08:00:00Z."}

    def _serialize(
        self, value: datetime | None, attr: t.Any, obj: t.Any, **kwargs: t.Any
    ) -> str | None:
        if value is None:
            return None
        # Whole seconds as Harbor writes them; a received fraction is kept.
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"

    def _deserialize(self, value: t.Any, attr: t.Any, data: t.Any, **kwargs: t.Any) -> datetime:
        if type(value) is not str or not _rfc3339.search(value):
            raise self.make_error("invalid")
        text = value.upper().replace("Z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:  # Python takes at most 6 fractional digits
            digits = rest[:-6]
            text = f"{head}.{digits[:6].ljust(6, '0')}{rest[-6:]}"
        try:
            return datetime.fromisoformat(text).astimezone(timezone.utc)
        except ValueError:  # the 30th of February
            raise self.make_error("invalid") from None


class Pattern:
    """A string validator: *pattern* must be found in the value (``re.search``, as JSON
    Schema's ``pattern``); use :func:`whole` to match the whole value."""

    def __init__(self, pattern: str, error: str) -> None:
        self.regex = re.compile(pattern)
        self.error = error
        self.json_schema = {"pattern": pattern}

    def __call__(self, value: str) -> str:
        if not self.regex.search(value):
            raise ValidationError(self.error)
        return value


class TagOrDigest:
    """A tag of at most *max_length* characters, or a digest (Harbor 2.x sends an untagged
    artifact's digest as its tag, and a ``sha512`` digest is longer than a tag may be)."""

    def __init__(self, max_length: int, digest: str) -> None:
        self.max_length = max_length
        self.digest = re.compile(digest)
        self.json_schema = {"anyOf": [{"maxLength": max_length}, {"pattern": digest}]}

    def __call__(self, value: str) -> str:
        if len(value) > self.max_length and not self.digest.search(value):
            raise ValidationError(f"Longer than {self.max_length} characters.")
        return value
