"""The snapshot's archive check reads a custom-format dump's table of contents as pg_restore does:
the same entries as ``pg_restore --list``, from real pg_dump 17 and 15 archives, fed in any chunks."""

from __future__ import annotations

import random
import subprocess
import time
import uuid

import pytest

from compose_atomic.migrate.archive import Malformed, TocReader
from conftest import IMAGE_POSTGRES, IMAGE_POSTGRES_15, docker

pytestmark = pytest.mark.docker

SCHEMA = """
CREATE TYPE mood AS ENUM ('ok', 'fine');
CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL, mood mood, note text);
COMMENT ON TABLE items IS 'Zürich, 東京: not ASCII';
CREATE INDEX items_name ON items (name);
CREATE TABLE orders (id int PRIMARY KEY, item bigint REFERENCES items (id));
CREATE VIEW named AS SELECT id, name FROM items;
CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';
CREATE SCHEMA other;
CREATE TABLE other.t (x int);
INSERT INTO items (name, mood) SELECT 'n' || g, 'ok' FROM generate_series(1, 500) g;
"""


@pytest.fixture(scope="module")
def dumps(docker_engine):
    """(version, archive bytes, pg_restore --list output) from a PostgreSQL 17 and a 15 server."""
    names = {image: f"catest-archive-{uuid.uuid4().hex[:8]}" for image in (IMAGE_POSTGRES, IMAGE_POSTGRES_15)}
    try:
        for image, name in names.items():
            docker("run", "-d", "--name", name, "-e", "POSTGRES_PASSWORD=archive-pw", image)
        out = []
        for image, name in names.items():
            deadline = time.monotonic() + 60
            while docker("exec", name, "pg_isready", "-U", "postgres", check=False).returncode != 0 \
                    or docker("exec", name, "psql", "-U", "postgres", "-c", "SELECT 1", check=False).returncode != 0:
                assert time.monotonic() < deadline, docker("logs", name, check=False).stderr
                time.sleep(0.5)
            docker("exec", name, "psql", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-c", SCHEMA)
            archive = subprocess.run(["docker", "exec", name, "pg_dump", "-Fc", "-U", "postgres"],
                                     capture_output=True, check=True, timeout=60).stdout
            listed = subprocess.run(["docker", "exec", "-i", name, "pg_restore", "--list"], input=archive,
                                    capture_output=True, check=True, timeout=60).stdout.decode()
            out.append((image, archive, listed))
        yield out
    finally:
        for name in names.values():
            docker("rm", "-f", "-v", name, check=False)


def read(archive: bytes, sizes) -> TocReader:
    reader, pos = TocReader(), 0
    for size in sizes:
        reader.feed(archive[pos:pos + size])
        pos += size
    reader.feed(archive[pos:])
    return reader


def test_the_table_of_contents_is_what_pg_restore_lists(dumps):
    for image, archive, listed in dumps:
        whole = read(archive, [])
        assert whole.done and not whole.unknown, image
        # pg_restore --list: "<dump id>; <table oid> <oid> <desc> <namespace> <tag> <owner>" per entry
        # it would restore; the session settings (ENCODING, STDSTRINGS, SEARCHPATH) it applies
        # on its own and does not list.
        lines = [ln for ln in listed.splitlines() if ln and not ln.startswith(";")]
        by_id = {e.dump_id: e for e in whole.entries}
        for line in lines:
            dump_id = int(line.split(";")[0])
            assert dump_id in by_id, (image, line)
            assert f" {by_id[dump_id].desc} " in line, (image, line, by_id[dump_id])
        ids = {int(ln.split(";")[0]) for ln in lines}
        unlisted = {(e.desc, e.tag) for e in whole.entries if e.dump_id not in ids}
        # The database's own entries are restored only with --create: not listed without it.
        database = {(d, t) for d, t in unlisted if d == "DATABASE" or t.startswith("DATABASE ")}
        assert {d for d, _ in unlisted - database} <= {"ENCODING", "STDSTRINGS", "SEARCHPATH"}, (image, unlisted)
        assert {"TABLE", "TABLE DATA", "INDEX", "VIEW", "FUNCTION", "TYPE", "COMMENT"} <= {e.desc for e in whole.entries}
        assert "items" in {e.tag for e in whole.entries}
        # Fed in any chunks (a byte at a time at the start), the same entries.
        rng = random.Random(7)
        for sizes in ([1] * 300, [rng.randint(1, 97) for _ in range(200)], [len(archive) // 3]):
            again = read(archive, sizes)
            assert again.done and again.entries == whole.entries, (image, sizes[:5])
    versions = {read(a, []).version for _, a, _ in dumps}
    assert len(versions) == 2, versions  # 1.16 (pg_dump 17) and 1.14 (pg_dump 15)


def test_a_cut_or_foreign_stream_is_not_an_archive(dumps):
    _, archive, _ = dumps[0]
    # Where the table of contents ends: the shortest prefix the reader finishes on.
    low, high = 1, len(archive)
    while low < high:
        mid = (low + high) // 2
        if read(archive[:mid], []).done:
            high = mid
        else:
            low = mid + 1
    end_of_toc = low
    assert 100 < end_of_toc < len(archive)
    cut = read(archive[:end_of_toc - 1], [])
    with pytest.raises(Malformed, match="ends inside"):
        cut.finish()
    with pytest.raises(Malformed, match="magic"):
        read(b"not an archive at all, " * 10, [])
    with pytest.raises(Malformed, match="custom-format"):
        read(archive[:10] + bytes([3]) + archive[11:], [])  # the directory format's code
    newer = read(archive[:5] + bytes([1, 99, 0]) + archive[8:], [])
    assert newer.unknown and not newer.done
