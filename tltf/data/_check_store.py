"""Where the file check pass keeps its verdicts: one SQLite row per file, shared by processes.

`tltf.data.checks.check_files` asks for the rows of the files it is given and writes a row
per file it had to check, in small transactions while the pass runs; nothing is ever read
or rewritten whole, so a second call over a million unchanged files costs a `stat` and an
index lookup per file, and an interrupted pass keeps what it had done. SQLite in WAL mode
lets two processes (two `tltf train` on one folder) read and write the same cache at once.

A cache that cannot be used (a corrupt file, a folder without write permission, a lock
held longer than `_TIMEOUT`) never stops a load: the pass goes on without it and says so
once. The JSON cache of tltf 0.1 (`file-checks.json`) is read once into a new database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path

from tltf._warn import warn

DB_NAME = "file-checks.sqlite"
_OLD_JSON = "file-checks.json"
_TIMEOUT = 30.0  # seconds another process may hold the write lock before we give up on it
_CHUNK = 500  # paths per SELECT ... IN (...) (SQLite allows at least 999 parameters)
_SCHEMA = 1


class CheckStore:
    """Rows `path -> (size, mtime_ns, check fields)` of one check version, or nothing if broken.

    Args:
        folder: the cache folder (created if needed).
        version: the check version; rows of another version are never returned.
    """

    def __init__(self, folder: Path, version: int):
        self.file = Path(folder) / DB_NAME
        self.version = version
        self.db: sqlite3.Connection | None = None
        self.pending: list[tuple] = []
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.file, timeout=_TIMEOUT, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # a cache: a power cut may lose rows
            if self.db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA:
                self._create(Path(folder) / _OLD_JSON)
        except (sqlite3.Error, OSError) as e:
            self._give_up(e)

    def _create(self, old_json: Path) -> None:
        with self.db:  # one transaction: a second process waits, then sees the table
            self.db.execute("BEGIN IMMEDIATE")
            if self.db.execute("PRAGMA user_version").fetchone()[0] == _SCHEMA:
                return
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS checks (path BLOB PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, version INTEGER, fields TEXT) WITHOUT ROWID"
            )
            self.db.executemany("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?)",
                                _old_rows(old_json, self.version))
            self.db.execute(f"PRAGMA user_version={_SCHEMA}")

    def _give_up(self, error: Exception) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
        self.db = None
        self.pending = []
        warn(
            f"The file-check cache {self.file} cannot be used ({type(error).__name__}: {error}); "
            "checking the files without it, so this load reads every image. Delete the file if "
            "it is corrupt, or pass another `cache_dir`."
        )

    def get(self, paths: list[str]) -> dict[str, tuple[int, int, list]]:
        """The stored (size, mtime_ns, fields) of those of `paths` that have a row."""
        found: dict[str, tuple[int, int, list]] = {}
        if self.db is None or not paths:
            return found
        # Stored key -> path as given, so a row maps back by one lookup (os.fsencode and
        # os.fsdecode, called per file, were a tenth of a second call over 200k files).
        encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
        keys = {p.encode(encoding, errors) if isinstance(p, str) else os.fsencode(p): p
                for p in paths}
        try:
            for rows in self._rows(keys):
                # One JSON parse of a chunk's field lists, not one per row (a third of a
                # second call's time per 20k files).
                parsed = json.loads("[" + ",".join(row[3] for row in rows) + "]")
                for (path, size, mtime_ns, _), fields in zip(rows, parsed, strict=True):
                    found[keys[path]] = (size, mtime_ns, fields)
        except (sqlite3.Error, ValueError) as e:
            self._give_up(e)
            return {}
        return found

    def _rows(self, wanted: dict[bytes, str]) -> Iterable[list[tuple]]:
        """Chunks of the stored rows of the keys of `wanted`, and of no other file."""
        select = "SELECT path, size, mtime_ns, fields FROM checks WHERE version = ? AND "
        keys = list(wanted)
        prefix = os.path.commonprefix(keys)
        if len(keys) > _CHUNK and len(prefix) > 1 and prefix.rstrip(b"\xff"):
            # Many files under one folder: one scan of the primary key's range for that
            # prefix instead of a lookup per path; rows of other files there are dropped.
            stem = prefix.rstrip(b"\xff")
            upper = stem[:-1] + bytes([stem[-1] + 1])
            cursor = self.db.execute(select + "path >= ? AND path < ?",
                                     (self.version, prefix, upper))
            while rows := cursor.fetchmany(10 * _CHUNK):
                yield [row for row in rows if row[0] in wanted]
            return
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            yield self.db.execute(select + f"path IN ({','.join('?' * len(chunk))})",
                                  (self.version, *chunk)).fetchall()

    def put(self, path: str, size: int, mtime_ns: int, fields: list) -> None:
        """Stores one verdict (written with the next `flush`)."""
        if self.db is not None:
            self.pending.append(
                (os.fsencode(path), size, mtime_ns, self.version, json.dumps(fields)))

    def flush(self) -> None:
        """Writes the pending rows in one short transaction."""
        if self.db is None or not self.pending:
            return
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?)",
                                    self.pending)
            self.pending = []
        except sqlite3.Error as e:
            self._give_up(e)

    def close(self) -> None:
        self.flush()
        if self.db is not None:
            self.db.close()
            self.db = None


def _old_rows(file: Path, version: int) -> Iterable[tuple]:
    """The verdicts of a JSON cache of tltf <= 0.2, as rows; none if it is absent or odd."""
    try:
        content = json.loads(file.read_text())
        if content.get("version") != version:
            return []
        rows = []
        for path, entry in content["files"].items():
            size, mtime_ns = entry["stat"]
            check = entry["check"]
            rows.append((os.fsencode(path), int(size), int(mtime_ns), version,
                         json.dumps([check[k] for k in _FIELDS])))
        return rows
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


# Field order of a stored verdict: FileCheck's fields after `path`, as a JSON list.
_FIELDS = ("ok", "reason", "format", "mode", "width", "height", "orientation", "sha1",
           "extension_mismatch", "decoded_path", "tf_decodes")
