"""Text checks: untrusted text made safe for a log line, and HTTP field names.

Imports nothing of the package."""

from __future__ import annotations

import typing as t

__all__ = ["cut", "field", "hide_userinfo", "is_header_name", "printable"]


def printable(value: t.Any) -> str:
    """*value* for a log line: as is when printable, else its repr, so that a newline (or a
    C1 control such as NEL, which ``str.splitlines`` also splits on) in a repository name,
    tag, type or content type cannot forge log lines."""
    text = str(value)
    return text if text.isprintable() else repr(text)


#: The longest value a log line shows of an untrusted field; the rest is counted.
FIELD_LIMIT = 256


def cut(text: str, limit: int = FIELD_LIMIT) -> str:
    """*text*, or its first *limit* characters and the length it had."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def field(value: t.Any, limit: int = FIELD_LIMIT) -> str:
    """*value* for a ``key=value`` field of a log line: as is when it is printable and has no
    white space, else its repr, so that a repository named ``"api status=401"`` cannot
    forge a field; cut to *limit* characters, with the length it had."""
    text = cut(str(value), limit)
    if text.isprintable() and " " not in text:
        return text
    return repr(text)


def hide_userinfo(url: str) -> str:
    """*url* without what stands between ``//`` and the last ``@``, which may hold a password,
    even one with an unescaped ``/`` or ``@``. An ``@`` in the path or query hides too much:
    the safe side, for messages and for a URL that is refused anyway."""
    scheme, sep, rest = url.partition("//")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}//***@{rest.rsplit('@', 1)[1]}"


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def is_header_name(name: str) -> bool:
    """Whether *name* is a valid HTTP field name (an RFC 9110 token)."""
    return bool(name) and all(c in _TOKEN for c in name)
