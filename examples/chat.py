"""Post a message to a chat webhook: Slack, WeCom (企业微信), DingTalk (钉钉) or Feishu/Lark
(飞书), signed where the vendor signs, and raise unless the vendor said it was accepted.

The examples ``notify_chat`` and ``scan_gate`` post through it. It registers no handler, so
any module can import it. Settings (read by :meth:`Settings.from_env`, not at import):

=================  ==========================================================================
``NOTIFY_URL``     the webhook's URL, as the chat tool gives it (required). It holds the key:
                   it is never logged, and log lines and errors show it masked
                   (:func:`mask`).
``NOTIFY_KIND``    ``slack``, ``wecom``, ``dingtalk`` or ``feishu``; default: told by the URL's
                   host (``hooks.slack.com``, ``qyapi.weixin.qq.com``, ``oapi.dingtalk.com``,
                   ``open.feishu.cn``, ``open.larksuite.com``).
``NOTIFY_SECRET``  the signing secret of a DingTalk robot (``SEC...``, *加签*) or a Feishu bot
                   (*签名校验*), when the robot has one; never logged. Slack and WeCom sign
                   nothing, so a secret with them is refused.
``NOTIFY_TIMEOUT`` seconds allowed for the whole post (default ``10``).
=================  ==========================================================================

What each vendor expects and answers, checked against its documentation (the vendors'
pages, in our words):

- **Slack incoming webhook** (api.slack.com/messaging/webhooks, and the 2016-05-17 changelog
  "Improving error conditions for Incoming Webhooks"): POST JSON with ``text`` (``blocks``
  optional); ``&``, ``<`` and ``>`` in text must be escaped as HTML entities. Success is
  HTTP 200 with the plain-text body ``ok``; a failure is a 4xx/5xx whose plain-text body
  names it: ``invalid_payload`` or ``missing_text_or_fallback_or_attachments`` (older:
  ``no_text``) (400), ``action_prohibited`` (403), ``channel_not_found`` (404),
  ``channel_is_archived`` (410), ``rollup_error`` (500).
- **WeCom group robot** (群机器人配置说明, developer.work.weixin.qq.com/document/path/91770):
  POST ``{"msgtype": "markdown", "markdown": {"content": ...}}`` to
  ``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY``; the content is UTF-8 and at
  most 4096 bytes (longer is errcode 40058); 20 messages a minute per robot. The answer is
  HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}``, and an error is HTTP 200 too, with
  another ``errcode`` (93000: a wrong key). No signature: the key is the secret.
- **DingTalk custom robot** (自定义机器人安全设置 and 自定义机器人发送群消息,
  open.dingtalk.com): POST ``{"msgtype": "markdown", "markdown": {"title": ..., "text":
  ...}}`` to ``https://oapi.dingtalk.com/robot/send?access_token=TOKEN``. With *加签*, the URL
  also carries ``timestamp`` (milliseconds since the epoch, within one hour of DingTalk's
  clock) and ``sign``: the HMAC-SHA256 of ``"{timestamp}\\n{secret}"`` keyed with the secret,
  Base64-encoded, then URL-encoded (UTF-8). The answer is HTTP 200 with ``{"errcode": 0,
  "errmsg": "ok"}``; an error is HTTP 200 with another ``errcode`` (310000 ``sign not
  match``, also for a stale timestamp). 20 messages a minute per robot.
- **Feishu / Lark custom bot** (自定义机器人使用指南,
  open.feishu.cn/document/client-docs/bot-v3/add-custom-bot): POST ``{"msg_type": "text",
  "content": {"text": ...}}`` to ``https://open.feishu.cn/open-apis/bot/v2/hook/TOKEN``, at
  most 20 KB. With *签名校验*, the body also carries ``timestamp`` (seconds, as a string,
  within one hour) and ``sign``: the Base64 of the HMAC-SHA256 of an *empty* message keyed
  with ``"{timestamp}\\n{secret}"`` (not DingTalk's layout, nor URL-encoded). The answer is
  HTTP 200 with ``{"code": 0, "msg": "success", "data": {}}`` (older bots answered
  ``{"StatusCode": 0, "StatusMessage": "success"}``, and both sets of keys can come
  together); an error is HTTP 200 with another ``code`` (19021 a bad sign or stale
  timestamp, 19024 a missing keyword, 9499 a malformed body, 11232 rate-limited).

So :func:`post` reads the body of every answer, and raises :class:`ChatError` (naming the
vendor, the masked URL, the HTTP status and the vendor's code and text) unless it is the
vendor's success; a redirect is an error too (the key is not sent anywhere else). A handler
that lets it propagate is retried by the receiver, with backoff, and ends ``dead`` with the
error in ``receiver jobs show``. A message that the vendor accepted but whose answer was
lost is posted again on that retry: chat messages are at least once.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import time
import typing as t
import urllib.error
import urllib.parse
import urllib.request

from receiver.core.events import Event, RepositoryEvent, ScanEvent, ScannedResource, severity_rank

__all__ = ["KINDS", "MAX_LINES", "ChatError", "Message", "Settings", "check_answer",
           "counts_text", "describe", "mask", "post", "render", "request", "resource_line",
           "sign_dingtalk", "sign_feishu"]

KINDS = ("slack", "wecom", "dingtalk", "feishu")
_HOSTS = {"hooks.slack.com": "slack", "qyapi.weixin.qq.com": "wecom",
          "oapi.dingtalk.com": "dingtalk", "open.feishu.cn": "feishu",
          "open.larksuite.com": "feishu"}
_SIGNED = ("dingtalk", "feishu")
#: Resources listed in one message; the rest are counted. It keeps a message far below
#: WeCom's 4096 bytes, whatever the event carries (up to 1000 resources).
MAX_LINES = 10
_MAX_ANSWER = 64 * 1024


class ChatError(RuntimeError):
    """The chat service did not accept the message (or could not be reached)."""


@dataclasses.dataclass(frozen=True)
class Message:
    """What to say: a one-line title and plain-text lines, rendered per vendor."""

    title: str
    lines: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and how to post. ``repr`` masks the URL and hides the secret."""

    kind: str
    url: str = dataclasses.field(repr=False)
    secret: str | None = dataclasses.field(default=None, repr=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"NOTIFY_KIND is {self.kind!r}; it must be one of {', '.join(KINDS)}")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"NOTIFY_URL {mask(self.url)!r} is not an http(s) URL")
        if self.secret and self.kind not in _SIGNED:
            raise ValueError(f"NOTIFY_SECRET is set, but a {self.kind} webhook is not signed: "
                             "its URL is its key; unset NOTIFY_SECRET")
        if not self.timeout > 0:
            raise ValueError("NOTIFY_TIMEOUT must be a positive number of seconds, "
                             f"not {self.timeout}")

    @property
    def where(self) -> str:
        """The URL, masked, for logs and errors."""
        return mask(self.url)

    @classmethod
    def from_env(cls, environ: t.Mapping[str, str] = os.environ) -> Settings:
        """The ``NOTIFY_*`` settings; raises :class:`ValueError` naming a missing or bad one."""
        url = environ.get("NOTIFY_URL", "").strip()
        if not url:
            raise ValueError("NOTIFY_URL is not set: give the chat webhook's URL "
                             "(Slack, WeCom, DingTalk or Feishu)")
        kind = environ.get("NOTIFY_KIND", "").strip().lower()
        if not kind:
            host = urllib.parse.urlsplit(url).hostname or ""
            kind = _HOSTS.get(host, "")
            if not kind:
                raise ValueError(f"NOTIFY_KIND is not set, and the host of NOTIFY_URL ({host!r}) "
                                 f"does not tell it: set NOTIFY_KIND to one of {', '.join(KINDS)}")
        raw_timeout = environ.get("NOTIFY_TIMEOUT", "10")
        try:
            timeout = float(raw_timeout)
        except ValueError:
            raise ValueError(f"NOTIFY_TIMEOUT must be a number of seconds, "
                             f"not {raw_timeout!r}") from None
        return cls(kind, url, environ.get("NOTIFY_SECRET") or None, timeout)


def mask(url: str) -> str:
    """*url* without its secrets, for logs: no user info, and ``***`` for the last path
    segment (Slack's and Feishu's token) and every query value (WeCom's ``key``, DingTalk's
    ``access_token``), whichever holds the key."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparsable URL>"
    head, _, last = parts.path.rpartition("/")
    path = f"{head}/***" if last else parts.path
    query = "&".join(f"{name}=***" for name, _ in urllib.parse.parse_qsl(parts.query,
                                                                          keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


# --- the message ----------------------------------------------------------------------------

def _cut(text: str, limit: int = 128) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def counts_text(resource: ScannedResource) -> str:
    """``1 Critical, 4 High (Trivy)``: the counts, most severe first, and the scanner."""
    found = sorted(((s, n) for s, n in resource.counts.items() if n),
                   key=lambda item: -severity_rank(item[0]))
    text = ", ".join(f"{n} {s}" for s, n in found) or "no vulnerabilities"
    return f"{text} ({resource.scanner})" if resource.scanner else text


def resource_line(resource: t.Any) -> str:
    """One resource: its tag (or version), its digest, and for a scan what it found
    (``v1.2.0 sha256:...: 1 Critical, 4 High (Trivy)``)."""
    name = _cut(resource.tag) if resource.tag else "(no tag)"
    line = f"{name} {resource.digest}" if resource.digest else name
    if isinstance(resource, ScannedResource):
        if resource.status and resource.status != "Success":
            line += f": scan {resource.status}"
        else:
            line += f": {counts_text(resource)}"
    return line


def describe(event: Event) -> Message:
    """The message for a repository event: the action, the repository, each tag or digest,
    the operator, and for a scan the highest severity and the counts."""
    if not isinstance(event, RepositoryEvent):
        who = (f"operator: {_cut(event.operator)}",) if event.operator else ()
        return Message(event.action, who)
    title = f"{event.action} {event.repository.full_name}"
    if isinstance(event, ScanEvent):
        title += f": {event.severity}" if event.severity else ""
    lines = [resource_line(r) for r in event.resources[:MAX_LINES]]
    if len(event.resources) > MAX_LINES:
        lines.append(f"… and {len(event.resources) - MAX_LINES} more")
    if event.operator:
        lines.append(f"operator: {_cut(event.operator)}")
    lines.append(f"at: {event.occurred_at:%Y-%m-%d %H:%M:%S} UTC")
    return Message(title, tuple(lines))


# --- the wire -------------------------------------------------------------------------------

def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(kind: str, message: Message) -> dict[str, t.Any]:
    """The body for *kind*, unsigned."""
    if kind == "slack":
        text = "\n".join([f"*{_slack_escape(message.title)}*", *map(_slack_escape, message.lines)])
        return {"text": text}
    if kind == "wecom":
        return {"msgtype": "markdown",
                "markdown": {"content": "\n".join([f"**{message.title}**", *message.lines])}}
    if kind == "dingtalk":
        # DingTalk's markdown needs a blank line between paragraphs.
        return {"msgtype": "markdown",
                "markdown": {"title": message.title,
                             "text": "\n\n".join([f"#### {message.title}", *message.lines])}}
    if kind == "feishu":
        return {"msg_type": "text", "content": {"text": "\n".join([message.title, *message.lines])}}
    raise ValueError(f"unknown chat kind {kind!r}")


def sign_dingtalk(secret: str, timestamp_ms: int) -> str:
    """DingTalk's ``sign`` before URL-encoding: Base64(HMAC-SHA256(secret, "ts\\nsecret"))."""
    signed = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign_feishu(secret: str, timestamp_s: int) -> str:
    """Feishu's ``sign``: Base64(HMAC-SHA256(key="ts\\nsecret", message=b""))."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def request(settings: Settings, message: Message,
            now: t.Callable[[], float] = time.time) -> tuple[str, bytes]:
    """The URL and JSON body to POST for *message*, signed when there is a secret."""
    url, body = settings.url, render(settings.kind, message)
    if settings.secret and settings.kind == "dingtalk":
        timestamp = int(now() * 1000)
        parts = urllib.parse.urlsplit(url)
        extra = urllib.parse.urlencode({"timestamp": timestamp,
                                        "sign": sign_dingtalk(settings.secret, timestamp)})
        url = urllib.parse.urlunsplit(parts._replace(
            query=f"{parts.query}&{extra}" if parts.query else extra))
    elif settings.secret and settings.kind == "feishu":
        timestamp = int(now())
        body = {"timestamp": str(timestamp), "sign": sign_feishu(settings.secret, timestamp),
                **body}
    return url, json.dumps(body, ensure_ascii=False).encode()


def check_answer(settings: Settings, status: int, body: bytes) -> None:
    """Raise :class:`ChatError` unless (*status*, *body*) is the vendor's success."""
    text = body.decode("utf-8", "replace").strip()
    said = f"{settings.kind} webhook {settings.where} answered HTTP {status}"
    if settings.kind == "slack":
        if status == 200 and text == "ok":
            return
        raise ChatError(f"{said}: {_cut(text, 300) or '(empty body)'}")
    if not 200 <= status < 300:
        raise ChatError(f"{said}: {_cut(text, 300) or '(empty body)'}")
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ChatError(f"{said} with a body that is not a JSON object: {_cut(text, 300)!r}")
    if settings.kind in ("wecom", "dingtalk"):
        code, what = answer.get("errcode"), answer.get("errmsg")
    else:  # feishu: "code"/"msg", or the older "StatusCode"/"StatusMessage"
        code = answer.get("code", answer.get("StatusCode"))
        what = answer.get("msg", answer.get("StatusMessage"))
    if code == 0 and not isinstance(code, bool):
        return
    if code is None:
        raise ChatError(f"{said} without an error code: {_cut(text, 300)}")
    raise ChatError(f"{said} with error {code}: {_cut(str(what), 300)}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is an error: the body and key go nowhere else."""

    def redirect_request(self, *args: t.Any, **kwargs: t.Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post(message: Message, settings: Settings) -> None:
    """POST *message* to the webhook; return once the vendor accepted it.

    :raises ChatError: the vendor refused it, answered something else than its success, or
        could not be reached within ``settings.timeout``.
    """
    url, body = request(settings, message)
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json; charset=utf-8"})
    deadline = time.monotonic() + settings.timeout
    try:
        with _opener.open(req, timeout=settings.timeout) as resp:
            status, answer = resp.status, _read(resp, deadline)
    except urllib.error.HTTPError as err:  # 3xx, 4xx, 5xx: the body names the problem
        with err:
            status, answer = err.code, _read(err, deadline)
    except (OSError, ValueError) as exc:  # refused, DNS, TLS, a timeout, a cut answer
        raise ChatError(f"{settings.kind} webhook {settings.where} failed: "
                        f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
    if answer is None:
        raise ChatError(f"{settings.kind} webhook {settings.where}: the answer did not arrive "
                        f"within NOTIFY_TIMEOUT ({settings.timeout:g}s)")
    check_answer(settings, status, answer)


def _read(resp: t.Any, deadline: float) -> bytes | None:
    """The answer's body, at most 64 KiB; ``None`` if it is not all there by *deadline* (each
    read has the socket's timeout, so a vendor that drips bytes is cut off at the deadline)."""
    chunks, size = [], 0
    while size < _MAX_ANSWER:
        if time.monotonic() > deadline:
            return None
        chunk = resp.read(min(4096, _MAX_ANSWER - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
