"""examples/notify_chat.py under gunicorn, posting to local fakes of Slack, WeCom, DingTalk and
Feishu that check each body and signature as the vendor does and answer as it does."""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import contextlib
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import typing as t
import urllib.parse
import urllib.request

import pytest
from servers import ROOT, Target, gunicorn, wait_for

if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))
import chat

HOOK_AUTH = "Bearer hook-s3cret"  # the Harbor policy's auth header, as the receiver checks it
DIGEST = "sha256:" + "d" * 64
FORMATS = ("tcr", "harbor", "cloudevents")


class FakeChat:
    """A chat vendor's webhook on 127.0.0.1: it checks the URL's key, the body's shape and,
    with a *secret*, the signature exactly as the vendor documents it (timestamp within one
    hour), and answers as the vendor does: HTTP 200 with an error code in the body for
    WeCom, DingTalk and Feishu, a 4xx with a plain-text reason for Slack.

    ``messages`` holds the bodies it accepted, ``refusals`` its error answers.
    """

    def __init__(self, kind: str, token: str, secret: str | None = None) -> None:
        self.kind, self.token, self.secret = kind, token, secret
        self.messages: list[dict] = []
        self.refusals: list[dict | str] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = fake.answer(self.path, self.headers.get("Content-Type", ""), body)
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if isinstance(answer, str)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: t.Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        base = f"http://127.0.0.1:{self.server.server_port}"
        self.url = {
            "slack": f"{base}/services/T0001/B0001/{token}",
            "wecom": f"{base}/cgi-bin/webhook/send?key={token}",
            "dingtalk": f"{base}/robot/send?access_token={token}",
            "feishu": f"{base}/open-apis/bot/v2/hook/{token}",
        }[kind]

    def __enter__(self) -> t.Self:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def texts(self) -> list[str]:
        """The text of each accepted message."""
        return [text_of(self.kind, body) for body in self.messages]

    def answer(self, path: str, content_type: str, raw: bytes) -> tuple[int, dict | str]:
        parts = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(parts.query)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        status, answer = getattr(self, "_" + self.kind)(parts.path, query, content_type, body)
        ok = answer == "ok" or (isinstance(answer, dict) and
                                answer.get("errcode", answer.get("code")) == 0)
        (self.messages.append(body) if ok else self.refusals.append(answer))
        return status, answer

    def _slack(self, path: str, query: dict, content_type: str, body: t.Any) -> tuple[int, t.Any]:
        if path != f"/services/T0001/B0001/{self.token}":
            return 404, "no_service"
        if not content_type.startswith("application/json") or not isinstance(body, dict):
            return 400, "invalid_payload"
        text = body.get("text")
        if not (isinstance(text, str) and text.strip()) and not body.get("blocks"):
            return 400, "missing_text_or_fallback_or_attachments"
        return 200, "ok"

    def _wecom(self, path: str, query: dict, content_type: str, body: t.Any) -> tuple[int, t.Any]:
        if path != "/cgi-bin/webhook/send" or query.get("key") != [self.token]:
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url, hint: [fake]"}
        if not isinstance(body, dict) or body.get("msgtype") != "markdown":
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}
        content = (body.get("markdown") or {}).get("content")
        if not isinstance(content, str) or not content:
            return 200, {"errcode": 41009, "errmsg": "missing markdown.content"}
        if len(content.encode()) > 4096:
            return 200, {"errcode": 40058, "errmsg": "markdown.content exceed max length 4096"}
        return 200, {"errcode": 0, "errmsg": "ok"}

    def _dingtalk(self, path: str, query: dict, content_type: str,
                  body: t.Any) -> tuple[int, t.Any]:
        if path != "/robot/send" or query.get("access_token") != [self.token]:
            return 200, {"errcode": 300005, "errmsg": "token is not exist"}
        if self.secret is not None:
            # parse_qs has URL-decoded the sign once, as DingTalk does.
            [timestamp], [sign] = query.get("timestamp", [""]), query.get("sign", [""])
            fresh = timestamp.isdigit() and abs(time.time() * 1000 - int(timestamp)) <= 3600 * 1000
            expected = base64.b64encode(hmac.new(self.secret.encode(),
                                                 f"{timestamp}\n{self.secret}".encode(),
                                                 hashlib.sha256).digest()).decode()
            if not fresh or not hmac.compare_digest(sign, expected):
                return 200, {"errcode": 310000, "errmsg": "sign not match, more: [fake]"}
        markdown = body.get("markdown") if isinstance(body, dict) else None
        if (body or {}).get("msgtype") != "markdown" or not isinstance(markdown, dict) or not all(
                isinstance(markdown.get(k), str) and markdown[k] for k in ("title", "text")):
            return 200, {"errcode": 40035, "errmsg": "missing parameter"}
        return 200, {"errcode": 0, "errmsg": "ok"}

    def _feishu(self, path: str, query: dict, content_type: str, body: t.Any) -> tuple[int, t.Any]:
        if path != f"/open-apis/bot/v2/hook/{self.token}":
            return 200, {"code": 19001, "data": {},
                         "msg": "param invalid: incoming webhook access token invalid"}
        if not isinstance(body, dict):
            return 200, {"code": 9499, "msg": "Bad Request", "data": {}}
        if self.secret is not None:
            timestamp, sign = body.get("timestamp"), body.get("sign")
            fresh = isinstance(timestamp, str) and timestamp.isdigit() and \
                abs(time.time() - int(timestamp)) <= 3600
            expected = base64.b64encode(hmac.new(f"{timestamp}\n{self.secret}".encode(), b"",
                                                 hashlib.sha256).digest()).decode()
            if not fresh or not isinstance(sign, str) or not hmac.compare_digest(sign, expected):
                return 200, {"code": 19021, "msg": "sign match fail or timestamp is not within one "
                                                   "hour from current time", "data": {}}
        content = body.get("content")
        if body.get("msg_type") != "text" or not isinstance(content, dict) or not (
                isinstance(content.get("text"), str) and content["text"]):
            return 200, {"code": 9499, "msg": "Bad Request", "data": {}}
        return 200, {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {},
                     "msg": "success"}


def text_of(kind: str, body: dict) -> str:
    return {"slack": lambda: body["text"], "wecom": lambda: body["markdown"]["content"],
            "dingtalk": lambda: body["markdown"]["text"],
            "feishu": lambda: body["content"]["text"]}[kind]()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "receiver", *args], env=env, check=False,
                          capture_output=True, text=True, timeout=60)


def run_all(env: dict[str, str], commands: t.Sequence[t.Sequence[str]]) -> None:
    """Run receiver CLI commands, the first alone (it creates the store: processes that
    create one at the same time can find it locked), the others side by side; each must
    succeed."""
    first = cli(env, *commands[0])
    assert first.returncode == 0, (commands[0], first.stdout, first.stderr)
    procs = [subprocess.Popen([sys.executable, "-m", "receiver", *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands[1:]]
    for args, proc in zip(commands[1:], procs, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (args, out, err)


@contextlib.contextmanager
def servers_side_by_side(specs: dict[str, tuple[dict[str, str], pathlib.Path]]
                         ) -> t.Iterator[dict[str, tuple[str, pathlib.Path]]]:
    """Start one ``gunicorn wsgi:app`` per spec at once; yield each one's URL and log."""
    with contextlib.ExitStack() as stack:
        managers = {name: gunicorn(env, cwd, paths=[ROOT / "examples"])
                    for name, (env, cwd) in specs.items()}
        with concurrent.futures.ThreadPoolExecutor(len(managers)) as pool:
            futures = {name: pool.submit(m.__enter__) for name, m in managers.items()}
        started, failure = {}, None
        for name, future in futures.items():
            try:
                url, log, _ = future.result()
            except Exception as exc:  # noqa: BLE001
                failure = failure or exc
                continue
            started[name] = (url, log)

        def stop_all(*exc: object) -> None:  # side by side too
            with concurrent.futures.ThreadPoolExecutor(len(managers)) as stopping:
                for name in started:
                    stopping.submit(managers[name].__exit__, None, None, None)

        stack.push(stop_all)
        if failure is not None:
            raise failure
        yield started


class Kind(t.NamedTuple):
    fake: FakeChat
    url: str
    log: pathlib.Path
    queue: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Four fakes, four servers running notify_chat (one per NOTIFY_KIND; DingTalk and Feishu
    signed), and twelve rules: one per kind and format."""
    tmp = tmp_path_factory.mktemp("chat")
    secrets = {"dingtalk": "SECding-secret-never-logged", "feishu": "feishu-secret-never-logged"}
    fakes = {kind: FakeChat(kind, f"{kind}-token-never-logged", secrets.get(kind))
             for kind in chat.KINDS}
    specs = {}
    for kind, fake in fakes.items():
        (tmp / kind).mkdir()
        specs[kind] = ({
            "RECEIVER_HANDLERS": "notify_chat", "RECEIVER_AUTH_HEADERS":
                json.dumps({"Authorization": HOOK_AUTH}),
            "RECEIVER_QUEUE": f"sqlite:///{tmp / kind / 'queue.db'}",
            "RECEIVER_HANDLER_ATTEMPTS": "2", "RECEIVER_HANDLER_BACKOFF": "0.05",
            "NOTIFY_KIND": kind, "NOTIFY_URL": fake.url, "NOTIFY_NAMESPACE": "prod",
            "NOTIFY_TIMEOUT": "5", **({"NOTIFY_SECRET": fake.secret} if fake.secret else {}),
        }, tmp / kind)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")},
           "RECEIVER_DB": str(tmp / "rules.db"), "RECEIVER_SEND_BACKOFF": "0.01"}
    with contextlib.ExitStack() as stack:
        for fake in fakes.values():
            stack.enter_context(fake)
        started = stack.enter_context(servers_side_by_side(specs))
        run_all(env, [
            ["rules", "create", f"{kind}-{fmt}", "--url", started[kind][0] + "/webhook",
             "--format", fmt, "--header", f"Authorization: {HOOK_AUTH}",
             "--action", "pushImage", "--action", "deleteImage", "--action", "scanningCompleted",
             *(["--action", "uploadChart"] if fmt != "cloudevents" else [])]
            for kind in chat.KINDS for fmt in FORMATS])
        yield env, {kind: Kind(fakes[kind], *started[kind], specs[kind][0]["RECEIVER_QUEUE"])
                    for kind in chat.KINDS}


def jobs(env: dict[str, str], queue: str, *args: str) -> list[dict]:
    listed = cli({**env, "RECEIVER_QUEUE": queue}, "jobs", "--json", "--limit", "1000", *args)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def settled(env: dict[str, str], kind: Kind, repositories: str | set[str], count: int
            ) -> list[dict]:
    """The jobs of *repositories* once there are *count* and none is queued or running."""
    repositories = {repositories} if isinstance(repositories, str) else repositories

    def done() -> list[dict] | None:
        mine = [j for j in jobs(env, kind.queue) if j["repository"] in repositories]
        ended = len(mine) == count and all(j["status"] in ("succeeded", "dead") for j in mine)
        return mine if ended else None
    return wait_for(done, what=f"{count} jobs of {', '.join(sorted(repositories))} to end")


def test_each_kind_gets_one_message_per_event_in_every_format(setup):
    """A push, a deletion, a chart upload and a scan, emitted through a rule per kind and
    format, give each vendor one message per delivery, in its format and correctly signed,
    naming the action, the repository, the tag and digest, the operator and the findings."""
    env, kinds = setup
    for args in (
        ["pushImage", f"prod/api:v1.2.0@{DIGEST}", "--operator", "100012345"],
        ["deleteImage", "prod/api:v1.0.0", "--operator", "robot$prod+ci"],
        ["uploadChart", "prod/web-chart:0.3.1", "--operator", "admin"],
        ["scanningCompleted", f"prod/api:v1.2.0@{DIGEST}", "--vulnerabilities",
         "Critical=1,High=4,Low=0", "--operator", "admin"],
    ):
        fired = cli(env, "emit", *args)
        assert fired.returncode == 0, fired.stdout + fired.stderr
        assert all("success  HTTP 202" in line for line in fired.stdout.splitlines())

    def ours(kind: str) -> list[str]:
        return [text for text in kinds[kind].fake.texts()
                if "prod/api" in text or "prod/web-chart" in text]

    wait_for(lambda: all(len(ours(kind)) >= 11 for kind in chat.KINDS), what="the messages")
    for kind in chat.KINDS:
        k = kinds[kind]
        ended = settled(env, k, {"prod/api", "prod/web-chart"}, 11)
        assert all(j["status"] == "succeeded" for j in ended)
        texts = ours(kind)
        by_action = collections.Counter(text.lstrip("*# ").split()[0].strip("*") for text in texts)
        assert by_action == {"pushImage": 3, "deleteImage": 3, "scanningCompleted": 3,
                             "uploadChart": 2}, (kind, texts)
        push = next(text for text in texts if "pushImage" in text)
        assert f"v1.2.0 {DIGEST}" in push and "operator: 100012345" in push, push
        delete = next(text for text in texts if "deleteImage" in text)
        assert "v1.0.0 sha256:" in delete and "robot$prod+ci" in delete, delete
        scan = next(text for text in texts if "scanningCompleted" in text)
        assert "prod/api: Critical" in scan and \
            f"v1.2.0 {DIGEST}: 1 Critical, 4 High (Trivy)" in scan, scan
        assert "uploadChart prod/web-chart" in next(text for text in texts if "0.3.1" in text)
        assert k.fake.refusals == []

        log = k.log.read_text()
        assert "posted pushImage prod/api tags=v1.2.0 to " + kind in log
        assert k.fake.token not in log and (k.fake.secret or k.fake.token) not in log
        assert "***" in log


def test_the_same_body_three_times_posts_one_message(setup):
    """A delivery redelivered twice (the same bytes) is one job and one message."""
    env, kinds = setup
    k = kinds["wecom"]
    sent = cli(env, "send", "pushImage", "prod/dup:v3", "--url", k.url + "/webhook",
               "--format", "harbor", "--header", f"Authorization: {HOOK_AUTH}")
    assert "HTTP 202" in sent.stdout, sent.stdout + sent.stderr
    task = sent.stdout.split()[1]
    again = [cli(env, "redeliver", task, "--header", f"Authorization: {HOOK_AUTH}")
             for _ in range(2)]
    assert all("success  HTTP 200" in r.stdout for r in again), [r.stdout + r.stderr for r in again]
    [job] = settled(env, k, "prod/dup", 1)
    assert job["status"] == "succeeded"
    assert len([text for text in k.fake.texts() if "prod/dup" in text]) == 1


def test_filters_and_actions_are_those_of_the_settings(setup):
    """Another namespace than NOTIFY_NAMESPACE, and an action not in NOTIFY_ACTIONS, queue
    no job."""
    env, kinds = setup
    k = kinds["slack"]
    for action, ref in (("pushImage", "staging/api:v1"), ("pullImage", "prod/api:v1")):
        sent = cli(env, "send", action, ref, "--url", k.url + "/webhook", "--format", "harbor",
                   "--header", f"Authorization: {HOOK_AUTH}")
        assert "HTTP 202" in sent.stdout, sent.stdout + sent.stderr
        line = f"{action} {ref.split(':')[0]} tags=v1 format=harbor status=202 handlers=0"
        wait_for(lambda line=line: line in k.log.read_text(), what=line)


@pytest.mark.parametrize(("kind", "code", "text"), [
    pytest.param("dingtalk", "310000", "sign not match", id="dingtalk"),
    pytest.param("feishu", "19021", "sign match fail", id="feishu"),
])
def test_a_refused_signature_fails_the_job_until_dead(setup, kind, code, text):
    """After the secret is rotated in the vendor's console (the server still has the old
    one), the vendor answers HTTP 200 with its error code: the job is retried, ends dead,
    and `receiver jobs show` gives the vendor's answer without the key or the secret."""
    env, kinds = setup
    k = kinds[kind]
    old, k.fake.secret = k.fake.secret, "rotated-in-the-console"
    try:
        sent = cli(env, "send", "pushImage", f"prod/rotated-{kind}:v1", "--url", k.url + "/webhook",
                   "--format", "cloudevents", "--header", f"Authorization: {HOOK_AUTH}")
        assert "HTTP 202" in sent.stdout, sent.stdout + sent.stderr
        [job] = settled(env, k, f"prod/rotated-{kind}", 1)
    finally:
        k.fake.secret = old
    assert (job["status"], job["attempts"]) == ("dead", 2)
    shown = cli({**env, "RECEIVER_QUEUE": k.queue}, "jobs", "show", str(job["job_id"]))
    assert shown.returncode == 0, shown.stderr
    assert "ChatError" in shown.stdout and f"error {code}: {text}" in shown.stdout, shown.stdout
    assert "***" in shown.stdout
    log = k.log.read_text()
    for secret in (k.fake.token, old):
        assert secret not in shown.stdout and secret not in log
    assert len([r for r in k.fake.refusals if code in json.dumps(r)]) == 2


# --- chat.py on its own, against the same fakes ------------------------------------------------

def test_a_known_dingtalk_signature():
    """The DingTalk sign of a published example: timestamp 1700000000000, secret 'secret'."""
    sign = chat.sign_dingtalk("secret", 1700000000000)
    assert urllib.parse.quote_plus(sign) == "OuzzJR5%2BxZ4%2FEYwqtNt6sMYZQMTa%2FHEGvc9miJe7XzY%3D"


@pytest.mark.parametrize(("url", "masked"), [
    pytest.param("https://hooks.slack.com/services/T0/B0/XYZsecret",
                 "https://hooks.slack.com/services/T0/B0/***", id="slack"),
    pytest.param("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc-123",
                 "https://qyapi.weixin.qq.com/cgi-bin/webhook/***?key=***", id="wecom"),
    pytest.param("https://oapi.dingtalk.com/robot/send?access_token=tok&x=1",
                 "https://oapi.dingtalk.com/robot/***?access_token=***&x=***", id="dingtalk"),
    pytest.param("https://user:pw@open.feishu.cn:8443/open-apis/bot/v2/hook/uuid-tok",
                 "https://open.feishu.cn:8443/open-apis/bot/v2/hook/***", id="feishu"),
])
def test_mask_hides_the_key(url, masked):
    """Log lines and errors show the webhook without its token, key or user info."""
    assert chat.mask(url) == masked


@pytest.mark.parametrize(("kind", "answer", "accepted"), [
    pytest.param("slack", (200, b"ok"), True, id="slack-ok"),
    pytest.param("slack", (400, b"no_text"), False, id="slack-400"),
    pytest.param("slack", (200, b"<html>"), False, id="slack-200-not-ok"),
    pytest.param("wecom", (200, b'{"errcode":0,"errmsg":"ok"}'), True, id="wecom-ok"),
    pytest.param("wecom", (200, b'{"errcode":45009,"errmsg":"api freq out of limit"}'), False,
                 id="wecom-rate-limited"),
    pytest.param("dingtalk", (200, b"<html>busy</html>"), False, id="dingtalk-not-json"),
    pytest.param("feishu", (200, b'{"StatusCode":0,"StatusMessage":"success"}'), True,
                 id="feishu-older-answer"),
    pytest.param("feishu", (200, b'{"code":11232,"msg":"frequency limited"}'), False,
                 id="feishu-rate-limited"),
    pytest.param("feishu", (502, b""), False, id="feishu-502"),
])
def test_answers_are_read_as_the_vendor_means_them(kind, answer, accepted):
    """Only the vendor's success passes: an error code in an HTTP 200 body raises."""
    settings = chat.Settings(kind, "https://chat.example/hook/tok", None)
    if accepted:
        chat.check_answer(settings, *answer)
    else:
        with pytest.raises(chat.ChatError,
                           match=f"{kind} webhook https://chat.example/hook/\\*\\*\\*"):
            chat.check_answer(settings, *answer)


@pytest.mark.parametrize(("kind", "wrong", "error"), [
    pytest.param("slack", "token", "HTTP 404: no_service", id="slack-wrong-url"),
    pytest.param("wecom", "token", "error 93000: invalid webhook url", id="wecom-wrong-key"),
    pytest.param("dingtalk", "clock", "error 310000: sign not match", id="dingtalk-stale"),
    pytest.param("feishu", "clock", "error 19021: sign match fail", id="feishu-stale"),
])
def test_the_vendors_refusals_raise(kind, wrong, error):
    """A wrong key, or a signature made with a clock two hours off, is refused by the vendor,
    and chat raises ChatError with its answer."""
    token = f"{kind}-token"
    with FakeChat(kind, token, "s3cret" if kind in ("dingtalk", "feishu") else None) as fake:
        url = fake.url.replace(token, "wrong") if wrong == "token" else fake.url
        settings = chat.Settings(kind, url, fake.secret, timeout=5)
        message = chat.Message("pushImage prod/api", ("v1 " + DIGEST,))
        if wrong == "clock":
            url, body = chat.request(settings, message, now=lambda: time.time() - 7200)
            with urllib.request.urlopen(urllib.request.Request(
                    url, data=body, headers={"Content-Type": "application/json"})) as resp:
                status, answer = resp.status, resp.read()
            with pytest.raises(chat.ChatError, match=error):
                chat.check_answer(settings, status, answer)
            chat.post(message, settings)  # and with the right clock, it is accepted
            assert len(fake.messages) == 1
        else:
            with pytest.raises(chat.ChatError, match=error) as caught:
                chat.post(message, settings)
            assert "wrong" not in str(caught.value)


def test_a_vendor_that_does_not_answer_in_time_raises():
    """A webhook that hangs is a ChatError after NOTIFY_TIMEOUT, naming the masked URL."""
    with Target(hang=10) as target:
        settings = chat.Settings("slack", target.url + "/T0/B0/tok", timeout=0.2)
        with pytest.raises(chat.ChatError, match=r"slack webhook http://127\.0\.0\.1:\d+"
                                                 r"/hook/T0/B0/\*\*\* failed: TimeoutError"):
            chat.post(chat.Message("pushImage prod/api"), settings)
