"""Open a rosbag2 recording robustly: a bag directory or a single ``.db3`` / ``.mcap`` file, formats v4-v9.

* A directory whose ``metadata.yaml`` is valid and matches its files is read through the storage files it lists
  (or through rosbags' directory reader when the bag is compressed).
* A ``metadata.yaml`` that is missing, unreadable, lists files that do not exist, or whose message counts or
  serialization formats disagree with the storage files triggers a :class:`BagWarning` and a fall back to the
  ``.mcap`` / ``.db3`` files in the directory. Its ``relative_file_paths`` are relative to the bag directory
  (subdirectories included; early rosbag2 releases prefixed the bag directory's own name, which is accepted too).
* A single storage file's embedded metadata is used for the format version and ROS distro only: rosbag2 writes the
  MCAP copy when the bag is opened (0 messages), so its counts say nothing.
* Each topic keeps its serialization format; only CDR can be decoded (ingest refuses any other, naming the topic).
* Message definitions come from the bag itself (MCAP schemas, sqlite3 ``message_definitions``); types a bag does not
  define (old bags) come from the standard ROS 2 type store.
* A recording its recorder never finished (killed, or a power loss) is read as far as it is whole, with a warning:
  an MCAP file without its footer up to its last complete record, a sqlite3 file still beside its write-ahead log
  or rollback journal through a copy SQLite recovered (:mod:`.unfinished`).
* Any other failure to read a storage file (a garbled sqlite3 file, an MCAP file damaged in the middle, or one never
  finished that holds no complete chunk) raises :class:`BagReadError` naming the file.

Messages are streamed in time order (a heap merge of the storage files' time-ordered streams), never loaded whole.
"""
from __future__ import annotations

import heapq
import io
import re
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import apsw
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

from .unfinished import UnfinishedMcapReader, UnreadableRecord, is_unfinished_mcap, recover_sqlite, sqlite_sidecar

# rosbag2 stores a type's .idl file as it is, #include lines and all (the included types follow as parts of their
# own); rosbags' IDL parser refuses preprocessor lines
_PREPROCESSOR_LINE = re.compile(r'^[ \t]*#.*$', re.MULTILINE)

STORAGE_SUFFIXES = {'.mcap': 'mcap', '.db3': 'sqlite3'}
UNFINISHED_WHY = 'its recorder was killed or lost power, or is still recording?'


class BagWarning(UserWarning):
    """A recoverable problem with a bag (e.g. metadata.yaml does not match its files)."""


class BagError(ValueError):
    """A problem with a bag's content for ingestion; the message names the bag (and topic / field / type)."""

    def __init__(self, message: str, *, bag: str | Path | None = None, topic: str | None = None,
                 field: str | None = None, msgtype: str | None = None):
        super().__init__(message)
        self.bag = str(bag) if bag is not None else None
        self.topic, self.field, self.msgtype = topic, field, msgtype


class BagReadError(BagError):
    """A storage file could not be read (truncated, corrupt, not a bag); the message names the file."""


@dataclass
class BagConnection:
    topic: str
    msgtype: str
    msgcount: int
    msgdef: str
    msgdef_format: str           # 'msg' | 'idl' | ''
    serialization_format: str = 'cdr'


def _wrap_read(path: Path, err: BaseException) -> BagReadError:
    return BagReadError(f'{path}: cannot read rosbag2 storage (truncated or corrupt?): '
                        f'{type(err).__name__}: {err}', bag=path)


def _read_yaml(path: Path):
    import yaml
    return yaml.safe_load(path.read_text())


def _embedded_metadata(path: Path) -> dict | None:
    """The rosbag2 metadata a storage file carries itself (sqlite3 ``metadata`` table / MCAP ``rosbag2`` record)."""
    import yaml
    try:
        if path.suffix == '.db3':
            import apsw
            con = apsw.Connection(f'file:{path}?immutable=1', flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
            try:
                row = con.execute('SELECT metadata_version, metadata FROM metadata ORDER BY rowid DESC LIMIT 1'
                                  ).fetchone()
            finally:
                con.close()
            if not row:
                return None
            meta = yaml.safe_load(row[1]) or {}
            meta.setdefault('version', row[0])
            return meta
        if path.suffix == '.mcap':
            return _mcap_metadata(path)
    except Exception:  # noqa: BLE001 - purely informational
        return None
    return None


# The encodings of a message definition rosbags reads (docs/message_definition_encoding.md in rosbag2). rosbag2
# records '' (and an empty text) for a type whose definition it could not find.
DEFINITION_ENCODINGS = ('ros2msg', 'ros2idl')


def _types_without_definition(path: Path) -> list[str]:
    """The types sqlite3 storage file ``path`` lists with a definition of no known encoding; none where it has no
    message_definitions table (format versions before 8) or cannot be read: the reader's own error says why then."""
    con = apsw.Connection(f'file:{path}?immutable=1', flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        rows = con.execute('SELECT topic_type FROM message_definitions WHERE encoding NOT IN (?, ?) '
                           'ORDER BY topic_type', DEFINITION_ENCODINGS).fetchall()
    except apsw.Error:
        return []
    finally:
        con.close()
    return [row[0] for row in rows]


def _mark_definitions_empty(path: Path) -> None:
    """Give the definitions of no known encoding in sqlite3 file ``path`` (a copy) a known one and no text: read as
    types the bag does not define."""
    con = apsw.Connection(str(path))
    try:
        con.execute("UPDATE message_definitions SET encoding = ?, encoded_message_definition = '' "
                    'WHERE encoding NOT IN (?, ?)', (DEFINITION_ENCODINGS[0], *DEFINITION_ENCODINGS))
    finally:
        con.close()


def _mcap_metadata(path: Path) -> dict | None:
    import yaml
    with path.open('rb') as f:
        f.seek(-37, 2)
        footer = f.read(37)
        if footer[-8:] != b'\x89MCAP0\r\n' or footer[0] != 0x02:
            return None
        (summary_start,) = struct.unpack_from('<Q', footer, 9)
        if not summary_start:
            return None
        end = f.seek(0, 2) - 37
        f.seek(summary_start)
        while f.tell() < end:
            op = f.read(1)[0]
            (size,) = struct.unpack('<Q', f.read(8))
            rec = f.read(size)
            if op == 0x0D:  # metadata index: offset, length, name
                offset, _length = struct.unpack_from('<QQ', rec, 0)
                (nlen,) = struct.unpack_from('<I', rec, 16)
                if rec[20:20 + nlen] != b'rosbag2':
                    continue
                f.seek(offset)
                if f.read(1)[0] != 0x0C:
                    return None
                (size,) = struct.unpack('<Q', f.read(8))
                bio = io.BytesIO(f.read(size))

                def rstr():
                    (n,) = struct.unpack('<I', bio.read(4))
                    return bio.read(n).decode()
                rstr()  # name
                (maplen,) = struct.unpack('<I', bio.read(4))
                stop = bio.tell() + maplen
                while bio.tell() < stop:
                    k, v = rstr(), rstr()
                    if k == 'serialized_metadata':
                        meta = yaml.safe_load(v) or {}
                        return meta.get('rosbag2_bagfile_information', meta)
                return None
    return None


class BagSource:
    """An opened rosbag2 recording. Use as a context manager (``with open_bag(path) as bag:``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.warnings: list[str] = []
        self.files: list[Path] = []
        self.storage_id: str | None = None
        self.version: int | None = None
        self.metadata: dict | None = None         # metadata.yaml when it matches the files, else embedded metadata
        self.ros_distro: str | None = None        # from any metadata that names it, even one not otherwise used
        self._counts_claimed = False              # self.metadata is a metadata.yaml whose counts must match
        self._readers: list = []
        self._dir_reader = None
        self.connections: dict[tuple[str, str], BagConnection] = {}
        self._typestore = None
        self._readable: dict[Path, Path] = {}     # storage file -> the file read: itself, or a copy made readable
        self._copies: tempfile.TemporaryDirectory | None = None     # holds those copies

    # ---------------------------------------------------------------- opening
    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        warnings.warn(msg, BagWarning, stacklevel=3)

    def open(self) -> 'BagSource':
        p = self.path
        if not p.exists():
            raise FileNotFoundError(f'{p}: no such rosbag2 bag (directory, .mcap or .db3 file)')
        if p.is_file():
            if p.suffix not in STORAGE_SUFFIXES:
                raise BagReadError(f'{p}: not a rosbag2 storage file (expected .mcap or .db3, or a bag directory)',
                                   bag=p)
            self.files = [p]
        else:
            self.files = self._files_from_directory(p)
        try:
            self._readable = {f: self._readable_sqlite(f) if f.suffix == '.db3' else f for f in self.files}
            if p.is_file() and (meta := _embedded_metadata(self._readable[p])):
                self.metadata = meta
            self._read_versions()
            self._open_readers()
        except BaseException:
            self.close()
            raise
        return self

    def _read_versions(self) -> None:
        """The bag's format version, ROS distro and storage, from the metadata or else the storage files."""
        if self.metadata and self.metadata.get('version') is not None:
            try:
                self.version = int(self.metadata['version'])
            except (TypeError, ValueError):
                self.version = None
        if self.version is None or self.ros_distro is None:
            for f in self.files:
                meta = _embedded_metadata(self._readable[f]) or {}
                if self.version is None and meta.get('version') is not None:
                    self.version = int(meta['version'])
                self.ros_distro = self.ros_distro or meta.get('ros_distro')
        ids = {STORAGE_SUFFIXES.get(f.suffix) for f in self.files}
        if self._counts_claimed:    # a valid metadata.yaml names it (compressed files end in .zstd)
            self.storage_id = self.metadata['storage_identifier']
        else:
            self.storage_id = ids.pop() if len(ids) == 1 else (self.metadata or {}).get('storage_identifier')

    def _files_from_directory(self, d: Path) -> list[Path]:
        found = sorted(x for x in d.iterdir() if x.suffix in STORAGE_SUFFIXES and x.is_file())
        mpath = d / 'metadata.yaml'
        problem = None
        meta = None
        if not mpath.is_file():
            problem = 'has no metadata.yaml'
        else:
            try:
                meta = _read_yaml(mpath)
                meta = meta['rosbag2_bagfile_information']
                if isinstance(meta, dict) and isinstance(meta.get('ros_distro'), str):
                    self.ros_distro = meta['ros_distro']
                listed = [_listed_file(d, x) for x in meta['relative_file_paths']]
                ver = int(meta['version'])
                if ver > 9 or ver < 1:
                    problem = f'metadata.yaml has unsupported version {ver}'
                elif missing := [str(x.relative_to(d)) for x in listed if not x.is_file()]:
                    problem = f'metadata.yaml lists storage file(s) that do not exist: {missing}'
                elif meta.get('storage_identifier') not in ('mcap', 'sqlite3'):
                    problem = f'metadata.yaml has unsupported storage_identifier {meta.get("storage_identifier")!r}'
                else:
                    self.metadata = meta
                    self._counts_claimed = True
                    mode = str(meta.get('compression_mode') or '').lower()
                    if mode and mode != 'none':
                        self._dir_reader = Reader(d)   # rosbags handles file / message compression
                    return listed
            except Exception as err:  # noqa: BLE001
                problem = f'metadata.yaml is unreadable ({type(err).__name__}: {err})'
                meta = None
        if not found:
            raise BagReadError(f'{d}: {problem or "is not a bag"} and holds no .mcap or .db3 storage files', bag=d)
        self._warn(f'{d}: {problem}; falling back to the storage files {[x.name for x in found]}')
        return found

    def _open_readers(self) -> None:
        if self._dir_reader is not None:
            try:
                self._dir_reader.open()
            except Exception as err:  # noqa: BLE001
                raise _wrap_read(self.path, err) from err
            conns = [(self.path, c) for c in self._dir_reader.connections]
            self._readers = [(self.path, self._dir_reader)]
        else:
            conns = []
            for f in self.files:
                if f.suffix == '.mcap' and is_unfinished_mcap(f):
                    r = self._open_unfinished_mcap(f)
                else:
                    r = Reader(self._readable[f])
                    try:
                        r.open()
                    except Exception as err:  # noqa: BLE001
                        raise _wrap_read(f, err) from err
                self._readers.append((f, r))
                conns.extend((f, c) for c in r.connections)
        for _f, c in conns:
            key = (c.topic, c.msgtype)
            fmt = {MessageDefinitionFormat.MSG: 'msg', MessageDefinitionFormat.IDL: 'idl'}.get(c.msgdef.format, '')
            bc = self.connections.get(key)
            if bc is None:
                bc = self.connections[key] = BagConnection(c.topic, c.msgtype, 0, c.msgdef.data, fmt,
                                                           getattr(c.ext, 'serialization_format', None) or 'cdr')
            elif not bc.msgdef and fmt:
                bc.msgdef, bc.msgdef_format = c.msgdef.data, fmt
            bc.msgcount += c.msgcount
        if self._counts_claimed and self._dir_reader is None:
            self._check_counts()

    def _copy_folder(self) -> Path:
        if self._copies is None:
            self._copies = tempfile.TemporaryDirectory(prefix='swfp-bag-copies-')
        return Path(self._copies.name)

    def _readable_sqlite(self, f: Path) -> Path:
        """``f``, or a copy of it that can be read (never ``f`` itself changed): recovered by SQLite when the recorder
        never closed it (a log or journal still beside it), and with the message definitions rosbag2 left empty
        marked as empty definitions (rosbags refuses a definition without a known encoding, and with it the file)."""
        readable = f
        if (sidecar := sqlite_sidecar(f)) is not None:
            try:
                readable = recover_sqlite(f, sidecar, self._copy_folder())
            except (OSError, apsw.Error) as err:
                raise BagReadError(f'{f}: cannot read rosbag2 storage (truncated or corrupt?): a sqlite3 database '
                                   f'never closed (its {sidecar.name} is still there) that SQLite cannot recover: '
                                   f'{type(err).__name__}: {err}', bag=f) from err
            done = ('the transactions committed in that log folded in' if sidecar.name.endswith('-wal') else
                    'the transaction it was writing rolled back')
            self._warn(f'{f}: a sqlite3 database never closed ({UNFINISHED_WHY}); read a copy SQLite recovered with '
                       f'its {sidecar.name}, {done}')
        if undefined := _types_without_definition(readable):
            if readable is f:
                readable = self._copy_folder() / f.name
                shutil.copyfile(f, readable)
            _mark_definitions_empty(readable)
            self._warn(f'{f}: its recorder stored no message definition for {", ".join(undefined)} (rosbag2 leaves '
                       f"one empty when it cannot find the type's .msg or .idl file); read a copy with those "
                       f'definitions marked empty: standard ROS 2 types decode with the standard definitions')
        return readable

    def _open_unfinished_mcap(self, f: Path) -> UnfinishedMcapReader:
        """The complete records of an MCAP file its writer never finished, with a warning saying what was lost."""
        r = UnfinishedMcapReader(f)
        try:
            r.open()
        except (OSError, UnreadableRecord) as err:
            r.close()
            raise BagReadError(f'{f}: cannot read rosbag2 storage (truncated or corrupt?): an MCAP file never '
                               f'finished: {err}', bag=f) from err
        if not r.message_count:
            r.close()
            raise BagReadError(f'{f}: cannot read rosbag2 storage (truncated or corrupt?): an MCAP file never finished '
                               f'({UNFINISHED_WHY}) with no complete chunk of messages; the read stopped at '
                               f'{r.stop_reason}', bag=f)
        dropped = r.file_size - r.read_bytes
        self._warn(f'{f}: an MCAP file never finished ({UNFINISHED_WHY}); read {r.message_count} messages from its '
                   f'complete records, up to byte {r.read_bytes} of {r.file_size}'
                   + (f', and dropped the {dropped} bytes after it ({r.stop_reason})' if dropped else ''))
        return r

    def _check_counts(self) -> None:
        meta = self.metadata
        try:
            claimed = int(meta.get('message_count'))
            per_topic = {t['topic_metadata']['name']: int(t['message_count'])
                         for t in meta.get('topics_with_message_count') or []}
        except Exception:  # noqa: BLE001
            self._warn(f'{self.path}: metadata.yaml has malformed message counts; using the storage files')
            return
        actual = sum(c.msgcount for c in self.connections.values())
        have = {}
        for c in self.connections.values():
            have[c.topic] = have.get(c.topic, 0) + c.msgcount
        if claimed != actual or any(have.get(k, 0) != v for k, v in per_topic.items()):
            self._warn(f'{self.path}: metadata.yaml says {claimed} messages but the storage files hold {actual} '
                       f'(per topic: metadata {per_topic}, files {have}); using the storage files')
        formats = {t['topic_metadata']['name']: t['topic_metadata'].get('serialization_format')
                   for t in meta.get('topics_with_message_count') or []}
        for c in self.connections.values():
            claimed_format = formats.get(c.topic) or c.serialization_format
            if claimed_format != c.serialization_format:
                self._warn(f'{self.path}: metadata.yaml says topic {c.topic} is serialized as {claimed_format!r} '
                           f'but its storage file says {c.serialization_format!r}; using the storage file')

    def close(self) -> None:
        readers, self._readers = self._readers, []
        for _f, r in readers:
            try:
                r.close()
            except Exception:  # noqa: BLE001
                pass
        if self._copies is not None:
            self._copies.cleanup()
            self._copies = None

    def __enter__(self) -> 'BagSource':
        return self.open()

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # ---------------------------------------------------------------- content
    @property
    def topics(self) -> dict[str, list[BagConnection]]:
        out: dict[str, list[BagConnection]] = {}
        for c in self.connections.values():
            out.setdefault(c.topic, []).append(c)
        return out

    @property
    def message_count(self) -> int:
        return sum(c.msgcount for c in self.connections.values())

    @property
    def start_time(self) -> int | None:
        ts = [r.start_time for _f, r in self._readers if r.message_count]
        return min(ts) if ts else None

    @property
    def end_time(self) -> int | None:
        """Timestamp (ns) of the last message."""
        ts = [r.end_time - 1 for _f, r in self._readers if r.message_count]
        return max(ts) if ts else None

    def typestore(self, needed_types: Iterable[str] = ()):
        """A typestore holding the bag's own definitions, completed from the standard ROS 2 store for types the bag
        does not define. Types in neither are simply absent (the caller names them in its error)."""
        if self._typestore is None:
            ts = get_typestore(Stores.EMPTY)
            for bc in self.connections.values():
                if not bc.msgdef:
                    continue
                try:
                    if bc.msgdef_format == 'msg':
                        typs = get_types_from_msg(bc.msgdef, bc.msgtype)
                    else:
                        typs = {}
                        sep = '=' * 80 + '\n'
                        parts = bc.msgdef.split(sep)[1:] if bc.msgdef.startswith(sep + 'IDL: ') else [bc.msgdef]
                        for part in parts:
                            idl = part.split('\n', 1)[1] if part.startswith('IDL: ') else part
                            typs.update(get_types_from_idl(_PREPROCESSOR_LINE.sub('', idl)))
                    ts.register({k: v for k, v in typs.items() if k not in ts.fielddefs})
                except Exception as err:  # noqa: BLE001
                    self._warn(f'{self.path}: cannot parse the embedded definition of {bc.msgtype} on {bc.topic} '
                               f'({type(err).__name__}: {err}); trying the standard type store')
            self._typestore = ts
        ts = self._typestore
        if any(t not in ts.types for t in needed_types):
            std = get_typestore(Stores.ROS2_KILTED)
            ts.register({k: v for k, v in std.fielddefs.items() if k not in ts.fielddefs})
        return ts

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
        """Yield ``(topic, msgtype, timestamp_ns, raw_cdr)`` in time order, streaming; read errors name the file."""
        want = set(topics) if topics is not None else None
        streams = []
        for f, r in self._readers:
            conns = [c for c in r.connections if want is None or c.topic in want]
            if conns:
                streams.append(_guarded(f, r.messages(connections=conns)))
        it = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda x: x[2])
        return it


def _listed_file(d: Path, listed: str) -> Path:
    """A ``relative_file_paths`` entry of bag directory ``d``: relative to ``d`` (early rosbag2 releases prefixed
    ``d``'s own name). Absolute paths or ones that climb out of ``d`` are refused (``ValueError``)."""
    rel = Path(listed)
    if rel.is_absolute() or '..' in rel.parts:
        raise ValueError(f'storage file path {listed!r} is not inside the bag directory')
    if not (d / rel).is_file() and len(rel.parts) > 1 and rel.parts[0] == d.name:
        return d.joinpath(*rel.parts[1:])
    return d / rel


def _guarded(path: Path, gen) -> Iterator[tuple[str, str, int, bytes]]:
    try:
        for conn, t, raw in gen:
            yield conn.topic, conn.msgtype, t, raw
    except Exception as err:  # noqa: BLE001
        raise _wrap_read(path, err) from err


def open_bag(path: str | Path) -> BagSource:
    """A :class:`BagSource` for ``path`` (not yet opened: use ``with open_bag(p) as bag:``)."""
    return BagSource(path)
