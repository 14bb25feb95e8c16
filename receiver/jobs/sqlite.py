"""The embedded engine: events and jobs in one SQLite file, for one machine.

WAL mode lets gunicorn workers and ``receiver worker`` processes on the same machine share
the file; every change is one short ``BEGIN IMMEDIATE`` transaction. Each thread (and each
process after a fork) opens its own connection.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import sqlite3
import sys
import threading
import time
import typing as t

from .base import (
    Claim,
    EventRecord,
    Job,
    Queue,
    QueueStats,
    QueueUnavailable,
    Submitted,
    one_line,
)

__all__ = ["SQLiteQueue"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id    TEXT PRIMARY KEY,
    action      TEXT NOT NULL,
    repository  TEXT NOT NULL,
    tags        TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL REFERENCES events (event_id),
    handler     TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lost        INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    run_at      REAL NOT NULL,
    owner       TEXT,
    lease_until REAL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, run_at);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (status, lease_until);
CREATE INDEX IF NOT EXISTS jobs_event ON jobs (event_id);
"""

_JOB_COLUMNS = (
    "j.job_id, j.event_id, e.action, e.repository, e.tags, j.handler, j.status, j.attempts, "
    "j.error, j.created_at, j.updated_at, j.run_at"
)


class SQLiteQueue(Queue):
    """The queue in the SQLite file at *path*, created (with its directory, owner-only) on
    first use.

    :param synchronous: SQLite's ``synchronous`` pragma. ``NORMAL`` (the default) survives
        any crash of a process; ``FULL`` also survives a power cut, at an fsync per event.
    """

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "NORMAL") -> None:
        # Absolute: a handler that changes the working directory must not move the queue.
        self.path = pathlib.Path(path).expanduser().absolute()
        self.url = f"sqlite:///{self.path}"
        self.synchronous = synchronous
        self._local = _os_thread_local()
        self._ready = False
        self._ready_lock = threading.Lock()
        # Writers queue on a lock file before BEGIN IMMEDIATE: the kernel wakes the next one
        # the moment the lock is free, where SQLite's busy handler would sleep 1 ms or more.
        self._write_lock = threading.Lock()
        self._lock_fd: tuple[int, int] | None = None
        #: The file's (device, inode) once made or found, and when to look at it again.
        self._identity: tuple[int, int] | None = None
        self._next_look = 0.0

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        try:
            if not self._ready:
                self._create()
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except (OSError, sqlite3.Error) as exc:
            raise QueueUnavailable(self.url, str(exc), "cannot be opened") from exc
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _create(self) -> None:
        with self._ready_lock:
            if self._ready:
                return
            directory = self.path.parent
            if not directory.exists():
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists()
            if fresh:
                # Owner-only from the start: the queue holds every delivered body.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
            finally:
                conn.close()
            info = os.stat(self.path)
            self._identity = (info.st_dev, info.st_ino)
            self._ready = True

    def _look(self) -> None:
        """:class:`QueueUnavailable` if the file this process opened was removed or replaced
        since: its connections would go on writing to a file nobody will read again."""
        if self._identity is None:
            return
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            what = "was removed"
        else:
            if (info.st_dev, info.st_ino) == self._identity:
                return
            what = "was replaced by another file"
        raise QueueUnavailable(self.url, f"the queue file {what} after this process opened "
                                         "it; restart the server to use the new one",
                               "cannot be used")

    def _lock_file(self) -> int:
        held = self._lock_fd
        if held is not None and held[1] == os.getpid():
            return held[0]
        try:
            fd = os.open(f"{self.path}-lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # (a lock file that cannot be made: as if the queue could not)
            raise QueueUnavailable(self.url, str(exc), "cannot be opened") from exc
        self._lock_fd = (fd, os.getpid())
        return fd

    def _run(self, fn: t.Callable[[sqlite3.Connection], t.Any], write: bool = True) -> t.Any:
        """Run *fn* in one transaction (``BEGIN IMMEDIATE`` for writes)."""
        if not write:
            return self._transaction(fn, write)
        conn = self._connect()  # creates the directory the lock file lives in
        with self._write_lock:
            fd = self._lock_file()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise QueueUnavailable(self.url, f"cannot lock {self.path}-lock: {exc}") from exc
            try:
                return self._transaction(fn, write, conn)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _transaction(self, fn: t.Callable[[sqlite3.Connection], t.Any], write: bool,
                     conn: sqlite3.Connection | None = None) -> t.Any:
        conn = conn or self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise QueueUnavailable(self.url, str(exc)) from exc

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local = _os_thread_local()
        held, self._lock_fd = self._lock_fd, None
        if held is not None and held[1] == os.getpid():
            os.close(held[0])
        self._write_lock = threading.Lock()  # a fork may have copied it held

    # -- the request's side --------------------------------------------------------------

    def submit(self, event: EventRecord, handlers: t.Sequence[str], window: float,
               hold: tuple[str, float] | None = None) -> Submitted:
        now = time.time()
        if now >= self._next_look:  # at most once a second: a stat per event costs
            self._look()
            self._next_look = now + 1.0
        owner, lease_until = (hold[0], now + hold[1]) if hold else (None, None)
        status, attempts = ("running", 1) if hold else ("queued", 0)

        def do(conn: sqlite3.Connection) -> Submitted:
            # A new id, or one last seen before the window: (re)record it. Otherwise the
            # conflict leaves the row alone and changes nothing: a duplicate.
            cur = conn.execute(
                "INSERT INTO events (event_id, action, repository, tags, body, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
                "received_at = excluded.received_at, body = excluded.body "
                "WHERE events.received_at < ?",
                (event.event_id, event.action, event.repository, json.dumps(list(event.tags)),
                 event.body, now, now - window),
            )
            if cur.rowcount == 0:
                return Submitted(duplicate=True)
            ids = []
            for handler in handlers:
                cur = conn.execute(
                    "INSERT INTO jobs (event_id, handler, status, attempts, run_at, owner, "
                    "lease_until, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (event.event_id, handler, status, attempts, now, owner, lease_until, now, now),
                )
                ids.append(t.cast(int, cur.lastrowid))
            claims = () if owner is None else tuple(
                Claim(i, event.event_id, event.action, h, event.body, 1, owner)
                for i, h in zip(ids, handlers, strict=True))
            return Submitted(duplicate=False, job_ids=tuple(ids), claims=claims)

        return t.cast(Submitted, self._run(do))

    # -- the workers' side ---------------------------------------------------------------

    def claim(self, owner: str, lease: float) -> Claim | None:
        now = time.time()
        # A read first, outside any write lock: idle workers poll without blocking requests.
        conn = self._connect()
        try:
            due = conn.execute(
                "SELECT 1 FROM jobs WHERE (status = 'queued' AND run_at <= ?) "
                "OR (status = 'running' AND lease_until < ?) LIMIT 1", (now, now),
            ).fetchone()
        except sqlite3.Error as exc:
            raise QueueUnavailable(self.url, str(exc)) from exc
        if due is None:
            return None

        def do(conn: sqlite3.Connection) -> Claim | None:
            row = conn.execute(
                "SELECT job_id, status, attempts FROM jobs WHERE status = 'queued' AND run_at <= ?"
                " ORDER BY run_at, job_id LIMIT 1", (now,),
            ).fetchone() or conn.execute(
                "SELECT job_id, status, attempts FROM jobs WHERE status = 'running' AND "
                "lease_until < ? ORDER BY lease_until LIMIT 1", (now,),
            ).fetchone()
            if row is None:
                return None
            job_id, status, attempts = row
            error = None
            if status == "running":
                error = (f"attempt {attempts} was lost: its worker stopped renewing the lease "
                         "(killed, crashed or timed out)")
            conn.execute(
                "UPDATE jobs SET status = 'running', owner = ?, lease_until = ?, "
                "attempts = attempts + 1, lost = lost + ?, updated_at = ?, "
                "error = COALESCE(?, error) WHERE job_id = ?",
                (owner, now + lease, int(error is not None), now, error, job_id),
            )
            event_id, action, handler, body, attempts, lost = conn.execute(
                "SELECT j.event_id, e.action, j.handler, e.body, j.attempts, j.lost FROM jobs j "
                "JOIN events e ON e.event_id = j.event_id WHERE j.job_id = ?", (job_id,),
            ).fetchone()
            return Claim(job_id, event_id, action, handler, body, attempts, owner, lost)

        return t.cast("Claim | None", self._run(do))

    def heartbeat(self, claims: t.Iterable[Claim], lease: float) -> list[int]:
        claims = list(claims)
        if not claims:
            return []
        until = time.time() + lease

        def do(conn: sqlite3.Connection) -> list[int]:
            lost = []
            for claim in claims:
                cur = conn.execute(
                    "UPDATE jobs SET lease_until = ? WHERE job_id = ? AND owner = ? "
                    "AND status = 'running'", (until, claim.job_id, claim.owner),
                )
                if cur.rowcount == 0:
                    lost.append(claim.job_id)
            return lost

        return t.cast("list[int]", self._run(do))

    def _finish(self, claim: Claim, status: str, error: str | None, run_at: float | None,
                uncount: bool = False) -> bool:
        now = time.time()

        def do(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, owner = NULL, lease_until = NULL, updated_at = ?, "
                "error = COALESCE(?, error), run_at = COALESCE(?, run_at), "
                "attempts = attempts - ?, lost = lost + ? "
                "WHERE job_id = ? AND owner = ? AND status = 'running'",
                (status, now, error, run_at, int(uncount), int(uncount), claim.job_id,
                 claim.owner),
            )
            return cur.rowcount == 1

        return bool(self._run(do))

    def succeed_all(self, claims: t.Sequence[Claim]) -> list[int]:
        now = time.time()

        def do(conn: sqlite3.Connection) -> list[int]:
            lost = []
            for claim in claims:
                cur = conn.execute(
                    "UPDATE jobs SET status = 'succeeded', owner = NULL, lease_until = NULL, "
                    "updated_at = ? WHERE job_id = ? AND owner = ? AND status = 'running'",
                    (now, claim.job_id, claim.owner),
                )
                if cur.rowcount == 0:
                    lost.append(claim.job_id)
            return lost

        return t.cast("list[int]", self._run(do)) if claims else []

    def release(self, claims: t.Iterable[Claim]) -> None:
        now = time.time()
        rows = [(now, c.job_id, c.owner) for c in claims]
        if rows:
            self._run(lambda conn: conn.executemany(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, owner = NULL, "
                "lease_until = NULL, run_at = ?1, updated_at = ?1 "
                "WHERE job_id = ?2 AND owner = ?3 AND status = 'running'", rows))

    def retry_later(self, claim: Claim, error: str, delay: float) -> bool:
        return self._finish(claim, "queued", one_line(error), time.time() + delay)

    def pass_on(self, claim: Claim, error: str, delay: float) -> bool:
        return self._finish(claim, "queued", one_line(error), time.time() + delay, uncount=True)

    def bury(self, claim: Claim, error: str) -> bool:
        return self._finish(claim, "dead", one_line(error), None)

    # -- the CLI's side --------------------------------------------------------------------

    def jobs(self, *, status: str | None = None, event_id: str | None = None,
             handler: str | None = None, limit: int = 50) -> list[Job]:
        where, args = [], []
        for column, value in (("j.status", status), ("j.event_id", event_id),
                              ("j.handler", handler)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = (f"SELECT {_JOB_COLUMNS} FROM jobs j JOIN events e ON e.event_id = j.event_id"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY j.job_id DESC LIMIT ?")
        rows = self._run(lambda conn: conn.execute(sql, (*args, limit)).fetchall(), write=False)
        return [_job(row) for row in rows]

    def job(self, job_id: int) -> Job | None:
        row = self._run(lambda conn: conn.execute(
            f"SELECT {_JOB_COLUMNS}, e.body FROM jobs j JOIN events e ON e.event_id = j.event_id"
            " WHERE j.job_id = ?", (job_id,),
        ).fetchone(), write=False)
        return None if row is None else _job(row[:-1], body=row[-1])

    def requeue(self, job_ids: t.Iterable[int] | None) -> list[int]:
        now = time.time()

        def do(conn: sqlite3.Connection) -> list[int]:
            if job_ids is None:
                ids = [r[0] for r in conn.execute(
                    "SELECT job_id FROM jobs WHERE status = 'dead' ORDER BY job_id")]
            else:
                ids = [i for i in job_ids if conn.execute(
                    "SELECT 1 FROM jobs WHERE job_id = ? AND status = 'dead'", (i,)).fetchone()]
            conn.executemany(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = ?, updated_at = ?, "
                "owner = NULL, lease_until = NULL WHERE job_id = ?",
                [(now, now, i) for i in ids],
            )
            return ids

        return t.cast("list[int]", self._run(do))

    def purge(self, window: float, retention: float | None = None) -> int:
        now = time.time()
        before = now - window
        succeeded_before = before if retention is None else now - min(window, retention)

        def do(conn: sqlite3.Connection) -> int:
            gone = conn.execute(
                "DELETE FROM jobs WHERE status = 'succeeded' AND updated_at < ?",
                (succeeded_before,),
            ).rowcount
            if retention is not None:
                gone += conn.execute(
                    "DELETE FROM jobs WHERE status = 'dead' AND updated_at < ?",
                    (now - retention,),
                ).rowcount
            conn.execute(
                "DELETE FROM events WHERE received_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM jobs WHERE jobs.event_id = events.event_id)", (before,),
            )
            return gone

        return t.cast(int, self._run(do))

    def check(self) -> None:
        # BEGIN IMMEDIATE takes the write lock: a read-only file or directory fails here.
        self._run(lambda conn: conn.execute("SELECT 1 FROM jobs LIMIT 1").fetchall())
        self._look()

    def stats(self) -> QueueStats:
        def do(conn: sqlite3.Connection) -> QueueStats:
            now = time.time()
            counts = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
            (oldest,) = conn.execute(
                "SELECT MIN(run_at) FROM jobs WHERE status = 'queued' AND run_at <= ?", (now,)
            ).fetchone()
            return QueueStats(counts, max(0.0, now - oldest) if oldest is not None else 0.0)

        return t.cast(QueueStats, self._run(do, write=False))


def _os_thread_local() -> t.Any:
    """Storage per OS thread, for the connections. Under gevent's gunicorn workers the
    patched ``threading.local`` is per greenlet, which would open a connection for every
    request; greenlets of one thread may share one, since no transaction here yields."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("threading", "local")()
    return threading.local()


def _job(row: t.Sequence[t.Any], body: str | None = None) -> Job:
    (job_id, event_id, action, repository, tags, handler, status, attempts, error,
     created_at, updated_at, run_at) = row
    return Job(job_id, event_id, action, repository, tuple(json.loads(tags)), handler, status,
               attempts, error, created_at, updated_at, run_at, body)
