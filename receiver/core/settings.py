"""Reading ``RECEIVER_*`` settings: the error that names a wrong one, and the checked
number. Shared by the receiver (:mod:`receiver.web.settings`) and the sender's store, so
that one setting (``RECEIVER_LOG_RETENTION``) is read and refused alike on both sides.
Imports nothing of the package."""

from __future__ import annotations

import math
import typing as t

__all__ = ["MAX_SECONDS", "ConfigError", "number"]


class ConfigError(ValueError):
    """A ``RECEIVER_*`` setting is wrong; the message names it and never holds a secret."""


#: The largest number of seconds a setting takes: ten years.
MAX_SECONDS = 10 * 365 * 86400


def number(config: t.Mapping[str, t.Any], key: str, default: float, *, minimum: float,
           maximum: float = MAX_SECONDS, integer: bool = False, above: bool = False) -> t.Any:
    """The numeric setting *key*, checked: at least *minimum* (or above it), at most
    *maximum*."""
    value = config.get(key, default)
    if isinstance(value, str):
        try:
            value = float(value) if not integer else int(value)
        except ValueError:
            pass
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer and value != int(value):
        ok = False
    if ok and (value <= minimum if above else value < minimum):
        ok = False
    if ok and value > maximum:
        ok = False
    if not ok:
        kind = "a whole number" if integer else "a number"
        bound = f"above {_shown(minimum)}" if above else f"at least {_shown(minimum)}"
        raise ConfigError(f"{key} must be {kind} {bound} and at most {_shown(maximum)}, "
                          f"got {value!r}")
    return int(value) if integer else float(value)


def _shown(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"
