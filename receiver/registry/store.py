"""The embedded store: trigger rules, the trigger log and the sender's counters in one SQLite
file.

Owns the SQL and nothing else: no HTTP, no matching, no retry policy. The file is
``RECEIVER_DB``, or ``$XDG_DATA_HOME/receiver/receiver.db`` (``~/.local/share/receiver/
receiver.db``) by default. One :class:`Store` may be shared by threads; its statements are
serialised by a lock.

Opening a store tidies it, cheaply (each step is one indexed look-up when there is nothing to
do): rows still ``pending`` past their deadline (their sender was killed, or could not write)
are closed as ``failed`` with the error ``interrupted``, and rows older than
``RECEIVER_LOG_RETENTION`` days are deleted with their attempts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import sqlite3
import stat
import threading
import time
import typing as t
from datetime import datetime, timezone

from ..core.matcher import PatternError, repository_fullmatch, tag_fullmatch
from ..core.settings import number
from .rules import RuleError, TriggerRule

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "SWEPT",
    "Attempt",
    "Delivery",
    "NewDelivery",
    "NotFound",
    "Store",
    "StoreCorrupt",
    "StoreTooNew",
    "default_db_path",
    "log_retention",
]

log = logging.getLogger("receiver.registry.store")

STATUSES = ("pending", "success", "failed")
#: The outcomes the delivery counters keep, by a row's final status.
OUTCOMES = {"success": "succeeded", "failed": "failed"}
#: The error of a row closed because its deadline passed while it was pending.
SWEPT = "interrupted"
DEFAULT_RETENTION_DAYS = 30.0
MAX_RETENTION_DAYS = 3650
#: The page size of a new store (a store made before keeps its own). A delivery commits
#: twice, and each commit appends every page it touched to the write-ahead log: the row, its
#: two indexes, the attempt, the counter. Pages of 1 KiB rather than SQLite's 4 KiB make that
#: a quarter of the bytes to write and sync; the row of a common body still fits in one.
PAGE_SIZE = 1024
#: The write-ahead log is checkpointed (copied into the database, with its syncs) once it
#: holds this many bytes: what SQLite's defaults give (1000 pages of 4 KiB), whatever the
#: page size. (With ``synchronous=NORMAL`` a commit is not synced, checkpoint or not.)
WAL_BYTES = 1000 * 4096
#: The version of the schema below; a store with an older one is migrated when opened.
SCHEMA_VERSION = 2

_SCHEMA = (
    """
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
    )
    """,
    """
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
        updated_at  TEXT NOT NULL,
        deadline    REAL
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS deliveries_rule ON deliveries (rule, task_id)
    """,
    """
    CREATE TABLE IF NOT EXISTS attempts (
        task_id     INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        http_status INTEGER,
        error       TEXT,
        answer      BLOB NOT NULL DEFAULT x'',
        PRIMARY KEY (task_id, attempt)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS delivery_counts (
        rule        TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        count       INTEGER NOT NULL,
        PRIMARY KEY (rule, outcome)
    ) WITHOUT ROWID
    """,
)

#: Columns added since the first version, each with its definition, for stores made before.
_ADDED_COLUMNS = (
    ("rules", "format", "TEXT NOT NULL DEFAULT 'tcr'"),
    ("deliveries", "deadline", "REAL"),
)

#: Run after the columns exist; each statement may run twice (two processes migrating).
_MIGRATIONS = (
    "CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (deadline)"
    " WHERE status = 'pending'",
    # Rows an earlier version left pending: give them an hour from their creation.
    "UPDATE deliveries SET deadline = (julianday(created_at) - 2440587.5) * 86400.0 + 3600"
    " WHERE status = 'pending' AND deadline IS NULL",
    # The counters start from the rows already logged.
    "INSERT OR IGNORE INTO delivery_counts (rule, outcome, count)"
    " SELECT coalesce(rule, ''), CASE status WHEN 'success' THEN 'succeeded' ELSE 'failed' END,"
    " count(*) FROM deliveries WHERE status != 'pending' GROUP BY 1, 2",
)

_COUNT = (
    "INSERT INTO delivery_counts (rule, outcome, count) VALUES (?, ?, ?)"
    " ON CONFLICT (rule, outcome) DO UPDATE SET count = count + excluded.count"
)
_OPEN = (
    "INSERT INTO deliveries (rule, action, repository, tags, url, status, attempts, body,"
    " created_at, updated_at, deadline) VALUES (?,?,?,?,?,'pending',0,?,?,?,?)"
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store made by an earlier version up to :data:`SCHEMA_VERSION`, in one
    transaction; a process that finds it done already (it waited for another's) does
    nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in _SCHEMA:
                conn.execute(statement)
            for table, column, definition in _ADDED_COLUMNS:
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            for statement in _MIGRATIONS:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class NotFound(LookupError):
    """No rule of that name, or no delivery with that task id."""


class StoreCorrupt(RuleError):
    """A row of the store cannot be read (written by hand, or damaged): a rule's headers or
    actions that are not JSON, a task's body that is not JSON. The message names the row, the
    column and what is wrong, never a header value."""


class StoreTooNew(RuleError):
    """The store was written by a newer version of receiver, whose schema this version does
    not know: it is left alone rather than written in a shape the newer one would misread."""


def default_db_path() -> pathlib.Path:
    """``RECEIVER_DB`` if set, else the per-user data directory (XDG)."""
    env = os.environ.get("RECEIVER_DB")
    if env:
        return pathlib.Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return pathlib.Path(base) / "receiver" / "receiver.db"


def log_retention(value: t.Any = None) -> float:
    """The days the trigger log keeps a row: *value*, else ``RECEIVER_LOG_RETENTION`` (read
    as the receiver reads it, JSON first), else 30. A number above 0 and at most 3650
    (``0.5`` is 12 hours), as for the receiver's finished jobs.

    :raises ConfigError: anything else, naming the setting.
    """
    if value is None:
        text = os.environ.get("RECEIVER_LOG_RETENTION")
        if text is None or not text.strip():
            return DEFAULT_RETENTION_DAYS
        try:
            value = json.loads(text)
        except ValueError:
            value = text
    return number({"RECEIVER_LOG_RETENTION": value}, "RECEIVER_LOG_RETENTION",
                  DEFAULT_RETENTION_DAYS, minimum=0, above=True, maximum=MAX_RETENTION_DAYS)


def now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and ``Z``."""
    return iso(time.time())


def iso(timestamp: float) -> str:
    """*timestamp* (seconds since the epoch) as :func:`now` writes it."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        """The row as plain data, the body decoded from JSON.

        :raises StoreCorrupt: the stored body is not JSON.
        """
        out = dataclasses.asdict(self)
        out["tags"] = list(self.tags)
        out["body"] = self.decoded_body()
        return out

    def decoded_body(self) -> t.Any:
        """The body, decoded; :raises StoreCorrupt: it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise StoreCorrupt(
                f"task {self.task_id} in the store is corrupt: body is not JSON"
            ) from None


@dataclasses.dataclass(frozen=True)
class NewDelivery:
    """What a new trigger-log row says before its first attempt."""

    rule: str | None
    action: str
    repository: str
    tags: tuple[str, ...]
    url: str
    body: str


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One attempt of a delivery, as the trigger log keeps it.

    :param duration_ms: from the first byte written to the answer read, or the failure.
    :param answer: the first 4 KiB of the answer's body, header values blotted out.
    """

    task_id: int
    attempt: int
    started_at: str
    duration_ms: float
    http_status: int | None
    error: str | None
    answer: bytes = b""

    def answer_text(self) -> str:
        """The answer as text (UTF-8, undecodable bytes replaced)."""
        return self.answer.decode("utf-8", "replace")

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "attempt": self.attempt,
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 3),
            "http_status": self.http_status,
            "error": self.error,
            "answer": self.answer_text(),
        }


class Store:
    """Rules, trigger log and delivery counters in SQLite.

    :param path: the database file; default :func:`default_db_path`. ``":memory:"`` works.
        A new file is made readable by its owner only (0600), in directories made 0700; an
        existing one that others may read is made 0600, with a warning.
    :param retention_days: how long the trigger log keeps a row; default
        :func:`log_retention` (``RECEIVER_LOG_RETENTION``, else 30).
    :param busy_timeout: seconds a statement waits for another process's lock.
    :param on_warning: hears each warning (a store others could read); default: logged.
    :param tidy: close the rows past their deadline and delete those past the retention.
    :raises ConfigError: ``RECEIVER_LOG_RETENTION`` (or *retention_days*) is not a number
        above 0 and at most 3650.
    :raises OSError: the file or its directory cannot be made.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        retention_days: float | None = None,
        busy_timeout: float = 10.0,
        on_warning: t.Callable[[str], None] | None = None,
        tidy: bool = True,
    ) -> None:
        self.path = str(path) if path is not None else str(default_db_path())
        self.retention_days = log_retention(retention_days)
        created = self.path == ":memory:" or _create_private(self.path)
        self._lock = threading.Lock()
        self._busy_ms = int(busy_timeout * 1000)
        # Autocommit: every write below says where its transaction begins and ends.
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, timeout=busy_timeout, isolation_level=None
        )
        self._conn.row_factory = sqlite3.Row
        try:
            with self._lock:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:  # before anything here changes it
                    raise StoreTooNew(
                        f"the store {self.path} was written by a newer version of receiver "
                        f"(schema {version}; this version knows {SCHEMA_VERSION}): upgrade "
                        "receiver to use it"
                    )
                if created:
                    self._conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
                self._conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_BYTES // page_size}")
                if version < SCHEMA_VERSION:
                    _migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise
        if not created:  # only once it reads as a store: another file is left alone
            _tighten(self.path, on_warning or log.warning)
        self._rule_writes = 0
        self._enabled: tuple[tuple[int, int], tuple[TriggerRule, ...]] | None = None
        if tidy:
            self.tidy()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> t.Iterator[sqlite3.Connection]:
        """One write transaction, holding the lock: committed if the block ends, else rolled
        back. ``BEGIN IMMEDIATE`` takes the write lock first, so a busy store waits up to the
        busy timeout here, never half-way. (A generator, not a class with ``__enter__`` and
        ``__exit__``: a Ctrl-C landing between acquiring the lock and the ``try`` of such a
        class leaves the lock held, and the command hangs in its own clean-up.)"""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _write(self, sql: str, params: t.Sequence[t.Any], *, rules: bool = False) -> sqlite3.Cursor:
        with self._transaction() as conn:
            if rules:
                self._rule_writes += 1
            return conn.execute(sql, params)

    def _read(self, sql: str, params: t.Sequence[t.Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- housekeeping ---------------------------------------------------------------------

    def tidy(self, at: float | None = None) -> tuple[int, int]:
        """Close the rows still pending past their deadline as ``failed`` (error
        :data:`SWEPT`), and delete the rows (and their attempts) older than the retention.

        Cheap: with nothing to close, one look-up in the index of pending rows; rows are
        deleted once the oldest is an hour past the retention (so at most about once an
        hour), by a binary search on the task id. A store that is locked or read-only is
        left as it is. Returns the numbers of rows closed and deleted.
        """
        at = time.time() if at is None else at
        cutoff = at - self.retention_days * 86400
        with self._lock:
            self._conn.execute("PRAGMA busy_timeout = 200")  # housekeeping never waits long
            try:
                expired = self._conn.execute(
                    "SELECT 1 FROM deliveries WHERE status = 'pending' AND deadline < ? LIMIT 1",
                    (at,),
                ).fetchone()
                oldest = self._conn.execute(
                    "SELECT created_at FROM deliveries ORDER BY task_id LIMIT 1"
                ).fetchone()
                stale = cutoff > 3600 and oldest is not None and oldest[0] < iso(cutoff - 3600)
                if not expired and not stale:
                    return 0, 0
                return self._tidy(at, iso(cutoff) if stale else None)
            except sqlite3.OperationalError as exc:  # locked, read-only: next time
                log.debug("store not tidied: %s", exc)
                return 0, 0
            finally:
                self._conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def _tidy(self, at: float, old: str | None) -> tuple[int, int]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            stamp = now()
            rows = conn.execute(
                "SELECT task_id, rule FROM deliveries WHERE status = 'pending' AND deadline < ?",
                (at,),
            ).fetchall()
            for row in rows:
                conn.execute(
                    "UPDATE deliveries SET status = 'failed', error = ?, updated_at = ?"
                    " WHERE task_id = ?",
                    (SWEPT, stamp, row["task_id"]),
                )
                conn.execute(_COUNT, (row["rule"] or "", "failed", 1))
            deleted = 0
            if old is not None:
                first_kept = _first_created_since(conn, old)
                conn.execute("DELETE FROM attempts WHERE task_id < ?", (first_kept,))
                deleted = conn.execute(
                    "DELETE FROM deliveries WHERE task_id < ?", (first_kept,)
                ).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if rows or deleted:
            log.info("trigger log tidied: %d row(s) closed as %s, %d deleted", len(rows), SWEPT,
                     deleted)
        return len(rows), deleted

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
        """The rule *name*; :raises NotFound: none; :raises StoreCorrupt: its row is damaged."""
        rows = self._read("SELECT * FROM rules WHERE name=?", (name,))
        if not rows:
            raise NotFound(f"no rule named {name!r}")
        return _rule_from_row(rows[0])

    def list_rules(self) -> list[TriggerRule]:
        """Every rule by name; :raises StoreCorrupt: a row is damaged."""
        return [_rule_from_row(row) for row in self._read("SELECT * FROM rules ORDER BY name")]

    def rule_names(self) -> list[str]:
        """Every rule's name, whatever state its row is in."""
        return [row[0] for row in self._read("SELECT name FROM rules ORDER BY name")]

    def delete_rule(self, name: str) -> None:
        if self._write("DELETE FROM rules WHERE name=?", (name,), rules=True).rowcount == 0:
            raise NotFound(f"no rule named {name!r}")

    def enabled_rules(self) -> tuple[TriggerRule, ...]:
        """The enabled rules, cached until a rule changes here or the file changes elsewhere.

        A damaged row does not stop the others: it comes back with its
        :attr:`~receiver.registry.rules.TriggerRule.defect` set, and with no actions when
        what it matches on cannot be read.

        ``PRAGMA data_version`` moves when another connection commits (a trigger-log row
        written by another process reloads the rules too, which is merely wasted work).
        """
        with self._lock:
            version = (self._conn.execute("PRAGMA data_version").fetchone()[0], self._rule_writes)
            if self._enabled is not None and self._enabled[0] == version:
                return self._enabled[1]
            rows = self._conn.execute(
                "SELECT * FROM rules WHERE enabled=1 ORDER BY name"
            ).fetchall()
            rules = tuple(_rule_from_row(row, lenient=True) for row in rows)
            self._enabled = (version, rules)
            return rules

    # --- the trigger log ------------------------------------------------------------------

    def open_deliveries(
        self, new: t.Sequence[NewDelivery], *, deadline: float | None = None
    ) -> list[Delivery]:
        """New ``pending`` rows, one per item of *new*, in one transaction: before the first
        attempt, so that a crash leaves a trace of every delivery.

        :param deadline: when (seconds since the epoch) each must have ended; a row still
            pending then is closed by :meth:`tidy`. ``None``: an hour from now.
        """
        stamp = now()
        deadline = time.time() + 3600 if deadline is None else deadline
        if len(new) == 1:  # one statement is a transaction of its own
            with self._lock:
                return [_open(self._conn, new[0], stamp, deadline)]
        with self._transaction() as conn:
            return [_open(conn, d, stamp, deadline) for d in new]

    def start_delivery(
        self, *, rule: str | None, action: str, repository: str, tags: t.Sequence[str],
        url: str, body: str, deadline: float | None = None,
    ) -> Delivery:
        """A new ``pending`` row, before the first attempt (see :meth:`open_deliveries`)."""
        new = NewDelivery(rule, action, repository, tuple(tags), url, body)
        return self.open_deliveries([new], deadline=deadline)[0]

    def update_delivery(
        self, delivery: Delivery, *, status: str, http_status: int | None, attempts: int,
        error: str | None, attempt: Attempt | None = None,
    ) -> Delivery:
        """Record an attempt's outcome on the row, in one transaction with the attempt's own
        row (*attempt*) and, when *status* is final, the delivery counters.

        A row the store already closed as :data:`SWEPT` (its deadline passed while this
        process was stopped or locked out) takes a final outcome that arrives late, and the
        counters are corrected; it takes no ``pending`` update.
        """
        stamp = now()
        with self._transaction() as conn:
            if attempt is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO attempts (task_id, attempt, started_at, duration_ms,"
                    " http_status, error, answer) VALUES (?,?,?,?,?,?,?)",
                    (attempt.task_id, attempt.attempt, attempt.started_at, attempt.duration_ms,
                     attempt.http_status, attempt.error, attempt.answer),
                )
            changed = conn.execute(
                "UPDATE deliveries SET status=?, http_status=?, attempts=?, error=?, updated_at=?"
                " WHERE task_id=? AND status='pending'",
                (status, http_status, attempts, error, stamp, delivery.task_id),
            ).rowcount
            if status in OUTCOMES:
                if changed:
                    conn.execute(_COUNT, (delivery.rule or "", OUTCOMES[status], 1))
                elif conn.execute(
                    "UPDATE deliveries SET status=?, http_status=?, attempts=?, error=?,"
                    " updated_at=? WHERE task_id=? AND status='failed' AND error=?",
                    (status, http_status, attempts, error, stamp, delivery.task_id, SWEPT),
                ).rowcount:
                    conn.execute(_COUNT, (delivery.rule or "", "failed", -1))
                    conn.execute(_COUNT, (delivery.rule or "", OUTCOMES[status], 1))
        return Delivery(
            task_id=delivery.task_id, rule=delivery.rule, action=delivery.action,
            repository=delivery.repository, tags=delivery.tags, url=delivery.url, status=status,
            http_status=http_status, attempts=attempts, error=error, body=delivery.body,
            created_at=delivery.created_at, updated_at=stamp,
        )

    def interrupt_deliveries(self, task_ids: t.Iterable[int], error: str) -> int:
        """Close those of *task_ids* still pending as ``failed`` with *error*; returns how many."""
        stamp = now()
        closed = 0
        with self._transaction() as conn:
            for task_id in task_ids:
                row = conn.execute(
                    "SELECT rule FROM deliveries WHERE task_id=? AND status='pending'",
                    (task_id,),
                ).fetchone()
                if row is not None:
                    conn.execute(
                        "UPDATE deliveries SET status='failed', error=?, updated_at=?"
                        " WHERE task_id=?",
                        (error, stamp, task_id),
                    )
                    conn.execute(_COUNT, (row["rule"] or "", "failed", 1))
                    closed += 1
        return closed

    def get_delivery(self, task_id: int) -> Delivery:
        rows = self._read("SELECT * FROM deliveries WHERE task_id=?", (task_id,))
        if not rows:
            raise NotFound(f"no delivery with task id {task_id}")
        return _delivery_from_row(rows[0])

    def attempts(self, task_id: int) -> list[Attempt]:
        """The attempts of the task *task_id*, in order (none for a row logged before
        attempts were kept)."""
        rows = self._read("SELECT * FROM attempts WHERE task_id=? ORDER BY attempt", (task_id,))
        return [
            Attempt(task_id=r["task_id"], attempt=r["attempt"], started_at=r["started_at"],
                    duration_ms=r["duration_ms"], http_status=r["http_status"],
                    error=r["error"], answer=bytes(r["answer"] or b""))
            for r in rows
        ]

    def list_deliveries(
        self, *, rule: str | None = None, status: str | None = None, limit: int | None = 20
    ) -> list[Delivery]:
        """The newest rows first, optionally for one rule or status."""
        where: list[str] = []
        params: list[t.Any] = []
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

    # --- counters -------------------------------------------------------------------------

    def delivery_counts(self) -> dict[tuple[str, str], int]:
        """Deliveries ended so far, by ``(rule, outcome)``: outcome ``succeeded`` or
        ``failed``, rule ``""`` for those sent without a rule. Retention never lowers them."""
        rows = self._read("SELECT rule, outcome, count FROM delivery_counts")
        return {(r["rule"], r["outcome"]): r["count"] for r in rows}


def _open(conn: sqlite3.Connection, new: NewDelivery, stamp: str, deadline: float) -> Delivery:
    """Insert the pending row of *new*; what it says."""
    cur = conn.execute(_OPEN, (new.rule, new.action, new.repository, _json_list(new.tags),
                               new.url, new.body, stamp, stamp, deadline))
    task_id: int = cur.lastrowid  # type: ignore[assignment]  # an INSERT's, never None
    return Delivery(
        task_id=task_id, rule=new.rule, action=new.action,
        repository=new.repository, tags=tuple(new.tags), url=new.url, status="pending",
        http_status=None, attempts=0, error=None, body=new.body, created_at=stamp,
        updated_at=stamp,
    )


def _json_list(items: t.Sequence[str]) -> str:
    """``json.dumps(list(items))`` for strings (tags), without setting up an encoder."""
    try:
        return "[" + ", ".join(map(_ascii, items)) + "]"
    except TypeError:  # not all strings after all: as json.dumps writes them
        return json.dumps(list(items))


_ascii = json.encoder.encode_basestring_ascii


def _first_created_since(conn: sqlite3.Connection, since: str) -> int:
    """The first task id created at or after *since* (one past the last if none was): a
    binary search on the task id, which grows with the creation time, so a few indexed
    look-ups whatever the size of the log."""
    lo = 0
    last = conn.execute("SELECT max(task_id) FROM deliveries").fetchone()[0]
    hi = (last or 0) + 1
    # Every row before lo is older than since; the first row at or after hi is not.
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(
            "SELECT task_id, created_at FROM deliveries WHERE task_id >= ? ORDER BY task_id"
            " LIMIT 1", (mid,),
        ).fetchone()
        if row is None or row[1] >= since:
            hi = mid
        else:
            lo = row[0] + 1
    return lo


def _create_private(path: str) -> bool:
    """Create the store's missing directories (0700 each) and file (0600), whatever the
    umask lets through; returns whether the file is new.

    :raises OSError: they cannot be created.
    """
    target = pathlib.Path(path)
    missing = []
    parent = target.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # made by another process meanwhile
            pass
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _tighten(path: str, warn: t.Callable[[str], None]) -> None:
    """Make an existing store (and its -wal and -shm) that others may read 0600, with one
    warning; or warn that it cannot be (another user owns it)."""
    loose = []
    for name in (path, path + "-wal", path + "-shm"):
        try:
            info = os.stat(name)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
            loose.append((name, info))
    if not loose:
        return
    mode = stat.S_IMODE(loose[0][1].st_mode)
    try:
        for name, _ in loose:
            os.chmod(name, 0o600)
    except PermissionError:
        owner = loose[0][1].st_uid
        warn(f"the store {path} holds header secrets and other users may read it (mode "
             f"{mode:04o}), but it cannot be made private: it belongs to another user "
             f"(uid {owner})")
    except OSError as exc:
        warn(f"the store {path} holds header secrets and other users may read it (mode "
             f"{mode:04o}), but it cannot be made private: {exc.strerror or exc}")
    else:
        warn(f"the store {path} holds header secrets and other users could read it (mode "
             f"{mode:04o}); it is now 0600")


def _rule_columns(rule: TriggerRule) -> tuple[t.Any, ...]:
    return (
        rule.name, rule.description, json.dumps(list(rule.actions)), rule.namespace,
        rule.repository, rule.tag, rule.url, json.dumps([list(h) for h in rule.headers]),
        int(rule.enabled), rule.format,
    )


def _rule_from_row(row: sqlite3.Row, *, lenient: bool = False) -> TriggerRule:
    """The rule a row holds. A damaged row raises StoreCorrupt, or, if *lenient*, comes back
    with its defect, no headers when those are unreadable, and no actions (so that it matches
    nothing) when what it matches on is."""
    name = row["name"]
    defect: str | None = None

    def corrupt(what: str) -> None:
        nonlocal defect
        message = f"rule {name!r} in the store is corrupt: {what}"
        if not lenient:
            raise StoreCorrupt(message)
        defect = defect or message

    actions: tuple[str, ...] = ()
    try:
        loaded = json.loads(row["actions"])
    except (TypeError, ValueError):
        corrupt("actions are not JSON")
    else:
        if isinstance(loaded, list) and all(isinstance(a, str) for a in loaded):
            actions = tuple(loaded)
        else:
            corrupt("actions are not a list of names")
    headers: tuple[tuple[str, str], ...] = ()
    try:
        loaded = json.loads(row["headers"])
    except (TypeError, ValueError):
        corrupt("headers are not JSON")
    else:
        if isinstance(loaded, list) and all(
            isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)
            for h in loaded
        ):
            headers = tuple((k, v) for k, v in loaded)
        else:
            corrupt("headers are not a list of [name, value] pairs")
    fields = {"namespace": row["namespace"], "repository": row["repository"], "tag": row["tag"]}
    if not all(v is None or isinstance(v, str) for v in fields.values()):
        corrupt("its namespace, repository or tag is not text")
        fields = {"namespace": None, "repository": "", "tag": ""}
        actions = ()
    elif lenient:
        try:
            repository_fullmatch(fields["repository"] or "")
            tag_fullmatch(fields["tag"] or "")
        except PatternError as exc:
            corrupt(f"its pattern is invalid ({exc})")
            actions = ()
    return TriggerRule._trusted(
        defect=defect, name=name, url=row["url"], actions=actions,
        namespace=fields["namespace"], repository=fields["repository"] or "",
        tag=fields["tag"] or "", headers=headers, description=row["description"],
        enabled=row["enabled"] == 1, format=row["format"],  # as enabled_rules() selects
    )


def _delivery_from_row(row: sqlite3.Row) -> Delivery:
    try:
        tags = json.loads(row["tags"])
    except (TypeError, ValueError):
        tags = None
    if not isinstance(tags, list):
        raise StoreCorrupt(
            f"task {row['task_id']} in the store is corrupt: tags are not a JSON list"
        )
    return Delivery(
        task_id=row["task_id"], rule=row["rule"], action=row["action"],
        repository=row["repository"], tags=tuple(str(tag) for tag in tags),
        url=row["url"], status=row["status"], http_status=row["http_status"],
        attempts=row["attempts"], error=row["error"], body=row["body"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )
