"""The table of contents of a custom-format archive (``pg_dump -Fc``), read from the stream.

A snapshot checks that what pg_dump wrote is an archive pg_restore can open: its header and
its table of contents, which a custom archive written to a pipe carries first, before the data.
:class:`TocReader` reads them from the bytes as they stream to disk, as pg_restore's
``ReadHead`` and ``ReadToc`` do (``src/bin/pg_dump/pg_backup_archiver.c``, ``_ReadExtraToc`` in
``pg_backup_custom.c``), so the check costs no second ``docker exec`` beside the dump. The
layouts read are archive versions 1.12 to 1.16 (pg_dump 9.5 to 17); a newer one is
:attr:`TocReader.unknown`, and the caller asks ``pg_restore --list`` instead.

Integers are a sign byte and ``int_size`` little-endian bytes; strings an integer length (below
zero: none) and that many bytes; an offset a flag byte and ``off_size`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAGIC = b"PGDMP"
CUSTOM_FORMAT = 1
#: pg_compress_algorithm (archive version 1.15, pg_dump 16, and later).
COMPRESSION = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}
OLDEST, NEWEST = (1, 12, 0), (1, 16, 0)


class Truncated(Exception):
    """More bytes are needed."""


class Malformed(ValueError):
    """Not an archive pg_restore could open."""


@dataclass
class Entry:
    dump_id: int
    desc: str
    tag: str


@dataclass
class _Cursor:
    data: memoryview
    pos: int = 0
    int_size: int = 4
    off_size: int = 8

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Truncated
        chunk = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def str(self) -> str | None:
        length = self.int()
        if length < 0:
            return None
        return self.take(length).decode("utf-8", "replace")

    def offset(self) -> None:
        self.take(1 + self.off_size)


@dataclass
class TocReader:
    """Feed it the archive's bytes in order; ``done`` once the table of contents is read."""

    entries: list[Entry] = field(default_factory=list)
    version: tuple[int, int, int] | None = None
    count: int | None = None
    done: bool = False
    #: The archive's version is newer than the layouts this reader knows.
    unknown: bool = False
    #: How its data is compressed: "none", "gzip", "lz4" or "zstd".
    compression: str | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _sizes: tuple[int, int] = (4, 8)

    def feed(self, chunk: bytes) -> None:
        """Read what ``chunk`` completes; Malformed when the bytes cannot be an archive."""
        if self.done or self.unknown:
            return
        self._buffer += chunk
        cursor = _Cursor(memoryview(self._buffer), 0, *self._sizes)
        kept = 0  # bytes read up to the last thing read whole
        try:
            if self.count is None:
                self._header(cursor)
                if self.unknown:
                    return
                self.count = cursor.int()
                if self.count < 0:
                    raise Malformed(f"a table of contents of {self.count} entries")
                kept = cursor.pos
            while len(self.entries) < self.count:
                self.entries.append(self._entry(cursor))
                kept = cursor.pos
            self.done = True
        except Truncated:
            pass
        finally:
            cursor.data.release()
        del self._buffer[:kept]
        if self.done:
            self._buffer = bytearray()

    def finish(self) -> int:
        """The number of entries; Malformed when the stream ended inside the table of contents."""
        if not self.done:
            raise Malformed("the archive ends inside its header or table of contents")
        return len(self.entries)

    def _header(self, c: _Cursor) -> None:
        if c.take(5) != MAGIC:
            raise Malformed("no PGDMP magic string at the start")
        version = (c.byte(), c.byte(), c.byte())
        self.version = version
        if version > NEWEST:
            self.unknown = True
            return
        if version < OLDEST:
            raise Malformed(f"archive version {'.'.join(map(str, version))} predates pg_dump 9.5")
        c.int_size = c.byte()
        c.off_size = c.byte()
        if not 1 <= c.int_size <= 8 or not 1 <= c.off_size <= 16:
            raise Malformed(f"integer size {c.int_size}, offset size {c.off_size}")
        self._sizes = (c.int_size, c.off_size)
        if c.byte() != CUSTOM_FORMAT:
            raise Malformed("not a custom-format archive")
        if version >= (1, 15, 0):
            algorithm = c.byte()
            self.compression = COMPRESSION.get(algorithm, f"unknown ({algorithm})")
        else:  # the zlib level: 0 is none
            self.compression = "none" if c.int() == 0 else "gzip"
        for _ in range(7):  # the time it was made
            c.int()
        c.str()  # the database's name
        c.str()  # the server's version
        c.str()  # pg_dump's version

    def _entry(self, c: _Cursor) -> Entry:
        version = self.version or OLDEST
        dump_id = c.int()
        if dump_id <= 0:
            raise Malformed(f"a table of contents entry with dump id {dump_id}")
        c.int()  # had a dumper
        c.str(), c.str()  # table oid, oid
        tag, desc = c.str(), c.str()
        c.int()  # section
        c.str(), c.str(), c.str()  # definition, DROP, COPY statements
        c.str(), c.str()  # namespace, tablespace
        if version >= (1, 14, 0):
            c.str()  # table access method
        if version >= (1, 16, 0):
            c.int()  # relkind
        c.str(), c.str()  # owner, "with oids"
        while c.str() is not None:  # dependencies, up to a null string
            pass
        c.offset()  # where its data is (unset in a stream)
        return Entry(dump_id, desc or "", tag or "")
