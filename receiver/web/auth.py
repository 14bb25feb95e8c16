"""Header authentication: TCR sends fixed ``Key: Value`` headers, not signatures.

Pure functions over a header mapping. Values are compared in constant time, and no message
made here ever contains a configured value.
"""

from __future__ import annotations

import hmac
import json
import typing as t

if t.TYPE_CHECKING:
    from werkzeug.datastructures import Headers

from ..core.text import is_header_name

__all__ = ["AuthConfigError", "HeaderAuth", "parse_auth_headers"]


class AuthConfigError(ValueError):
    """The auth header setting is malformed; the message says how, never with a secret."""


_NOT_JSON = object()


def _json_kind(value: t.Any) -> str:
    return {str: "string", list: "array", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def parse_auth_headers(setting: t.Any, name: str = "RECEIVER_AUTH_HEADERS"
                       ) -> dict[str, tuple[bytes, ...]]:
    """Normalise ``RECEIVER_AUTH_HEADERS`` (or the setting *name*): header name to one value
    or a list of values.

    Accepts a mapping, or its JSON text. Returns names mapped to the accepted values, encoded
    as UTF-8 for :func:`hmac.compare_digest`.
    """
    if setting is None or setting == "":
        return {}
    if isinstance(setting, (str, bytes)):
        try:
            setting = json.loads(setting)
        except ValueError:
            setting = _NOT_JSON
    if not isinstance(setting, t.Mapping):
        what = "text that is not JSON" if setting is _NOT_JSON else f"a JSON {_json_kind(setting)}"
        raise AuthConfigError(
            f"{name} must be a JSON object mapping header names to a value or a "
            f'list of values, such as {{"Authentication": "value"}}; got {what}'
        )
    out: dict[str, tuple[bytes, ...]] = {}
    seen: dict[str, str] = {}
    for header, values in setting.items():
        if not isinstance(header, str) or not is_header_name(header):
            raise AuthConfigError(f"{name}: {header!r} is not a valid header name")
        if header.lower() in seen:
            raise AuthConfigError(
                f"{name}: headers {seen[header.lower()]!r} and {header!r} are the same header "
                "(names are case-insensitive); list its accepted values once"
            )
        seen[header.lower()] = header
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, (list, tuple)) or not values:
            raise AuthConfigError(
                f"{name}: header {header!r} needs a value or a non-empty list of values"
            )
        encoded = []
        for value in values:
            if not isinstance(value, str) or not value:
                raise AuthConfigError(
                    f"{name}: every value of header {header!r} must be a non-empty string"
                )
            if "\r" in value or "\n" in value:
                raise AuthConfigError(
                    f"{name}: a value of header {header!r} contains CR or LF"
                )
            if any((ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in value):
                raise AuthConfigError(
                    f"{name}: a value of header {header!r} contains a control character, "
                    "which no HTTP request can carry"
                )
            if value != value.strip(" \t"):
                raise AuthConfigError(
                    f"{name}: a value of header {header!r} begins or ends with white space, "
                    "which HTTP strips from every header: no request could match it"
                )
            encoded.append(value.encode("utf-8"))
        out[header] = tuple(encoded)
    return out


class HeaderAuth:
    """Checks that every configured header is present with one of its accepted values.

    :param headers: header name to accepted values, as :func:`parse_auth_headers` returns.
    """

    __slots__ = ("_required",)

    def __init__(self, headers: t.Mapping[str, t.Sequence[bytes]]) -> None:
        self._required = tuple((name, tuple(values)) for name, values in headers.items())

    @property
    def enabled(self) -> bool:
        """False when no header is configured, so every request is accepted."""
        return bool(self._required)

    @property
    def header_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self._required)

    def check(self, headers: t.Mapping[str, str] | Headers) -> str | None:
        """``None`` when *headers* pass; otherwise the reason, naming the header only.

        :param headers: the request's headers; lookups must be case-insensitive, as Werkzeug's
            ``request.headers`` are.
        """
        for name, accepted in self._required:
            got = headers.get(name)
            if got is None:
                return f"missing auth header {name!r}"
            # Latin-1 round-trips what the WSGI server decoded; compare every accepted value
            # so the time taken does not tell which one was close.
            candidate = got.encode("latin-1", "replace")
            ok = False
            for value in accepted:
                ok |= hmac.compare_digest(candidate, value)
            if not ok:
                return f"wrong value for auth header {name!r}"
        return None
