"""What a bad rule, a damaged store or a loose file mode must not do: URLs parsed strictly,
framing headers refused, a rule that cannot be sent failing alone, damaged rows reported in
one line by every command, and a store that only its owner can read."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest
from servers import Target

from receiver.registry.rules import RuleError, TriggerRule, validate_url
from receiver.registry.store import Store

R = pytest.param


@pytest.fixture(scope="module")
def served():
    """One target for the module (a Target takes half a second to stop)."""
    with Target() as target:
        yield target


@pytest.fixture()
def target(served):
    served.requests.clear()
    return served


def one_line(result, message):
    code, out, err = result
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert "Traceback" not in err


# --- URLs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url, message", [
    R("http://127.0.\x01.1/", "url: 'http://127.0.\\x01.1/' contains a control character",
      id="control-in-host"),
    R("http://h/\x1b[31m", "contains a control character", id="escape"),
    R("http://h/\x7f", "contains a control character", id="delete"),
    R("http://h/a b", "contains white space", id="space"),
    R("http://h/\u0085", "contains white space", id="next-line"),
    R("http://h:0/", "the port must be from 1 to 65535", id="port-0"),
    R("http://h:65536/", "the port must be from 1 to 65535", id="port-too-big"),
    R("http://h:x/", "the port must be from 1 to 65535", id="port-not-a-number"),
    R("http://a<b>/", "has an invalid host 'a<b>'", id="host-characters"),
    R("http://[fe80::1%25eth0]/", "has an IPv6 zone id ('[fe80::1%25eth0]')", id="zone-id"),
    R("http:///path", "has no host", id="no-host"),
    R("file:///etc/passwd", "must start with http:// or https://", id="file"),
])
def test_urls_are_parsed_strictly(url, message):
    """A URL that http.client would refuse, or send as something else, is refused when the
    rule is made, with a message that shows it safely."""
    with pytest.raises(RuleError) as info:
        TriggerRule("r", url)
    assert message in str(info.value)
    assert str(info.value).isprintable()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/webhook", "https://h.example/a?b=c&d=@e",
                                 "http://[::1]:8080/", "http://h:65535/", "HTTP://H/x#frag"])
def test_good_urls_pass(url):
    """Ordinary URLs, IPv6 hosts and the highest port are fine."""
    assert validate_url(url) == url


@pytest.mark.parametrize("args", [
    R(["rules", "create", "bad", "--url", "http://127.0.\x01.1/"], id="create"),
    R(["rules", "update", "ok", "--url", "http://127.0.\x01.1/"], id="update"),
    R(["send", "pushImage", "ns/a:v1", "--url", "http://127.0.\x01.1/"], id="send"),
])
def test_the_cli_refuses_a_bad_url_in_one_line(cli, args):
    """rules create, rules update and send refuse such a URL: one line, exit 2."""
    cli("rules", "create", "ok", "--url", "http://127.0.0.1:1/")
    one_line(cli(*args), "error: url: 'http://127.0.\\x01.1/' contains a control character")


# --- framing headers ----------------------------------------------------------------------

@pytest.mark.parametrize("header, message", [
    R("Host: evil.example", "error: header 'Host' is not allowed: the sender writes", id="host"),
    R("content-length: 5", "error: header 'content-length' is not allowed", id="length"),
    R("Transfer-Encoding: chunked", "error: header 'Transfer-Encoding' is not allowed",
      id="chunked"),
    R("Connection: close", "error: header 'Connection' is not allowed", id="connection"),
    R("X(y): s3cret", "error: a header name must be an HTTP token", id="not-a-token"),
])
@pytest.mark.parametrize("command", ["create", "update", "send", "redeliver"])
def test_framing_headers_are_refused_everywhere(cli, target, header, message, command):
    """Host, Content-Length, Transfer-Encoding, Connection and names that are not tokens are
    refused by every command that takes --header, before anything is sent."""
    cli("rules", "create", "ok", "--url", target.url)
    cli("send", "pushImage", "ns/a:v1", "--url", target.url)
    args = {
        "create": ["rules", "create", "x", "--url", target.url],
        "update": ["rules", "update", "ok"],
        "send": ["send", "pushImage", "ns/a:v1", "--url", target.url],
        "redeliver": ["redeliver", "1"],
    }[command]
    result = cli(*args, "--header", header)
    assert len(target.requests) == 1
    one_line(result, message)
    assert "s3cret" not in result[2] and "evil" not in result[2]


# --- a stored rule that cannot be sent, and damaged rows ------------------------------------

def _edit(path, sql, *params):
    with sqlite3.connect(path) as db:
        db.execute(sql, params)
    db.close()


def test_a_rule_that_cannot_be_sent_fails_alone(cli, tmp_path, target):
    """Rules that an earlier version or a hand edit let in (a control character in the URL, a
    Host header, headers that are not JSON, actions that are not JSON) do not stop emit: each
    that fires gets a failed row saying why, one that cannot be matched is named on stderr,
    and the good rule is sent."""
    db = tmp_path / "r.db"
    for name in ("bad-url", "bad-host", "bad-headers", "bad-actions", "zone", "good"):
        cli("rules", "create", name, "--url", target.url)
    _edit(db, "UPDATE rules SET url = ? WHERE name = 'bad-url'", "http://127.0.\x01.1/")
    _edit(db, "UPDATE rules SET url = ? WHERE name = 'zone'", "http://[fe80::1%25eth0]/")
    _edit(db, "UPDATE rules SET headers = ? WHERE name = 'bad-host'",
          '[["Host", "evil"], ["Authentication", "s3cret"]]')
    _edit(db, "UPDATE rules SET headers = 'not json' WHERE name = 'bad-headers'")
    _edit(db, "UPDATE rules SET actions = '[oops' WHERE name = 'bad-actions'")
    code, out, err = cli("emit", "pushImage", "ns/app:v1")
    assert len(target.requests) == 1
    assert code == 1
    assert err == ("rule bad-actions skipped: rule 'bad-actions' in the store is corrupt: "
                   "actions are not JSON\n")
    assert sorted(out.splitlines()) == [
        "task 1  rule bad-headers  failed  no answer  attempts 0  (rule 'bad-headers' in the "
        "store is corrupt: headers are not JSON)",
        "task 2  rule bad-host  failed  no answer  attempts 0  (rule 'bad-host' cannot be sent: "
        "header 'Host' is not allowed: the sender writes the headers that frame the request "
        "(Host, Content-Length, Transfer-Encoding, Connection) itself)",
        "task 3  rule bad-url  failed  no answer  attempts 0  (rule 'bad-url' cannot be sent: "
        "url: 'http://127.0.\\x01.1/' contains a control character)",
        "task 4  rule good  success  HTTP 200  attempts 1",
        "task 5  rule zone  failed  no answer  attempts 0  (rule 'zone' cannot be sent: url: "
        "'http://[fe80::1%25eth0]/' has an IPv6 zone id ('[fe80::1%25eth0]'), which the sender "
        "cannot connect to; use a global address or a host name)",
    ]
    assert "s3cret" not in out + err
    code, out, _ = cli("rules", "list")  # the damaged rows still read as damaged
    assert code == 2


def test_a_hand_edited_enabled_flag_reads_as_emit_treats_it(cli, tmp_path, target):
    """enabled = 'maybe' (or 2) in the store: emit sends nothing, and rules show and list say
    the rule is disabled, not enabled."""
    cli("rules", "create", "x", "--url", target.url)
    _edit(tmp_path / "r.db", "UPDATE rules SET enabled = 'maybe'")
    assert json.loads(cli("rules", "show", "x", "--json")[1])["enabled"] is False
    assert json.loads(cli("rules", "list", "--json")[1])[0]["enabled"] is False
    assert cli("emit", "pushImage", "ns/app:v1")[:2] == (0, "")  # no rule fires
    assert target.requests == []


@pytest.mark.parametrize("args", [
    R(["rules", "show", "x"], id="show"),
    R(["rules", "show", "x", "--json"], id="show-json"),
    R(["rules", "list"], id="list"),
    R(["rules", "list", "--json"], id="list-json"),
    R(["rules", "update", "x", "--tag", "v*"], id="update"),
    R(["rules", "disable", "x"], id="disable"),
    R(["redeliver", "1"], id="redeliver"),
])
def test_a_damaged_rule_is_one_line_for_every_command(cli, tmp_path, target, args):
    """Every command that reads a rule whose headers are not JSON says so in one line."""
    cli("rules", "create", "x", "--url", target.url, "--header", "Authentication: s3cret")
    cli("emit", "pushImage", "ns/app:v1")
    _edit(tmp_path / "r.db", "UPDATE rules SET headers = '[[\"Authentication\", \"s3' "
                             "WHERE name = 'x'")
    one_line(cli(*args), "error: rule 'x' in the store is corrupt: headers are not JSON")
    assert len(target.requests) == 1
    assert cli("rules", "delete", "x")[:2] == (0, "deleted rule x\n")  # the way out


@pytest.mark.parametrize("args, column, message", [
    R(["logs", "--json"], "body", "error: task 1 in the store is corrupt: body is not JSON",
      id="logs-json"),
    R(["logs", "--task", "1"], "body", "error: task 1 in the store is corrupt: body is not JSON",
      id="logs-task"),
    R(["redeliver", "1"], "body", "error: task 1 in the store is corrupt: body is not JSON",
      id="redeliver"),
    R(["logs"], "tags", "error: task 1 in the store is corrupt: tags are not a JSON list",
      id="logs-tags"),
])
def test_a_damaged_task_is_one_line(cli, tmp_path, target, args, column, message):
    """A trigger-log row whose body or tags are not JSON is one line, not a traceback."""
    cli("rules", "create", "x", "--url", target.url)
    cli("emit", "pushImage", "ns/app:v1")
    _edit(tmp_path / "r.db", f"UPDATE deliveries SET {column} = '{{oops' WHERE task_id = 1")
    one_line(cli(*args), message)
    assert len(target.requests) == 1  # nothing sent again


# --- file modes -----------------------------------------------------------------------------

def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_store_and_its_directories_are_private(tmp_path, monkeypatch):
    """Every directory made for a new store is 0700 and the file 0600, whatever the umask."""
    previous = os.umask(0o002)
    try:
        with Store(tmp_path / "a" / "b" / "r.db") as store:
            store.add_rule(TriggerRule("r", "http://127.0.0.1:1/", headers=(("K", "s3cret"),)))
    finally:
        os.umask(previous)
    assert (_mode(tmp_path / "a"), _mode(tmp_path / "a" / "b")) == (0o700, 0o700)
    assert _mode(tmp_path / "a" / "b" / "r.db") == 0o600


def test_a_store_others_can_read_is_made_private_with_a_warning(cli, tmp_path):
    """An existing store that group or others may read is made 0600, -wal and -shm too,
    with one warning line; a private one gets no warning."""
    db = tmp_path / "r.db"
    cli("rules", "create", "r", "--url", "http://127.0.0.1:1/", "--header", "K: s3cret")
    keep = sqlite3.connect(db)  # holds the -wal and -shm files open
    keep.execute("SELECT * FROM rules").fetchall()
    try:
        for path in (db, f"{db}-wal", f"{db}-shm"):
            os.chmod(path, 0o644)
        code, out, err = cli("rules", "list", "--json")
        assert (code, err) == (0, f"warning: the store {db} holds header secrets and other users "
                                  "could read it (mode 0644); it is now 0600\n")
        assert [r["name"] for r in json.loads(out)] == ["r"]
        assert [_mode(p) for p in (db, f"{db}-wal", f"{db}-shm")] == [0o600] * 3
        assert cli("rules", "list", "--json")[2] == ""
    finally:
        keep.close()


def test_a_store_of_another_user_gets_a_warning(tmp_path, monkeypatch):
    """A store that cannot be chmod-ed (another user owns it) is used, with a warning that
    says so."""
    with Store(tmp_path / "r.db"):
        pass
    os.chmod(tmp_path / "r.db", 0o640)

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    warnings: list[str] = []
    with Store(tmp_path / "r.db", on_warning=warnings.append) as store:
        assert store.list_rules() == []
    assert warnings == [f"the store {tmp_path / 'r.db'} holds header secrets and other users may "
                        f"read it (mode 0640), but it cannot be made private: it belongs to "
                        f"another user (uid {os.getuid()})"]


def test_a_store_from_a_newer_version_is_left_alone(cli, tmp_path):
    """A store whose schema is newer than this version knows is refused in one line, not
    written in a shape the newer version would misread."""
    cli("rules", "create", "x", "--url", "http://127.0.0.1:1/")
    _edit(tmp_path / "r.db", "PRAGMA user_version = 999")
    one_line(cli("rules", "list"), f"error: the store {tmp_path / 'r.db'} was written by a "
                                   "newer version of receiver (schema 999; this version knows")


@pytest.mark.parametrize("url", ["http://u:s3cret@127.0.0.1:1/hook",
                                 "http://u:s3/cret@127.0.0.1:1/hook",
                                 "http://u:s3@cret@127.0.0.1:1/hook"])
def test_credentials_typed_into_a_stored_url_are_never_shown(cli, tmp_path, target, url):
    """A URL with a password (even one with an unescaped '/' or '@'), which a new rule
    refuses, written into the store by hand: no command shows the password, and neither the
    failed delivery's row nor a redelivery's keeps it."""
    cli("rules", "create", "x", "--url", target.url)
    cli("emit", "pushImage", "ns/app:v1")  # task 1, sent while the URL was good
    _edit(tmp_path / "r.db", "UPDATE rules SET url = ?", url)
    runs = [cli("rules", "list"), cli("rules", "list", "--json"), cli("rules", "show", "x"),
            cli("rules", "show", "x", "--json"), cli("emit", "pushImage", "ns/app:v1"),
            cli("redeliver", "1"),
            cli("logs"), cli("logs", "--json"), cli("logs", "--task", "2")]
    for _, out, err in runs:
        assert "s3" not in out + err and "cret" not in out + err
    assert "http://***@127.0.0.1:1/hook" in runs[0][1]
    with sqlite3.connect(tmp_path / "r.db") as db:
        rows = repr(db.execute("SELECT * FROM deliveries").fetchall())
    db.close()
    assert "s3" not in rows and "cret" not in rows
    assert len(target.requests) == 1


def test_reading_a_store_that_does_not_exist_makes_nothing(tmp_path, monkeypatch, cli):
    """A mistyped RECEIVER_DB: the commands that only read (or find no rule to act on) answer
    as for an empty store, and leave no file or directory behind; rules create and send
    make the store."""
    missing = tmp_path / "typo" / "sub" / "r.db"
    monkeypatch.setenv("RECEIVER_DB", str(missing))
    assert cli("rules", "list")[0] == 0
    assert cli("logs")[0] == 0
    assert cli("logs", "--metrics")[0] == 0
    assert cli("rules", "show", "x")[0] == 2
    assert cli("emit", "pushImage", "ns/app:v1")[0] == 0
    assert cli("redeliver", "1")[0] == 2
    assert not (tmp_path / "typo").exists()
    assert cli("rules", "create", "x", "--url", "http://127.0.0.1:1/")[0] == 0
    assert missing.exists()
