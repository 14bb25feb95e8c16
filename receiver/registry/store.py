"""The embedded store: trigger rules and the trigger log in one SQLite file.

Owns the SQL and nothing else: no HTTP, no matching. The file is ``RECEIVER_DB``, or
``$XDG_DATA_HOME/receiver/receiver.db`` (``~/.local/share/receiver/receiver.db``) by default.
One :class:`Store` may be shared by threads; writes are serialised by a lock.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sqlite3
import threading
import typing as t
from datetime import datetime, timezone

from .rules import RuleError, TriggerRule

__all__ = ["Delivery", "NotFound", "Store", "default_db_path"]

STATUSES = ("pending", "success", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rules (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    actions     TEXT NOT NULL,
    namespace   TEXT,
    repository  TEXT NOT NULL DEFAULT '',
    tag         TEXT NOT NULL DEFAULT '',
    url         TEXT NOT NULL,
    headers     TEXT NOT NULL DEFAULT '[]',
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    format      TEXT NOT NULL DEFAULT 'tcr'
);
CREATE TABLE IF NOT EXISTS deliveries (
    task_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        TEXT,
    action      TEXT NOT NULL,
    repository  TEXT NOT NULL,
    tags        TEXT NOT NULL DEFAULT '[]',
    url         TEXT NOT NULL,
    status      TEXT NOT NULL,
    http_status INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_rule ON deliveries (rule, task_id);
"""

#: Columns added since the first version, each with its definition, for stores made before.
_ADDED_COLUMNS = (("rules", "format", "TEXT NOT NULL DEFAULT 'tcr'"),)


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns a store made by an earlier version lacks; another process doing the
    same at the same moment is fine."""
    for table, column, definition in _ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise


class NotFound(LookupError):
    """No rule of that name, or no delivery with that task id."""


def default_db_path() -> pathlib.Path:
    """``RECEIVER_DB`` if set, else the per-user data directory (XDG)."""
    env = os.environ.get("RECEIVER_DB")
    if env:
        return pathlib.Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return pathlib.Path(base) / "receiver" / "receiver.db"


def now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One row of the trigger log: a webhook request and how it went.

    Header values are never stored here.
    """

    task_id: int
    rule: str | None
    action: str
    repository: str
    tags: tuple[str, ...]
    url: str
    status: str
    http_status: int | None
    attempts: int
    error: str | None
    body: str
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, t.Any]:
        """The row as plain data, the body decoded from JSON."""
        out = dataclasses.asdict(self)
        out["tags"] = list(self.tags)
        out["body"] = json.loads(self.body)
        return out


class Store:
    """Rules and trigger log in SQLite.

    :param path: the database file; default :func:`default_db_path`. ``":memory:"`` works.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = str(path) if path is not None else str(default_db_path())
        if self.path != ":memory:":
            # The rules hold header values (secrets): only the owner may read the store.
            # SQLite gives its -wal and -shm files the database file's permissions.
            try:
                pathlib.Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            except OSError as exc:
                raise OSError(f"cannot create the store {self.path}: {exc.strerror or exc}") from exc
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        self._conn.row_factory = sqlite3.Row
        with self._lock, self._conn:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            _migrate(self._conn)
        self._rule_writes = 0
        self._enabled: tuple[tuple[int, int], tuple[TriggerRule, ...]] | None = None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: t.Sequence[t.Any], *, rules: bool = False) -> sqlite3.Cursor:
        with self._lock, self._conn:
            if rules:
                self._rule_writes += 1
            return self._conn.execute(sql, params)

    def _read(self, sql: str, params: t.Sequence[t.Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- rules ----------------------------------------------------------------------------

    def add_rule(self, rule: TriggerRule) -> TriggerRule:
        """Store a new rule; raises RuleError if the name is taken."""
        stamp = now()
        try:
            self._write(
                "INSERT INTO rules (name, description, actions, namespace, repository, tag, url,"
                " headers, enabled, format, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*_rule_columns(rule), stamp, stamp),
                rules=True,
            )
        except sqlite3.IntegrityError:
            raise RuleError(f"a rule named {rule.name!r} already exists") from None
        return rule

    def save_rule(self, rule: TriggerRule) -> TriggerRule:
        """Replace the stored rule of the same name; raises NotFound if there is none."""
        cur = self._write(
            "UPDATE rules SET description=?, actions=?, namespace=?, repository=?, tag=?, url=?,"
            " headers=?, enabled=?, format=?, updated_at=? WHERE name=?",
            (*_rule_columns(rule)[1:], now(), rule.name),
            rules=True,
        )
        if cur.rowcount == 0:
            raise NotFound(f"no rule named {rule.name!r}")
        return rule

    def get_rule(self, name: str) -> TriggerRule:
        rows = self._read("SELECT * FROM rules WHERE name=?", (name,))
        if not rows:
            raise NotFound(f"no rule named {name!r}")
        return _rule_from_row(rows[0])

    def list_rules(self) -> list[TriggerRule]:
        return [_rule_from_row(row) for row in self._read("SELECT * FROM rules ORDER BY name")]

    def delete_rule(self, name: str) -> None:
        if self._write("DELETE FROM rules WHERE name=?", (name,), rules=True).rowcount == 0:
            raise NotFound(f"no rule named {name!r}")

    def enabled_rules(self) -> tuple[TriggerRule, ...]:
        """The enabled rules, cached until a rule changes here or the file changes elsewhere.

        ``PRAGMA data_version`` moves when another connection commits (a trigger-log row
        written by another process reloads the rules too, which is merely wasted work).
        """
        with self._lock:
            version = (self._conn.execute("PRAGMA data_version").fetchone()[0], self._rule_writes)
            if self._enabled is not None and self._enabled[0] == version:
                return self._enabled[1]
            rows = self._conn.execute("SELECT * FROM rules WHERE enabled=1 ORDER BY name").fetchall()
            rules = tuple(_rule_from_row(row) for row in rows)
            self._enabled = (version, rules)
            return rules

    # --- the trigger log ------------------------------------------------------------------

    def start_delivery(
        self, *, rule: str | None, action: str, repository: str, tags: t.Sequence[str],
        url: str, body: str,
    ) -> Delivery:
        """A new ``pending`` row, before the first attempt."""
        stamp = now()
        cur = self._write(
            "INSERT INTO deliveries (rule, action, repository, tags, url, status, attempts, body,"
            " created_at, updated_at) VALUES (?,?,?,?,?,'pending',0,?,?,?)",
            (rule, action, repository, json.dumps(list(tags)), url, body, stamp, stamp),
        )
        return Delivery(
            task_id=t.cast(int, cur.lastrowid), rule=rule, action=action, repository=repository,
            tags=tuple(tags), url=url, status="pending", http_status=None, attempts=0,
            error=None, body=body, created_at=stamp, updated_at=stamp,
        )

    def update_delivery(
        self, delivery: Delivery, *, status: str, http_status: int | None, attempts: int,
        error: str | None,
    ) -> Delivery:
        """Record an attempt's outcome on the row."""
        stamp = now()
        self._write(
            "UPDATE deliveries SET status=?, http_status=?, attempts=?, error=?, updated_at=?"
            " WHERE task_id=?",
            (status, http_status, attempts, error, stamp, delivery.task_id),
        )
        return Delivery(
            task_id=delivery.task_id, rule=delivery.rule, action=delivery.action,
            repository=delivery.repository, tags=delivery.tags, url=delivery.url, status=status,
            http_status=http_status, attempts=attempts, error=error, body=delivery.body,
            created_at=delivery.created_at, updated_at=stamp,
        )

    def get_delivery(self, task_id: int) -> Delivery:
        rows = self._read("SELECT * FROM deliveries WHERE task_id=?", (task_id,))
        if not rows:
            raise NotFound(f"no delivery with task id {task_id}")
        return _delivery_from_row(rows[0])

    def list_deliveries(
        self, *, rule: str | None = None, status: str | None = None, limit: int | None = 20
    ) -> list[Delivery]:
        """The newest rows first, optionally for one rule or status."""
        where, params = [], []
        if rule is not None:
            where.append("rule=?")
            params.append(rule)
        if status is not None:
            where.append("status=?")
            params.append(status)
        sql = "SELECT * FROM deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY task_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_delivery_from_row(row) for row in self._read(sql, params)]


def _rule_columns(rule: TriggerRule) -> tuple[t.Any, ...]:
    return (
        rule.name, rule.description, json.dumps(list(rule.actions)), rule.namespace,
        rule.repository, rule.tag, rule.url, json.dumps([list(h) for h in rule.headers]),
        int(rule.enabled), rule.format,
    )


def _rule_from_row(row: sqlite3.Row) -> TriggerRule:
    return TriggerRule._trusted(
        name=row["name"], url=row["url"], actions=tuple(json.loads(row["actions"])),
        namespace=row["namespace"], repository=row["repository"], tag=row["tag"],
        headers=tuple((k, v) for k, v in json.loads(row["headers"])),
        description=row["description"], enabled=bool(row["enabled"]), format=row["format"],
    )


def _delivery_from_row(row: sqlite3.Row) -> Delivery:
    return Delivery(
        task_id=row["task_id"], rule=row["rule"], action=row["action"],
        repository=row["repository"], tags=tuple(json.loads(row["tags"])),
        url=row["url"], status=row["status"], http_status=row["http_status"],
        attempts=row["attempts"], error=row["error"], body=row["body"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )
