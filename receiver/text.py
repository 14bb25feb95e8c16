"""Untrusted text made safe for a log line. Imports nothing of the package."""

from __future__ import annotations

import typing as t

__all__ = ["printable"]


def printable(value: t.Any) -> str:
    """*value* for a log line: as is when printable, else its repr, so that a newline (or a
    C1 control such as NEL, which ``str.splitlines`` also splits on) in a repository name,
    tag, type or content type cannot forge log lines."""
    text = str(value)
    return text if text.isprintable() else repr(text)
