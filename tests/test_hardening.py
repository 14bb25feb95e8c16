"""What an attack run on the first version found, checked through real gunicorn."""

from __future__ import annotations

import json
import socket
import textwrap

import pytest
from servers import gunicorn, post, wait_for

from receiver.core.events import MAX_RESOURCES, MAX_TAG
from receiver.testing import make_body

HANDLERS = textwrap.dedent('''
    import sys
    from receiver import on

    @on("pushImage", tag="v*.*.*")
    def release(event):
        pass

    @on("deleteImage")
    def exits(event):
        sys.exit(3)

    @on("deleteImage")
    def interrupted(event):
        raise KeyboardInterrupt

    @on("deleteImage")
    def fine(event):
        print("FINE RAN", flush=True)

    @on("deleteChart")
    def fails(event):
        raise RuntimeError("cleanup failed")
''')


@pytest.fixture(scope="module", params=["queue", "sync"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    (tmp / "attack_handlers.py").write_text(HANDLERS)
    env = {"RECEIVER_HANDLERS": "attack_handlers", "RECEIVER_HANDLER_ATTEMPTS": "1"}
    if request.param == "sync":
        env["RECEIVER_QUEUE"] = "sync"
    with gunicorn(env, tmp) as (url, log, _):
        yield request.param, url, log


def raw_post(url: str, body: bytes, content_type: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Type: " + content_type + b"\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, answer = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), answer


def test_deep_body_with_a_surrogate_escape_is_a_400(server):
    """A body nested as deep as json.loads allows, holding a \\uD8xx escape: 400, not 500."""
    mode, url, log = server
    for depth in (900, 950, 960, 970, 975, 980, 985, 990, 995):
        for opener, closer in ((b'{"a":', b"}"), (b"[", b"]")):
            body = opener * depth + b'"\\ud800"' + closer * depth
            status, answer = post(url + "/webhook", body)
            assert status == 400, (depth, answer)


def test_half_a_million_bad_resources_get_a_small_422(server):
    """A 1 MiB body whose resources are 500,000 zeros: a 422 of a few hundred bytes."""
    mode, url, log = server
    body = make_body()
    body["event_data"]["resources"] = [0] * 500_000
    data = json.dumps(body, separators=(",", ":")).encode()
    assert len(data) <= 1024 * 1024
    status, answer = post(url + "/webhook", data)
    assert status == 422
    assert answer["messages"] == {"event_data": {"resources": [f"More than {MAX_RESOURCES} resources."]}}
    assert len(json.dumps(answer)) < 500


def test_many_field_errors_are_listed_up_to_a_bound(server):
    """A body with hundreds of bad resources under the cap: the answer lists the first 20
    and counts them all."""
    mode, url, log = server
    body = make_body()
    body["event_data"]["resources"] = [{"digest": "x"}] * 500
    status, answer = post(url + "/webhook", body)
    assert status == 422 and answer["errors"] == 500  # one bad digest each
    listed = sum(len(v) for r in answer["messages"]["event_data"]["resources"].values()
                 for v in r.values())
    assert listed == 20


def test_names_over_the_caps_are_refused(server):
    """A 100 kB tag is refused by validation (OCI: at most 128 characters)."""
    mode, url, log = server
    body = make_body()
    body["event_data"]["resources"][0]["tag"] = "v" + "." * 100_000 + "/"
    status, answer = post(url + "/webhook", body)
    assert status == 422
    assert answer["messages"]["event_data"]["resources"]["0"]["tag"] == [
        f"Longer than {MAX_TAG} characters."]


def test_a_tag_built_to_backtrack_is_matched_at_once(server):
    """The longest valid tag built against `v*.*.*` is answered, without a worker timeout."""
    mode, url, log = server
    body = make_body("pushImage", "ns/app", ["v" + "." * (MAX_TAG - 2) + "x"])
    status, answer = post(url + "/webhook", body)
    assert status in (200, 202) and answer["handlers"] == 1


def test_sys_exit_and_keyboard_interrupt_in_handlers_are_failures(server):
    """sys.exit() and KeyboardInterrupt in handlers fail those handlers only: JSON answers,
    the other handler runs, one line each in the log."""
    mode, url, log = server
    status, answer = post(url + "/webhook", make_body("deleteImage", "ns/app", ["v1"]))
    if mode == "sync":
        assert status == 500 and answer["handlers"] == 3
        assert sorted(answer["failed"]) == ["attack_handlers.exits", "attack_handlers.interrupted"]
    else:
        assert (status, answer["handlers"]) == (202, 3)
    wait_for(lambda: "FINE RAN" in log.read_text())
    wait_for(lambda: "handler attack_handlers.interrupted failed" in log.read_text())
    text = log.read_text()
    assert "handler attack_handlers.exits failed on deleteImage ns/app" in text
    assert "SystemExit: 3" in text
    assert post(url + "/webhook", b"")[0] == 200  # the server is still up


def test_log_lines_cannot_be_forged(server):
    """A newline in a repository name (in the handler-failure line) and a C1 control in the
    Content-Type (in the 415 line) are escaped."""
    mode, url, log = server
    body = make_body("deleteChart", "charts/web", ["1.0.0"])
    repo = body["event_data"]["repository"]
    repo.update(name="web\nFORGED", repo_full_name="charts/web\nFORGED")
    post(url + "/webhook", body)
    status, _ = raw_post(url, b"{}", b"text/plain\xc2\x85FORGED2")
    assert status == 415
    wait_for(lambda: "'charts/web\\nFORGED'" in log.read_text())
    lines = log.read_text().splitlines()  # splitlines() also splits on NEL (U+0085)
    assert not any(line.startswith(("FORGED", "FORGED2")) for line in lines)


def test_log_fields_cannot_be_forged_or_swollen(server):
    """A repository name with spaces cannot add fields to the request line: it is quoted.
    A type no format knows, half a megabyte long, is cut short in the answer and the line."""
    mode, url, log = server
    body = make_body("pushImage", "prod/api", ["v1"])
    repo = body["event_data"]["repository"]
    repo.update(name="api tags=v9 status=401", repo_full_name="prod/api tags=v9 status=401")
    assert post(url + "/webhook", body)[0] in (200, 202)
    line = wait_for(lambda: next((ln for ln in log.read_text().splitlines()
                                  if "status=401" in ln), None))
    assert "pushImage 'prod/api tags=v9 status=401' tags=v1 format=tcr status=" in line
    status, answer = post(url + "/webhook", {"type": "x" * 500_000, "occur_at": 1,
                                             "event_data": {}})
    assert (status, answer["ignored"]) == (202, True)
    assert answer["type"] == "x" * 256 + "...(500000 chars)"
    line = wait_for(lambda: next((ln for ln in log.read_text().splitlines()
                                  if "ignored type=" in ln), None))
    assert len(line) < 600, len(line)
