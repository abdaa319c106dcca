"""The spill file: events a stop could not commit, kept on disk until the next start writes them.

Why: when the database is away as the process stops (PostgreSQL down, the SQLite directory
unwritable), the recorder's unwritten backlog and the executor's undelivered fills would
otherwise die with the process. They are appended here instead, one JSON line each
(``{"type": ..., "run_id": ..., "event": {...}}``; money as exact decimal strings), flushed and
fsynced, and the next start writes them into the store *before* recovery reads it
(``replay_spill``), then removes the file. Each file is committed in one transaction, so a
replay cut short is repeated whole without writing anything twice.

Where: ``--spill-dir`` when set, else beside a SQLite file (``trading.db`` ->
``trading.db.spill.jsonl``), else the working directory; the working directory is the fallback
(``spill_paths``), and the next start looks in each place.

A torn last line (the process killed while spilling: no newline at its end) is reported and
skipped, the rest is replayed; the next append cuts it off first. Any other undecodable line
stops the start with an error naming the file and line, and the file is kept: guessing would
lose or invent money. One file is committed in one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

import msgspec
from sqlalchemy import Engine
from sqlalchemy.engine import URL, Connection, make_url

from ._errors import StoreError, StoreUnavailable
from ._records import Recordable

log = logging.getLogger("persistence")

_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in get_args(Recordable)}


class SpillError(StoreError):
    """The spill file holds a line that cannot be decoded (not a torn last line)."""


class _Line(msgspec.Struct):
    type: str
    event: msgspec.Raw
    run_id: str | None = None


def spill_paths(url: str | URL, spill_dir: str | None = None) -> tuple[pathlib.Path, ...]:
    """Where the spill file of the database at ``url`` goes, first choice first.

    ``spill_dir`` (``--spill-dir``) when given, else beside a SQLite file, else the working
    directory; the working directory is the fallback when the first choice cannot be written
    (a SQLite directory that went away takes its neighbour with it). Files outside the
    database's own directory carry a hash of its URL in their name, so two databases never
    replay each other's events.
    """
    parsed = make_url(url)
    sqlite_file = (parsed.get_backend_name() == "sqlite"
                   and parsed.database not in (None, "", ":memory:"))
    if sqlite_file:
        assert parsed.database is not None
        db = pathlib.Path(parsed.database.removeprefix("file:").split("?", 1)[0]).absolute()
        key = str(db)
    else:
        key = parsed.render_as_string(hide_password=True)
    name = f"trading-spill-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsonl"
    if spill_dir:
        first = pathlib.Path(spill_dir).absolute() / name
    elif sqlite_file:
        first = db.with_name(db.name + ".spill.jsonl")
    else:
        first = pathlib.Path.cwd() / name
    fallback = pathlib.Path.cwd() / name
    return (first,) if fallback == first else (first, fallback)


def _plain(obj: Any) -> Any:
    # read-only mappings (``MappingProxyType``) in an event's fields: written as a dict
    if isinstance(obj, Mapping):
        return dict(obj)
    raise NotImplementedError(f"cannot spill a {type(obj).__name__}")


def write_spill(paths: Sequence[pathlib.Path], events: Sequence[Recordable],
                run_id: str | None) -> pathlib.Path:
    """Append ``events`` durably (fsync) to the first of ``paths`` that can be written.

    Raises:
        OSError: none of them could be written (the last error).
    """
    encode = msgspec.json.Encoder(decimal_format="string", enc_hook=_plain).encode
    data = b"".join(encode({"type": type(e).__name__, "run_id": run_id, "event": e}) + b"\n"
                    for e in events)
    error: OSError | None = None
    for path in paths:
        try:
            _append(path, data)
        except OSError as exc:
            error = exc
            continue
        return path
    assert error is not None
    raise error


def _append(path: pathlib.Path, data: bytes) -> None:
    """Append whole lines durably; on failure leave the file as it was (no half line that
    would break the next append, no copy of what the fallback location then gets)."""
    created = not path.exists()
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                # a torn tail: a process killed while spilling; those events were lost with it
                f.seek(0)
                keep = f.read().rfind(b"\n") + 1
                log.warning("spill file %s: dropping a torn tail of %d bytes", path,
                            size - keep)
                f.truncate(keep)
                size = keep
        try:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                f.truncate(size)
            raise
    if created:  # the new file's directory entry must survive a power cut too
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_spill(path: pathlib.Path) -> list[tuple[str | None, Recordable]]:
    """The spilled events in order, each with the run that produced it.

    Raises:
        SpillError: a line other than a torn last one cannot be decoded.
    """
    raw_lines = path.read_bytes().split(b"\n")
    # every record ends with a newline: a last piece without one is a torn write
    torn = raw_lines.pop()
    if torn.strip():
        log.warning("spill file %s:%d: torn last line skipped (%d bytes)", path,
                    len(raw_lines) + 1, len(torn))
    out: list[tuple[str | None, Recordable]] = []
    for i, raw in enumerate(raw_lines):
        if not raw.strip():
            continue
        try:
            line = msgspec.json.decode(raw, type=_Line)
            cls = _TYPES[line.type]
            event = msgspec.json.decode(line.event, type=cls)
        except (msgspec.DecodeError, KeyError) as exc:
            raise SpillError(f"{path}:{i + 1}: cannot decode a spilled event: {exc}",
                             operation="replay_spill") from exc
        out.append((line.run_id, event))
    return out


def runs_in_order(spilled: Sequence[tuple[str | None, Recordable]]
                  ) -> list[tuple[str | None, list[Recordable]]]:
    """Consecutive events of one run grouped together, order kept (one batch per group)."""
    groups: list[tuple[str | None, list[Recordable]]] = []
    for run_id, event in spilled:
        if groups and groups[-1][0] == run_id:
            groups[-1][1].append(event)
        else:
            groups.append((run_id, [event]))
    return groups


class StoreSpill:
    """The spill half of ``Store`` (see the module docstring)."""

    _engine: Engine
    _spill_dir: str | None
    current_run_id: str | None

    def _tx(self, operation: str) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError  # provided by Store

    def _batch(self, events: Sequence[Recordable], run_id: str | None
               ) -> Callable[[Connection], None] | None:
        raise NotImplementedError  # provided by Store

    def _write_groups(self, groups: Sequence[tuple[str | None, Sequence[Recordable]]]) -> None:
        """Several batches, each under its own run, in ONE transaction."""
        appliers = [apply for run_id, events in groups
                    if (apply := self._batch(events, run_id)) is not None]
        with self._tx("write_batch") as conn:
            for apply in appliers:
                apply(conn)

    @property
    def spill_paths(self) -> tuple[pathlib.Path, ...]:
        """Where events go that a stop cannot commit, first choice first (``_spill``)."""
        return spill_paths(self._engine.url, self._spill_dir)

    def spill(self, events: Sequence[Recordable], *, run_id: str | None = None) -> pathlib.Path:
        """Append ``events`` (not committed) to a spill file, fsynced; returns where.

        Raises:
            OSError: no spill location could be written.
        """
        return write_spill(self.spill_paths, events, run_id or self.current_run_id)

    def replay_spill(self) -> int:
        """Commit what an earlier stop spilled (each event under its own run), then remove
        the files; returns the count. Call before recovery reads the store.

        One transaction per file: a replay that fails or is killed commits nothing, and the
        next start replays the whole file again without writing anything twice.

        Raises:
            SpillError: a file holds an undecodable line, or its events cannot be committed to
                this database (a run it names is not here: the database was replaced); the
                file is kept, and the message says how to start without it.
            StoreUnavailable: the database cannot be reached (the file is kept).
        """
        total = 0
        for path in self.spill_paths:
            if not path.exists():
                continue
            spilled = read_spill(path)
            try:
                self._write_groups(runs_in_order(spilled))
            except StoreUnavailable:
                raise
            except StoreError as exc:
                raise SpillError(
                    f"{path}: {len(spilled)} spilled events cannot be committed to this "
                    f"database ({exc}); move the file aside to start without them",
                    operation="replay_spill") from exc
            path.unlink()
            log.warning("committed %d events an earlier stop had spilled to %s",
                        len(spilled), path)
            total += len(spilled)
        return total
