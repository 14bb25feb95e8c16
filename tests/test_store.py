"""The SQLite store: rules round-trip, the trigger log, and the default location."""

from __future__ import annotations

import pytest

from receiver.registry.rules import RuleError, TriggerRule
from receiver.registry.store import NotFound, Store, default_db_path

URL = "http://127.0.0.1:1/hook"


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "sub" / "r.db") as s:
        yield s


def test_rules_round_trip(store):
    """A stored rule comes back equal, headers and Unicode included."""
    rule = TriggerRule("r", URL, actions=("pushImage",), namespace="ns", repository="/a*",
                       tag="v*", headers=(("X", "1"), ("X", "2")), description="说明", enabled=False)
    store.add_rule(rule)
    assert store.get_rule("r") == rule
    assert store.list_rules() == [rule]


def test_duplicate_and_missing_names(store):
    """A taken name is a RuleError; unknown names are NotFound."""
    store.add_rule(TriggerRule("r", URL))
    with pytest.raises(RuleError, match="a rule named 'r' already exists"):
        store.add_rule(TriggerRule("r", URL))
    for call in (lambda: store.get_rule("x"), lambda: store.delete_rule("x"),
                 lambda: store.save_rule(TriggerRule("x", URL))):
        with pytest.raises(NotFound, match="no rule named 'x'"):
            call()


def test_enabled_rules_follow_changes_from_other_connections(store, tmp_path):
    """The enabled-rule cache notices writes by this and by another connection."""
    store.add_rule(TriggerRule("a", URL))
    assert [r.name for r in store.enabled_rules()] == ["a"]
    with Store(store.path) as other:
        other.add_rule(TriggerRule("b", URL))
        other.save_rule(other.get_rule("a").replace(enabled=False))
    assert [r.name for r in store.enabled_rules()] == ["b"]
    store.delete_rule("b")
    assert store.enabled_rules() == ()


def test_trigger_log_rows(store):
    """Rows start pending, record each attempt, and list newest first with filters."""
    d = store.start_delivery(rule="r", action="pushImage", repository="ns/app", tags=["v1", "a,b"],
                             url=URL, body='{"type":"pushImage"}')
    assert d.status == "pending" and d.attempts == 0
    d = store.update_delivery(d, status="failed", http_status=500, attempts=3, error="HTTP 500")
    e = store.start_delivery(rule=None, action="deleteImage", repository="ns/app", tags=[], url=URL,
                             body="{}")
    assert store.get_delivery(d.task_id) == d
    assert [x.task_id for x in store.list_deliveries()] == [e.task_id, d.task_id]
    assert store.list_deliveries(rule="r") == [d]
    assert store.list_deliveries(status="pending") == [e]
    assert store.list_deliveries(limit=1) == [store.get_delivery(e.task_id)]
    assert d.to_dict()["tags"] == ["v1", "a,b"] and d.to_dict()["body"] == {"type": "pushImage"}
    with pytest.raises(NotFound, match="no delivery with task id 999"):
        store.get_delivery(999)


def test_store_is_private_to_its_owner(tmp_path):
    """The store holds secrets: a new one is readable by its owner only."""
    import stat

    with Store(tmp_path / "new" / "r.db") as s:
        s.add_rule(TriggerRule("r", URL, headers=(("Authentication", "s3cret"),)))
        for path in (tmp_path / "new").iterdir():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


def test_default_path(monkeypatch, tmp_path):
    """RECEIVER_DB wins; otherwise the XDG data directory."""
    monkeypatch.setenv("RECEIVER_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"
    monkeypatch.delenv("RECEIVER_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_db_path() == tmp_path / "data" / "receiver" / "receiver.db"


def test_the_format_is_stored(store):
    """A rule's format is stored and read back, and changed by save_rule."""
    store.add_rule(TriggerRule("r", URL, format="cloudevents"))
    assert store.get_rule("r").format == "cloudevents"
    store.save_rule(store.get_rule("r").replace(format="harbor"))
    assert store.get_rule("r") == TriggerRule("r", URL, actions=("pushImage", "deleteImage"),
                                              format="harbor")


# The rules table as the first version made it, without the format column.
OLD_SCHEMA = """
CREATE TABLE rules (
    name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', actions TEXT NOT NULL,
    namespace TEXT, repository TEXT NOT NULL DEFAULT '', tag TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL, headers TEXT NOT NULL DEFAULT '[]', enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
INSERT INTO rules (name, actions, url, headers, created_at, updated_at) VALUES
    ('old', '["pushImage"]', 'http://127.0.0.1:1/hook', '[["X-Key", "k"]]', 'then', 'then');
"""


def test_a_store_from_before_formats_is_migrated(tmp_path):
    """A store made before rules had a format opens, its rules read as tcr, and they can be
    given another format; opening it again changes nothing."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    conn.close()
    with Store(path) as s:
        assert s.get_rule("old") == TriggerRule("old", URL, actions=("pushImage",),
                                                headers=(("X-Key", "k"),))
        s.save_rule(s.get_rule("old").replace(format="harbor"))
    with Store(path) as s, Store(path) as again:
        assert s.get_rule("old").format == again.get_rule("old").format == "harbor"
