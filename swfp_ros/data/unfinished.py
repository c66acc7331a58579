"""Read a recording whose recorder never finished it: a recorder killed, or a machine that lost power mid-recording.

rosbags reads storage files as a clean close leaves them, and gets both kinds of unfinished file wrong:

* **MCAP** — the file has no summary and no footer, and its last chunk may be cut short or padded with zeros.
  rosbags refuses it outright ("File end magic is invalid"), losing a whole recording for the want of its index.
  :class:`UnfinishedMcapReader` walks the file's records from the start and keeps every complete one: schemas,
  channels and the messages of each chunk that decompresses whole (and matches its CRC when the writer set one). It
  stops at the first record that is cut short or unreadable; what follows is counted as dropped, never guessed at.
  Messages are yielded in time order, like rosbags' own reader, one chunk decompressed at a time. It offers what
  :class:`~swfp_ros.data.reader.BagSource` uses of a rosbags storage reader (``connections``, ``message_count``,
  ``start_time``, ``end_time``, ``messages()``, ``close()``) and yields rosbags ``Connection`` tuples.
* **sqlite3** — SQLite leaves a sidecar beside the database until the writer closes it: a write-ahead log
  (``.db3-wal``, rosbag2's ``resilient`` preset) holding the last committed transactions, or a rollback journal
  (``.db3-journal``, SQLite's default, used by rosbag2 and rosbags) holding what the transaction in progress
  overwrote. rosbags opens the database as immutable and ignores both: committed messages in a log are silently
  missing, and a database a killed transaction had partly overwritten reads inconsistent. :func:`recover_sqlite`
  lets SQLite itself recover a copy (the files of the recording are only read), which rosbags then reads.
"""
from __future__ import annotations

import heapq
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import apsw
from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat

MAGIC = b'\x89MCAP0\r\n'
(_OP_HEADER, _OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK,
 _OP_DATA_END) = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F
# the specification's opcodes and its private range; 0x00 is what a zero-filled tail (a power cut) reads as
_KNOWN_OPS = set(range(0x01, 0x10)) | set(range(0x80, 0x100))
_RECORD_HEAD = struct.Struct('<BQ')           # opcode, content length
_MESSAGE_HEAD = struct.Struct('<HIQQ')        # channel id, sequence, log time, publish time
_STRETCH_BYTES = 2**20                        # messages written outside chunks are read back in stretches this size
_SCHEMA_FORMATS = {'ros2msg': MessageDefinitionFormat.MSG, 'ros2idl': MessageDefinitionFormat.IDL,
                   'omgidl': MessageDefinitionFormat.IDL}


class UnreadableRecord(ValueError):
    """A record that is cut short or does not parse; the read stops before it."""


def is_unfinished_mcap(path: Path) -> bool:
    """Whether ``path`` starts like an MCAP file but does not end with one (its writer never wrote the footer).
    False for a file that cannot be opened: the reader that then fails to open it says why."""
    try:
        with path.open('rb') as f:
            head = f.read(len(MAGIC))
            size = f.seek(0, 2)
            if head != MAGIC:
                return False
            if size < 2 * len(MAGIC):
                return True
            f.seek(-len(MAGIC), 2)
            return f.read(len(MAGIC)) != MAGIC
    except OSError:
        return False


@dataclass
class _Run:
    """Messages read back together: a chunk, or a stretch of message records written outside any chunk."""
    offset: int                       # file offset of the chunk's compressed records, or of the stretch's records
    size: int
    compression: str | None           # None: a stretch outside any chunk
    uncompressed_size: int = 0
    crc: int = 0
    start_time: int = 2**63 - 1
    channels: set[int] = field(default_factory=set)


class _Cursor:
    """Little-endian fields of one record's bytes; a field past the end is an :class:`UnreadableRecord`."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise UnreadableRecord(f'field of {n} bytes past the end of a {len(self.data)}-byte record')
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def uint(self, fmt: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        try:
            return self.take(self.uint('<I')).decode()
        except UnicodeDecodeError as err:
            raise UnreadableRecord(f'string that is not UTF-8: {err}') from None


def _decompress(data: bytes, compression: str, size: int, crc: int) -> bytes:
    if compression not in ('', 'zstd', 'lz4'):
        raise UnreadableRecord(f'chunk compressed with {compression!r}, which MCAP does not define')
    try:
        if compression == 'zstd':
            try:
                from compression import zstd          # Python 3.14
            except ImportError:
                from backports import zstd
            raw = zstd.decompress(data)
        elif compression == 'lz4':
            import lz4.frame
            raw = lz4.frame.decompress(data)
        else:
            raw = data
    except Exception as err:  # noqa: BLE001 - each library raises its own error for a damaged frame
        raise UnreadableRecord(f'chunk does not decompress ({type(err).__name__}: {err})') from None
    if len(raw) != size:
        raise UnreadableRecord(f'chunk of {len(raw)} bytes where its record says {size}')
    if crc and zlib.crc32(raw) != crc:
        raise UnreadableRecord('chunk checksum mismatch')
    return raw


def _records(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(opcode, start, end) of each record's content in a chunk's decompressed bytes, or in a stretch of the file."""
    pos, size = 0, len(data)
    while pos < size:
        if pos + _RECORD_HEAD.size > size:
            raise UnreadableRecord('a record cut short inside a chunk')
        op, length = _RECORD_HEAD.unpack_from(data, pos)
        pos += _RECORD_HEAD.size + length
        if pos > size:
            raise UnreadableRecord('a record that overruns its chunk')
        yield op, pos - length, pos


def _message_head(data: bytes, start: int, end: int) -> tuple[int, int]:
    """(channel id, log time) of the message record whose content is ``data[start:end]``."""
    if end - start < _MESSAGE_HEAD.size:
        raise UnreadableRecord('a message record too short for its header')
    cid, _sequence, log_time, _publish_time = _MESSAGE_HEAD.unpack_from(data, start)
    return cid, log_time


def _check_channels(messages: list[tuple[int, int]], defined: set[int]) -> None:
    """MCAP writers define a channel before its first message: one that did not wrote something else."""
    for cid, _log_time in messages:
        if cid not in defined:
            raise UnreadableRecord(f'a message on channel {cid}, which the file has not defined')


def _definition(op: int, c: _Cursor) -> tuple[int, int | None, tuple]:
    """(opcode, id, fields) of a schema (name, encoding, text) or channel (schema id, topic, message encoding);
    other records define nothing."""
    if op == _OP_SCHEMA:
        sid = c.uint('<H')
        return op, sid, (c.string(), c.string(), c.take(c.uint('<I')).decode(errors='replace'))
    if op == _OP_CHANNEL:
        cid, sid = c.uint('<H'), c.uint('<H')
        return op, cid, (sid, c.string(), c.string())
    return op, None, ()


class UnfinishedMcapReader:
    """The complete records of an unfinished MCAP file (see the module's docstring). ``open()`` raises
    :class:`UnreadableRecord` when not even the file's header is whole."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file_size = 0
        self.read_bytes = 0              # the file's bytes up to the end of its last complete record
        self.stop_reason = ''            # why the read stopped there
        self._schemas: dict[int, tuple[str, str, str]] = {}      # id -> (name, encoding, data)
        self._channels: dict[int, tuple[int, str, str]] = {}     # id -> (schema id, topic, message encoding)
        self._runs: list[_Run] = []
        self._counts: dict[int, int] = {}
        self._start, self._end = 2**63 - 1, 0
        self._file: BinaryIO | None = None
        self.connections: list[Connection] = []

    # ---------------------------------------------------------------- scan
    def open(self) -> None:
        self._file = self.path.open('rb')
        self.file_size = self._file.seek(0, 2)
        self._file.seek(0)
        if self._file.read(len(MAGIC)) != MAGIC:
            raise UnreadableRecord('no MCAP magic at its start')
        try:
            op, header = self._next_record()
        except UnreadableRecord as err:
            raise UnreadableRecord(f'no whole header record: {err}') from None
        if op != _OP_HEADER:
            raise UnreadableRecord('its first record is not an MCAP header')
        if _Cursor(header).string() != 'ros2':
            raise UnreadableRecord('its profile is not ros2')
        self.read_bytes = self._file.tell()
        while True:
            start = self._file.tell()
            try:
                op, content = self._next_record()
            except UnreadableRecord as err:
                self.stop_reason = str(err)
                break
            if op in (_OP_DATA_END, _OP_FOOTER):
                self.stop_reason = 'the end of its data section: only its index follows'
                break
            try:
                self._take(op, content, start)
            except UnreadableRecord as err:
                self.stop_reason = f'an unreadable record at byte {start} ({err})'
                break
            self.read_bytes = self._file.tell()
        self.connections = [self._connection(cid) for cid in self._channels]

    def _next_record(self) -> tuple[int, bytes]:
        assert self._file is not None
        at = self._file.tell()
        head = self._file.read(_RECORD_HEAD.size)
        if not head:
            raise UnreadableRecord(f'the end of the file (byte {at})')
        if len(head) < _RECORD_HEAD.size:
            raise UnreadableRecord(f'a record cut short at byte {at}')
        op, length = _RECORD_HEAD.unpack(head)
        if op not in _KNOWN_OPS:
            raise UnreadableRecord(f'no record at byte {at} (opcode {op:#04x})')
        end = at + _RECORD_HEAD.size + length
        if end > self.file_size:
            raise UnreadableRecord(f'a record cut short at byte {at} ({end - self.file_size} of its {end - at} bytes '
                                   f'missing)')
        return op, self._file.read(length)

    def _take(self, op: int, content: bytes, record_start: int) -> None:
        """Register one complete top-level record; a chunk counts only if it decompresses and parses whole."""
        c = _Cursor(content)
        if op == _OP_CHUNK:
            c.take(16)                                          # the writer's time range: recomputed from messages
            uncompressed_size, crc, compression = c.uint('<Q'), c.uint('<I'), c.string()
            size = c.uint('<Q')
            run = _Run(record_start + _RECORD_HEAD.size + c.pos, size, compression, uncompressed_size, crc)
            raw = _decompress(c.take(size), compression, uncompressed_size, crc)
            definitions, messages = [], []
            for inner_op, start, end in _records(raw):
                if inner_op == _OP_MESSAGE:
                    messages.append(_message_head(raw, start, end))
                else:
                    definitions.append(_definition(inner_op, _Cursor(raw[start:end])))
            _check_channels(messages, set(self._channels) | {key for op, key, _ in definitions if op == _OP_CHANNEL})
            for definition in definitions:
                self._define(*definition)
            self._add_run(run, messages)
        elif op == _OP_MESSAGE:
            message = _message_head(content, 0, len(content))
            _check_channels([message], set(self._channels))
            size = _RECORD_HEAD.size + len(content)
            last = self._runs[-1] if self._runs else None
            if last and last.compression is None and last.offset + last.size == record_start \
                    and last.size < _STRETCH_BYTES:
                last.size += size
                self._add_run(last, [message])
            else:
                self._add_run(_Run(record_start, size, None), [message])
        else:
            self._define(*_definition(op, c))

    def _define(self, op: int, key: int | None, value: tuple) -> None:
        if op == _OP_SCHEMA:
            self._schemas[key] = value
        elif op == _OP_CHANNEL:
            self._channels[key] = value

    def _add_run(self, run: _Run, messages: list[tuple[int, int]]) -> None:
        """Messages whose records all parsed, on channels the file has defined, in a new run or the last one."""
        for cid, log_time in messages:
            run.channels.add(cid)
            self._counts[cid] = self._counts.get(cid, 0) + 1
            run.start_time = min(run.start_time, log_time)
            self._start, self._end = min(self._start, log_time), max(self._end, log_time)
        if run.channels and not (self._runs and self._runs[-1] is run):
            self._runs.append(run)

    def _connection(self, cid: int) -> Connection:
        sid, topic, encoding = self._channels[cid]
        name, schema_encoding, data = self._schemas.get(sid, ('', '', ''))
        msgdef = MessageDefinition(_SCHEMA_FORMATS.get(schema_encoding, MessageDefinitionFormat.NONE), data)
        return Connection(cid, topic, name, msgdef, '', self._counts.get(cid, 0),
                          ConnectionExtRosbag2(encoding, []), self)

    # ---------------------------------------------------------------- what BagSource reads
    @property
    def message_count(self) -> int:
        return sum(self._counts.values())

    @property
    def start_time(self) -> int:
        return self._start

    @property
    def end_time(self) -> int:
        """One past the last message's timestamp, as rosbags' readers report it."""
        return self._end + 1

    def messages(self, connections) -> Iterator[tuple[Connection, int, bytes]]:
        """``(connection, timestamp, raw)`` of the given connections' messages, in time order."""
        wanted = {c.id: c for c in connections}
        runs = [(i, run) for i, run in enumerate(self._runs) if not run.channels.isdisjoint(wanted)]
        merged = heapq.merge(*(self._run_messages(i, run, wanted) for i, run in runs))
        for timestamp, _run, _rank, conn, raw in merged:
            if conn is not None:
                yield conn, timestamp, raw

    def _run_messages(self, index: int, run: _Run, wanted: dict) -> Iterator[tuple]:
        """A run's messages sorted by time, after a marker at its first time, so that the merge reads (and
        decompresses) a chunk only once the messages before it have gone."""
        yield run.start_time, index, -1, None, b''
        assert self._file is not None
        self._file.seek(run.offset)
        raw = self._file.read(run.size)
        if run.compression is not None:
            raw = _decompress(raw, run.compression, run.uncompressed_size, run.crc)
        found = []
        for op, start, end in _records(raw):
            if op == _OP_MESSAGE:
                cid, log_time = _message_head(raw, start, end)
                if cid in wanted:
                    found.append((log_time, index, len(found), wanted[cid], raw[start + _MESSAGE_HEAD.size:end]))
        yield from sorted(found, key=lambda m: (m[0], m[2]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --- sqlite3 ----------------------------------------------------------------------------------------------------
def sqlite_sidecar(path: Path) -> Path | None:
    """The write-ahead log or rollback journal SQLite left beside the database ``path`` (None: closed cleanly). An
    empty one holds nothing to recover (a journal is emptied, not always deleted, when a transaction ends)."""
    for suffix in ('-wal', '-journal'):
        sidecar = path.with_name(path.name + suffix)
        try:
            if sidecar.stat().st_size > 0:
                return sidecar
        except OSError:
            continue
    return None


def recover_sqlite(path: Path, sidecar: Path, folder: Path) -> Path:
    """A copy of the database ``path`` in ``folder`` as SQLite recovers it with its ``sidecar``: the transactions a
    write-ahead log holds folded in, or the transaction a rollback journal was undoing rolled back. Returns the copy
    (a database with no sidecar, which any reader reads whole). ``apsw.Error`` when SQLite cannot recover it."""
    copy = folder / path.name
    shutil.copyfile(path, copy)
    shutil.copyfile(sidecar, folder / (copy.name + sidecar.name[len(path.name):]))
    con = apsw.Connection(str(copy))
    try:
        # reading the header rolls a hot journal back; leaving WAL mode folds the log into the file and removes it
        con.execute('PRAGMA journal_mode=DELETE').fetchall()
    finally:
        con.close()
    return copy

