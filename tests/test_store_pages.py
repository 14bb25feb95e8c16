"""How the store writes: the page size of a new store and the write-ahead log's checkpoints,
a store made before left as it is, and the text of its timestamps and tags, which the
faster ways of writing them keep as they were."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from receiver.registry.bookkeeping import blot, secrets_in
from receiver.registry.store import PAGE_SIZE, WAL_BYTES, Store, _json_list, iso

R = pytest.param


def pragma(store: Store, name: str) -> int:
    return store._conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_a_new_store_has_small_pages_and_the_default_log_size(tmp_path):
    with Store(tmp_path / "r.db") as store:
        assert pragma(store, "page_size") == PAGE_SIZE == 1024
        assert pragma(store, "wal_autocheckpoint") * PAGE_SIZE == WAL_BYTES == 1000 * 4096
        assert pragma(store, "journal_mode") == "wal"
    with Store(tmp_path / "r.db") as again:  # opened again: the same
        assert pragma(again, "page_size") == PAGE_SIZE


def test_a_store_made_before_keeps_its_pages(tmp_path):
    """A store made with SQLite's 4 KiB pages keeps them, and SQLite's 1000-page log."""
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("PRAGMA page_size = 4096")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE t (x)")
    db.close()
    with Store(tmp_path / "old.db") as store:
        assert pragma(store, "page_size") == 4096
        assert pragma(store, "wal_autocheckpoint") == 1000
        store.start_delivery(rule="r", action="pushImage", repository="ns/app", tags=["v1"],
                             url="http://127.0.0.1:1/", body="{}")
        assert len(store.list_deliveries()) == 1


def reference_iso(timestamp: float) -> str:
    """How the store wrote timestamps before."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.0005, 0.0004999, 0.9995, 0.9994999,
                                      0.9999995, 0.9999994999, 0.5e-6, 0.5])
def test_timestamps_are_written_as_datetime_writes_them(fraction):
    """Rounded to the microsecond as datetime rounds (half to even), then cut to the
    millisecond: near a second's end too, before 1970, and whatever came before."""
    for whole in (0, 1, 1_700_000_000, 1_799_999_999, 253402300798, -1, -86401):
        for timestamp in (whole + fraction, whole - fraction):
            assert iso(timestamp) == reference_iso(timestamp), timestamp
    rng = random.Random(5)
    for _ in range(20_000):
        timestamp = rng.uniform(-1e9, 4e9)
        assert iso(timestamp) == reference_iso(timestamp), timestamp
        assert iso(math.floor(timestamp)) == reference_iso(math.floor(timestamp))


@pytest.mark.parametrize("tags", [(), ("v1",), ("v1", "a,b", "ü", 'q"uote', "back\\slash", "\n"),
                                  ("😀",)])
def test_tags_are_written_as_json_dumps_writes_them(tags):
    assert _json_list(tags) == json.dumps(list(tags))
    assert _json_list(list(tags)) == json.dumps(list(tags))


def test_tags_that_are_not_text_are_still_written():
    assert _json_list(("v1", 5)) == json.dumps(["v1", 5])  # type: ignore[arg-type]


def test_only_values_long_enough_are_blotted():
    headers = (("Authentication", "x"), ("X-Token", "s3cret"), ("X-Key", "abcd"))
    assert secrets_in(headers) == ("s3cret", "abcd")
    assert secrets_in((("A", "x"),)) == ()
    assert blot(b"x s3cret abcd", secrets_in(headers)) == b"x ****** ******"


@pytest.mark.parametrize("echo", [
    R("sécret-välue", id="as-sent"),
    R("sécret-välue".encode().decode("latin-1"), id="latin-1"),
    R(json.dumps("sécret-välue")[1:-1], id="json"),
    R(json.dumps("sécret-välue".encode().decode("latin-1"))[1:-1], id="json-latin-1"),
    R(json.dumps("sécret-välue")[1:-1].replace("00e9", "00E9").replace("00e4", "00E4"),
      id="json-upper-hex"),
    R(quote("sécret-välue"), id="percent"),
    R(quote("sécret-välue").replace("%C3%A9", "%c3%a9").replace("%C3%A4", "%c3%a4"),
      id="percent-lower-hex"),
    R(quote("sécret-välue".encode().decode("latin-1")), id="percent-latin-1"),
])
def test_a_secret_echoed_in_another_encoding_is_blotted(echo):
    """A target that echoes a header value escaped as JSON or a URL does (of the text it
    read, often the UTF-8 bytes taken as Latin-1) does not carry it past the blot."""
    forms = secrets_in((("X-Token", "sécret-välue"),))
    assert blot(f'{{"got": "{echo}"}}'.encode(), forms) == b'{"got": "******"}'
