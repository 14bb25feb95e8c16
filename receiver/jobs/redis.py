"""The networked engine: events and jobs in one Redis database, shared by several hosts.

Sorted sets scored by time, changed by one Lua script per step, give delayed retries and
lease deadlines atomically, which Streams do not (``XAUTOCLAIM`` only takes over idle entries).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import typing as t
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from .base import (
    JOB_STATUSES,
    Claim,
    EventRecord,
    Job,
    Queue,
    QueueStats,
    QueueUnavailable,
    Submitted,
    one_line,
)

__all__ = ["RedisQueue"]

# Every script gets the key prefix as ARGV[1] and reads the server's clock, so that all
# hosts agree on deadlines. Times are whole milliseconds in Lua (exact in a double) and
# seconds with three decimals in keys and hashes.
_PRELUDE = """
local p = ARGV[1]
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local function secs(ms) return string.format('%.3f', ms / 1000) end
"""

_SCRIPTS = {
    # ARGV: event_id, action, repository, tags, body, window_ms, owner, lease_ms, handlers...
    # → {0} or {1, ids...}; with an owner ('' for none) the jobs start claimed by it
    "submit": """
local seen = redis.call('GET', p .. 'seen:' .. ARGV[2])
if seen and tonumber(seen) >= now - tonumber(ARGV[7]) then return {0} end
if tonumber(ARGV[7]) > 0 then redis.call('SET', p .. 'seen:' .. ARGV[2], now, 'PX', ARGV[7]) end
local owner = ARGV[8]
local ids = {1}
for i = 10, #ARGV do
  local id = redis.call('INCR', p .. 'next_id')
  local key = p .. 'job:' .. id
  redis.call('HSET', key, 'event_id', ARGV[2], 'action', ARGV[3],
    'repository', ARGV[4], 'tags', ARGV[5], 'body', ARGV[6], 'handler', ARGV[i],
    'status', 'queued', 'attempts', 0, 'created_at', secs(now), 'updated_at', secs(now),
    'run_at', secs(now))
  redis.call('ZADD', p .. 'jobs', id, id)
  if owner ~= '' then
    redis.call('HSET', key, 'status', 'running', 'attempts', 1, 'owner', owner)
    redis.call('ZADD', p .. 'running', secs(now + tonumber(ARGV[9])), id)
  else
    redis.call('ZADD', p .. 'queued', secs(now), id)
  end
  ids[#ids + 1] = id
end
return ids
""",
    # ARGV: owner, lease_ms → false or {id, event_id, action, handler, body, attempts}
    "claim": """
local id = redis.call('ZRANGEBYSCORE', p .. 'queued', '-inf', secs(now), 'LIMIT', 0, 1)[1]
local lost = nil
if id then
  redis.call('ZREM', p .. 'queued', id)
else
  id = redis.call('ZRANGEBYSCORE', p .. 'running', '-inf', '(' .. secs(now), 'LIMIT', 0, 1)[1]
  if not id then return false end
  lost = 'attempt ' .. redis.call('HGET', p .. 'job:' .. id, 'attempts') .. ' was lost: its '
    .. 'worker stopped renewing the lease (killed, crashed or timed out)'
end
local key = p .. 'job:' .. id
local attempts = redis.call('HINCRBY', key, 'attempts', 1)
local lost_runs = tonumber(redis.call('HGET', key, 'lost') or '0')
redis.call('HSET', key, 'status', 'running', 'owner', ARGV[2], 'updated_at', secs(now))
if lost then
  redis.call('HSET', key, 'error', lost)
  lost_runs = redis.call('HINCRBY', key, 'lost', 1)
end
redis.call('ZADD', p .. 'running', secs(now + tonumber(ARGV[3])), id)
local f = redis.call('HMGET', key, 'event_id', 'action', 'handler', 'body')
return {id, f[1], f[2], f[3], f[4], attempts, lost_runs}
""",
    # ARGV: lease_ms, then id, owner pairs → the ids no longer held
    "heartbeat": """
local lost = {}
for i = 3, #ARGV, 2 do
  local f = redis.call('HMGET', p .. 'job:' .. ARGV[i], 'status', 'owner')
  if f[1] == 'running' and f[2] == ARGV[i + 1] then
    redis.call('ZADD', p .. 'running', secs(now + tonumber(ARGV[2])), ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
""",
    # ARGV: id, owner, status ('queued' for a retry, 'passed' for a job this process cannot
    # run, or 'dead'), delay_ms, [error]
    # → 1, or 0 when the lease was lost (successes go through "succeed", in batches)
    "finish": """
local key = p .. 'job:' .. ARGV[2]
local f = redis.call('HMGET', key, 'status', 'owner')
if f[1] ~= 'running' or f[2] ~= ARGV[3] then return 0 end
redis.call('ZREM', p .. 'running', ARGV[2])
redis.call('HDEL', key, 'owner')
local status = ARGV[4]
if status == 'passed' then  -- queued again: not a run, but a pass (bounded, as lost runs)
  redis.call('HINCRBY', key, 'attempts', -1)
  redis.call('HINCRBY', key, 'lost', 1)
  status = 'queued'
end
redis.call('HSET', key, 'status', status, 'updated_at', secs(now))
if ARGV[6] then redis.call('HSET', key, 'error', ARGV[6]) end
if status == 'queued' then
  redis.call('HSET', key, 'run_at', secs(now + tonumber(ARGV[5])))
  redis.call('ZADD', p .. 'queued', secs(now + tonumber(ARGV[5])), ARGV[2])
else
  redis.call('ZADD', p .. 'dead', ARGV[2], ARGV[2])
  redis.call('ZADD', p .. 'dead_at', secs(now), ARGV[2])
end
return 1
""",
    # ARGV: id, owner pairs → the ids whose lease was lost
    "succeed": """
local lost = {}
for i = 2, #ARGV, 2 do
  local key = p .. 'job:' .. ARGV[i]
  local f = redis.call('HMGET', key, 'status', 'owner')
  if f[1] == 'running' and f[2] == ARGV[i + 1] then
    redis.call('ZREM', p .. 'running', ARGV[i])
    redis.call('HDEL', key, 'owner')
    redis.call('HSET', key, 'status', 'succeeded', 'updated_at', secs(now))
    redis.call('ZADD', p .. 'succeeded', secs(now), ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
""",
    # ARGV: id, owner pairs: held claims that never ran go back to the queue
    "release": """
for i = 2, #ARGV, 2 do
  local key = p .. 'job:' .. ARGV[i]
  local f = redis.call('HMGET', key, 'status', 'owner')
  if f[1] == 'running' and f[2] == ARGV[i + 1] then
    redis.call('ZREM', p .. 'running', ARGV[i])
    redis.call('HDEL', key, 'owner')
    redis.call('HINCRBY', key, 'attempts', -1)
    redis.call('HSET', key, 'status', 'queued', 'run_at', secs(now), 'updated_at', secs(now))
    redis.call('ZADD', p .. 'queued', secs(now), ARGV[i])
  end
end
return 0
""",
    # ARGV: ids... (none: every dead job) → the ids queued
    "requeue": """
local ids = {}
if #ARGV == 1 then ids = redis.call('ZRANGE', p .. 'dead', 0, -1) end
for i = 2, #ARGV do
  if redis.call('ZSCORE', p .. 'dead', ARGV[i]) then ids[#ids + 1] = ARGV[i] end
end
for _, id in ipairs(ids) do
  redis.call('ZREM', p .. 'dead', id)
  redis.call('ZREM', p .. 'dead_at', id)
  redis.call('HSET', p .. 'job:' .. id, 'status', 'queued', 'attempts', 0,
    'run_at', secs(now), 'updated_at', secs(now))
  redis.call('ZADD', p .. 'queued', secs(now), id)
end
return ids
""",
    # ARGV: window_ms, retention_ms (-1: dead jobs are kept), batch
    # → {succeeded jobs that went, dead jobs that went}, each at most batch
    "purge": """
local window, retention, batch = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function drop(ids)
  for _, id in ipairs(ids) do
    redis.call('DEL', p .. 'job:' .. id)
    redis.call('ZREM', p .. 'jobs', id)
    redis.call('ZREM', p .. 'succeeded', id)
    redis.call('ZREM', p .. 'dead', id)
    redis.call('ZREM', p .. 'dead_at', id)
  end
  return #ids
end
local keep = window
if retention >= 0 and retention < keep then keep = retention end
local gone = drop(redis.call('ZRANGEBYSCORE', p .. 'succeeded', '-inf',
  '(' .. secs(now - keep), 'LIMIT', 0, batch))
if retention < 0 then return {gone, 0} end
if redis.call('ZCARD', p .. 'dead') ~= redis.call('ZCARD', p .. 'dead_at') then
  -- dead jobs from before dead_at was kept: dated by their last update, once
  for _, id in ipairs(redis.call('ZRANGE', p .. 'dead', 0, -1)) do
    if not redis.call('ZSCORE', p .. 'dead_at', id) then
      local at = redis.call('HGET', p .. 'job:' .. id, 'updated_at')
      redis.call('ZADD', p .. 'dead_at', at or secs(now), id)
    end
  end
end
return {gone, drop(redis.call('ZRANGEBYSCORE', p .. 'dead_at', '-inf',
  '(' .. secs(now - retention), 'LIMIT', 0, batch))}
""",
}

_FIELDS = ("event_id", "action", "repository", "tags", "handler", "status", "attempts", "error",
           "created_at", "updated_at", "run_at")
_PURGE_BATCH = 500


class RedisQueue(Queue):
    """The queue in the Redis database at *url* (``redis://[[USER]:PASSWORD@]HOST:PORT/DB``
    or ``rediss://...``). Keys, under *prefix*:

    ``next_id`` (``INCR``), ``job:ID`` (a hash: the job and its event's body), ``jobs`` (every
    id, scored by id), ``queued`` (scored by run_at), ``running`` (by lease deadline),
    ``dead`` (by id), ``dead_at`` (the dead again, by time of death), ``succeeded`` (by
    finish time), ``seen:EVENT_ID`` (dedup, expiring).

    :raises QueueError: *url* is not one redis-py can use.
    """

    def __init__(self, url: str, *, prefix: str = "receiver:") -> None:
        from . import QueueError, shown_url, url_secrets

        self.url = shown_url(url)
        self.prefix = prefix
        self._raw_url = url
        self._secrets = url_secrets(url)
        self._lock = threading.Lock()
        self._conn: tuple[redis.Redis, dict[str, Script], int] | None = None
        try:
            self._client()  # parses the URL; connects only at first use
        except ValueError as exc:
            raise QueueError(f"RECEIVER_QUEUE {self.url!r}: {self._scrub(exc)}") from exc

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> tuple[redis.Redis, dict[str, Script], int]:
        conn = self._conn
        if conn is not None and conn[2] == os.getpid():
            return conn
        with self._lock:
            if self._conn is None or self._conn[2] != os.getpid():
                client = redis.Redis.from_url(
                    self._raw_url, decode_responses=True, socket_timeout=2,
                    socket_connect_timeout=2, health_check_interval=30,
                    # No retries: a script sent again after its connection dropped may have
                    # run already (a submit would then answer "duplicate"). A failure is a
                    # 503, and the registry sends the delivery again.
                    retry=Retry(NoBackoff(), 0),
                )
                scripts = {name: client.register_script(_PRELUDE + source)
                           for name, source in _SCRIPTS.items()}
                self._conn = (client, scripts, os.getpid())
            return self._conn

    def _client(self) -> redis.Redis:
        """This process's redis-py client (thread-safe; made again after a fork)."""
        return self._connect()[0]

    def _scrub(self, exc: BaseException) -> str:
        """redis-py's message without the password or the server's address."""
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        parts = urlsplit(self._raw_url)
        if parts.hostname:
            text = text.replace(f"{parts.hostname}:{parts.port or 6379}", "the server")
        return text

    @contextlib.contextmanager
    def _errors(self) -> t.Iterator[None]:
        try:
            yield
        except (redis.RedisError, OSError) as exc:
            raise QueueUnavailable(self.url, self._scrub(exc)) from exc

    def _run(self, name: str, *args: t.Any) -> t.Any:
        """Run the script *name* with *args* after the prefix."""
        with self._errors():
            return self._connect()[1][name](args=[self.prefix, *args])

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and conn[2] == os.getpid():
            conn[0].close()

    # -- the request's side --------------------------------------------------------------

    def submit(self, event: EventRecord, handlers: t.Sequence[str], window: float,
               hold: tuple[str, float] | None = None) -> Submitted:
        owner, lease = hold or ("", 0.0)
        done = self._run("submit", event.event_id, event.action, event.repository,
                         json.dumps(list(event.tags)), event.body, _ms(window), owner,
                         _ms(lease), *handlers)
        if not done[0]:
            return Submitted(duplicate=True)
        ids = tuple(int(i) for i in done[1:])
        claims = () if not owner else tuple(
            Claim(i, event.event_id, event.action, h, event.body, 1, owner)
            for i, h in zip(ids, handlers, strict=True))
        return Submitted(duplicate=False, job_ids=ids, claims=claims)

    def release(self, claims: t.Iterable[Claim]) -> None:
        pairs = [arg for c in claims for arg in (c.job_id, c.owner)]
        if pairs:
            self._run("release", *pairs)

    # -- the workers' side ---------------------------------------------------------------

    def claim(self, owner: str, lease: float) -> Claim | None:
        got = self._run("claim", owner, _ms(lease))
        if not got:
            return None
        job_id, event_id, action, handler, body, attempts, lost = got
        return Claim(int(job_id), event_id, action, handler, body, int(attempts), owner,
                     int(lost))

    def heartbeat(self, claims: t.Iterable[Claim], lease: float) -> list[int]:
        pairs = [arg for c in claims for arg in (c.job_id, c.owner)]
        return [int(i) for i in self._run("heartbeat", _ms(lease), *pairs)] if pairs else []

    def _finish(self, claim: Claim, status: str, error: str | None, delay: float = 0) -> bool:
        extra = () if error is None else (one_line(error),)
        return self._run("finish", claim.job_id, claim.owner, status, _ms(delay), *extra) == 1

    def succeed_all(self, claims: t.Sequence[Claim]) -> list[int]:
        pairs = [arg for c in claims for arg in (c.job_id, c.owner)]
        return [int(i) for i in self._run("succeed", *pairs)] if pairs else []

    def retry_later(self, claim: Claim, error: str, delay: float) -> bool:
        return self._finish(claim, "queued", error, delay)

    def pass_on(self, claim: Claim, error: str, delay: float) -> bool:
        return self._finish(claim, "passed", error, delay)

    def bury(self, claim: Claim, error: str) -> bool:
        return self._finish(claim, "dead", error)

    # -- the CLI's side --------------------------------------------------------------------

    def jobs(self, *, status: str | None = None, event_id: str | None = None,
             handler: str | None = None, limit: int = 50) -> list[Job]:
        wanted = {k: v for k, v in (("status", status), ("event_id", event_id),
                                    ("handler", handler)) if v is not None}
        page, below = min(max(limit, 200) if wanted else limit, 1000), "+inf"
        found: list[Job] = []
        with self._errors():
            client = self._client()
            while len(found) < limit:
                # By score below the last id seen, so jobs added meanwhile shift nothing.
                ids = t.cast("list[str]", client.zrevrangebyscore(
                    self.prefix + "jobs", below, "-inf", 0, page))
                if not ids:
                    break
                pipe = client.pipeline(transaction=False)
                for job_id in ids:
                    pipe.hmget(f"{self.prefix}job:{job_id}", _FIELDS)
                for job_id, values in zip(ids, pipe.execute(), strict=True):
                    fields = dict(zip(_FIELDS, values, strict=True))
                    if fields["status"] is not None and all(
                            fields[k] == v for k, v in wanted.items()):
                        found.append(_job(int(job_id), fields))
                below = f"({ids[-1]}"
        return found[:limit]

    def job(self, job_id: int) -> Job | None:
        with self._errors():
            fields = t.cast("dict[str, str]",
                            self._client().hgetall(f"{self.prefix}job:{int(job_id)}"))
        return _job(int(job_id), fields, fields["body"]) if fields else None

    def requeue(self, job_ids: t.Iterable[int] | None) -> list[int]:
        ids = None if job_ids is None else [int(i) for i in job_ids]
        if ids == []:
            return []
        return [int(i) for i in self._run("requeue", *(ids or ()))]

    def purge(self, window: float, retention: float | None = None) -> int:
        # In batches, so that no one script holds the server for long.
        kept = -1 if retention is None else _ms(retention)
        gone = 0
        while True:
            succeeded, dead = self._run("purge", _ms(window), kept, _PURGE_BATCH)
            gone += succeeded + dead
            if succeeded < _PURGE_BATCH and dead < _PURGE_BATCH:
                return gone

    def check(self) -> None:
        # A write too: a replica, a full disk (MISCONF) or maxmemory refuse it.
        with self._errors():
            client = self._client()
            client.ping()
            client.set(self.prefix + "ready", "1", px=10_000)

    def stats(self) -> QueueStats:
        with self._errors():
            pipe = self._client().pipeline(transaction=False)
            for status in JOB_STATUSES:
                pipe.zcard(self.prefix + status)
            pipe.zrange(self.prefix + "queued", 0, 0, withscores=True)
            pipe.time()
            *sizes, first, (seconds, micros) = pipe.execute()
        now = seconds + micros / 1e6
        due = first[0][1] if first else None
        return QueueStats(dict(zip(JOB_STATUSES, sizes, strict=True)),
                          max(0.0, now - due) if due is not None else 0.0)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _job(job_id: int, fields: dict[str, t.Any], body: str | None = None) -> Job:
    return Job(job_id, fields["event_id"], fields["action"], fields["repository"],
               tuple(json.loads(fields["tags"])), fields["handler"], fields["status"],
               int(fields["attempts"]), fields.get("error"), float(fields["created_at"]),
               float(fields["updated_at"]), float(fields["run_at"]), body)
