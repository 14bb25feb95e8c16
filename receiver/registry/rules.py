"""Trigger rules: the registry's webhook configuration, validated, and the rule matcher.

A :class:`TriggerRule` is checked completely when it is made, patterns included, so a bad
rule never fails later while an event is matched. Storage is :mod:`receiver.registry.store`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing as t
from urllib.parse import urlsplit

from ..core.events import ACTIONS, NAME_COMPONENT, REPOSITORY_ACTIONS, Event, Resource
from ..core.filters import select_resources
from ..core.formats import FORMATS, Format
from ..core.matcher import PatternError, repository_fullmatch, tag_fullmatch
from ..core.text import hide_userinfo, is_header_name

__all__ = [
    "DEFAULT_ACTIONS",
    "FRAMING_HEADERS",
    "RuleError",
    "TriggerRule",
    "carries",
    "check_header",
    "parse_header",
    "select_resources",
    "validate_url",
]

#: The four actions the registry's console offers; a new rule listens to those of them its
#: format carries (a CloudEvents rule: the two image ones).
DEFAULT_ACTIONS: tuple[str, ...] = ("pushImage", "deleteImage", "uploadChart", "deleteChart")


@functools.lru_cache(maxsize=256)
def carries(fmt: Format, action: str) -> bool:
    """Whether the format *fmt* has an event for *action* (CloudEvents has no chart events,
    TCR no replication)."""
    try:
        fmt.wire_type(action)
    except ValueError:
        return False
    return True


_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MASK = "******"


class RuleError(ValueError):
    """A rule, or a value for one, is invalid; the message names the field and the problem."""


def display_url(url: str) -> str:
    """A rule's URL to show: as it is when it is valid, else without anything that may be
    a password (see :func:`~receiver.core.text.hide_userinfo`)."""
    try:
        return validate_url(url)
    except RuleError:
        return hide_userinfo(url)


def _has_userinfo(url: str) -> bool:
    """Whether *url*'s authority (before the first '/', '?' or '#') holds an '@'."""
    _, sep, rest = url.partition("//")
    return bool(sep) and "@" in re.split(r"[/?#]", rest, maxsplit=1)[0]


def _shown(url: str) -> str:
    """*url* for a message: quoted, without credentials."""
    return repr(hide_userinfo(url))


#: A host as a URL writes it: a registered name or IPv4 address (RFC 3986's reg-name, which
#: http.client sends as it is), or an IPv6 address in brackets. Not an IPv6 zone id
#: (``[fe80::1%25eth0]``): http.client cannot connect to one.
_HOST = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\]")


def validate_url(url: str) -> str:
    """Return *url* if it is an absolute http(s) URL fit for a delivery, else raise RuleError.

    Strict, so that a stored URL can always be sent: no white space, control characters (ESC,
    DEL...) or non-ASCII text; http or https; a host; a port from 1 to 65535. Messages never
    show credentials written into the URL.
    """
    if not isinstance(url, str) or not url:
        raise RuleError("url: a target URL is required")
    shown = _shown(url)
    if _has_userinfo(url):
        raise RuleError("url: credentials in the URL are not allowed; send them in a --header")
    if any(c.isspace() for c in url):
        raise RuleError(f"url: {shown} contains white space")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in url):
        raise RuleError(f"url: {shown} contains a control character")
    if not url.isascii():
        raise RuleError(
            f"url: {shown} must be ASCII (write an international host name in punycode)"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RuleError(f"url: {shown} is not a valid URL ({exc})") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https"):
        raise RuleError(f"url: {shown} must start with http:// or https://")
    netloc = parts.netloc  # no user info: refused above
    host = netloc[: netloc.index("]") + 1] if netloc.startswith("[") else netloc.split(":")[0]
    if not parts.hostname or not host:
        raise RuleError(f"url: {shown} has no host")
    if not _HOST.fullmatch(host):
        if host.startswith("[") and "%" in host:
            raise RuleError(f"url: {shown} has an IPv6 zone id ({host!r}), which the sender "
                            "cannot connect to; use a global address or a host name")
        raise RuleError(f"url: {shown} has an invalid host {host!r}")
    if port == 0:
        raise RuleError(f"url: {shown} is not a valid URL (the port must be from 1 to 65535)")
    return url


def parse_header(text: str) -> tuple[str, str]:
    """``'Key: Value'`` as ``(key, value)``; raises RuleError naming what is wrong."""
    key, sep, value = text.partition(":")
    key, value = key.strip(), value.strip()
    if not sep:
        # Not echoed: a header without its colon may well be a secret.
        raise RuleError("a header must be written 'Key: Value' (no ':' found)")
    if not key:
        raise RuleError("a header must be written 'Key: Value' (the name before ':' is empty)")
    return check_header(key, value)


#: Headers that frame the request or the connection: the sender writes them itself, and a
#: second copy (two Content-Lengths, a Connection: close on a kept-alive connection) would
#: garble the request. Lower case.
FRAMING_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive",
    "proxy-connection", "te", "trailer", "upgrade",
})


def check_header(key: str, value: str) -> tuple[str, str]:
    """A header that HTTP can carry: a token name that is not one of the framing headers the
    sender writes itself (:data:`FRAMING_HEADERS`), and a value without control characters
    (sent as UTF-8, which is how the receiver compares configured values).

    Messages name the header and what is wrong, never the value, which may be a secret.
    """
    if not isinstance(key, str) or not is_header_name(key):
        # Not echoed: with a mistyped separator ('Authorization=Bearer x:y') it holds a secret.
        raise RuleError(
            "a header name must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), "
            "written 'Key: Value'"
        )
    if key.lower() in FRAMING_HEADERS:
        raise RuleError(
            f"header {key!r} is not allowed: the sender writes the headers that frame the "
            "request (Host, Content-Length, Transfer-Encoding, Connection) itself"
        )
    if not isinstance(value, str) or not value:
        raise RuleError(f"header {key!r} has an empty value")
    for c in value:
        if c in "\r\n\0":
            raise RuleError(f"header {key!r}: the value may not contain CR, LF or NUL")
        if (ord(c) < 0x20 and c != "\t") or 0x7F <= ord(c) < 0xA0:
            raise RuleError(f"header {key!r}: the value may not contain control characters")
    return key, value


@dataclasses.dataclass(frozen=True)
class TriggerRule:
    """One trigger rule, as in the registry's console.

    :param name: lower-case letters, digits and ``-._``, starting with a letter or digit,
        at most 64 characters; unique in a store.
    :param url: the http(s) target.
    :param actions: action names the rule listens to (any of :data:`~receiver.core.events.ACTIONS`
        that its format carries); default the console's four, as far as the format goes.
    :param namespace: the namespace it applies to; ``None`` for every namespace.
    :param repository: a repository pattern relative to the namespace; empty matches all.
    :param tag: a tag pattern; empty matches all.

    ``replication`` and ``tagRetention`` events have no repository: a rule with either
    action and a namespace, repository or tag is refused, since it would never fire for them.
    :param headers: ``(key, value)`` pairs sent with each delivery; a key may repeat.
    :param description: free text.
    :param enabled: whether events fire it.
    :param format: the wire format of its deliveries: ``tcr`` (TCR, Harbor 1.x), ``harbor``
        (Harbor 2.x) or ``cloudevents`` (Harbor 2.8+).
    """

    name: str
    url: str
    actions: tuple[str, ...] = None  # type: ignore[assignment]  # None: the defaults
    namespace: str | None = None
    repository: str = ""
    tag: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    description: str = ""
    enabled: bool = True
    format: str = "tcr"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise RuleError(
                f"name {self.name!r} is invalid: use 1 to 64 lower-case letters, digits and "
                "'-', '.', '_', starting with a letter or digit"
            )
        validate_url(self.url)
        fmt = FORMATS.get(self.format) if isinstance(self.format, str) else None
        if fmt is None:
            raise RuleError(
                f"format {self.format!r} is unknown; expected one of: {', '.join(FORMATS)}"
            )
        if self.actions is None:
            actions = tuple(a for a in DEFAULT_ACTIONS if carries(fmt, a))
        else:
            actions = (self.actions,) if isinstance(self.actions, str) else tuple(self.actions)
        if not actions:
            raise RuleError("actions: a rule needs at least one action")
        for action in actions:
            if action not in ACTIONS:
                raise RuleError(
                    f"action {action!r} is unknown; expected one of: {', '.join(ACTIONS)}"
                )
        missing = [a for a in actions if not carries(fmt, a)]
        if missing:
            raise RuleError(
                f"the {fmt.name} format has no {', '.join(missing)} event"
                f"{'s' if len(missing) > 1 else ''}: choose other actions, or another format"
            )
        object.__setattr__(self, "actions", tuple(dict.fromkeys(actions)))
        if self.namespace == "":
            object.__setattr__(self, "namespace", None)
        if self.namespace is not None and (
            not isinstance(self.namespace, str) or "/" in self.namespace
        ):
            raise RuleError(f"namespace {self.namespace!r} is invalid: a namespace has no '/'")
        if self.namespace is not None and not NAME_COMPONENT.fullmatch(self.namespace):
            raise RuleError(
                f"namespace {self.namespace!r} is invalid: a namespace is lower-case letters "
                "and digits, separated by '.', '_', '__' or '-', so this rule could never fire"
            )
        for field, compile_ in (("repository", repository_fullmatch), ("tag", tag_fullmatch)):
            pattern = getattr(self, field) or ""
            object.__setattr__(self, field, pattern)
            try:
                compile_(pattern)
            except PatternError as exc:
                raise RuleError(f"{field} pattern: {exc}") from None
        without_repository = " and ".join(a for a in self.actions if a not in REPOSITORY_ACTIONS)
        filters = [f for f in ("namespace", "repository", "tag") if getattr(self, f)]
        if without_repository and filters:
            # select_resources() would never fire the rule for them: refuse it now.
            raise RuleError(
                f"{', '.join(filters[:-1]) + ' and ' if len(filters) > 1 else ''}{filters[-1]}: "
                f"{without_repository} events have no repository, so a rule with a namespace, "
                f"repository or tag never fires for them; leave those empty, or move "
                f"{without_repository} to a rule without them"
            )
        object.__setattr__(
            self, "headers", tuple(check_header(str(k), v) for k, v in self.headers)
        )
        object.__setattr__(self, "description", str(self.description or ""))
        object.__setattr__(self, "enabled", bool(self.enabled))

    @classmethod
    def _trusted(cls, defect: str | None = None, **fields: t.Any) -> TriggerRule:
        """Rebuild a rule that was validated when it was stored, without checking again.

        :param defect: why the stored row cannot be read whole (a hand-edited store); see
            :attr:`defect`.
        """
        rule = object.__new__(cls)
        for key, value in fields.items():
            object.__setattr__(rule, key, value)
        if defect is not None:
            object.__setattr__(rule, "_defect", defect)
        return rule

    @property
    def defect(self) -> str | None:
        """Why this rule, read from a damaged store row, cannot be used as stored
        (``"rule 'x' in the store is corrupt: headers are not JSON"``); ``None`` for a sound
        rule. Not a field: it takes no part in equality, and a rule made anew has none."""
        defect: str | None = self.__dict__.get("_defect")
        return defect

    def replace(self, **changes: t.Any) -> TriggerRule:
        """A copy with *changes*, validated again."""
        return dataclasses.replace(self, **changes)

    def matching_resources(self, event: Event) -> tuple[Resource, ...] | None:
        """The resources a delivery of *event* would carry, or ``None`` if the rule does not fire.

        The rule fires when its action matches and :func:`select_resources` keeps the event.
        """
        if event.action not in self.actions:
            return None
        return select_resources(event, namespace=self.namespace, repository=self.repository,
                                tag=self.tag)

    def matches(self, event: Event) -> bool:
        """Whether *event* fires this rule (the enabled switch is the store's business)."""
        return self.matching_resources(event) is not None

    def to_dict(self, *, reveal: bool = False) -> dict[str, t.Any]:
        """The rule as plain data; header values are masked unless *reveal*."""
        return {
            "name": self.name,
            "description": self.description,
            "actions": list(self.actions),
            "namespace": self.namespace,
            "repository": self.repository,
            "tag": self.tag,
            "url": self.url if reveal else display_url(self.url),
            "format": self.format,
            "headers": [[k, v if reveal else _MASK] for k, v in self.headers],
            "enabled": self.enabled,
        }
