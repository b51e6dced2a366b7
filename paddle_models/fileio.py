"""Atomic file writes: the one helper for "write a temporary file beside the target, then rename it".

A reader (or a crash) sees either the old file or the whole new one, never a partial file:

    with atomic_write(path) as f:            # text, UTF-8; mode="wb" for bytes
        f.write(...)
    write_text_atomic(path, text)
    write_bytes_atomic(path, data)
    write_json_atomic(path, obj, indent=1)

The temporary file is ``<path>.<pid>.<thread>.tmp`` in the target's folder (so the rename stays on one
file system and two writers never share a temporary name); it is created with the process umask like any
other file, removed when the block raises, and renamed over ``path`` with ``os.replace`` when it ends.
``fsync=True`` also flushes the data to disk before the rename (checkpoints, manifests).

A folder written whole (a checkpoint, an export) is the same idea one level up: build it in
:func:`new_temp_folder` (``<path>.tmp``), then :func:`replace_folder` renames it into place. An existing
``path`` is first renamed to ``<path>.prev`` and removed only after the new folder took its name, so a crash
leaves the old folder (under ``path`` or ``<path>.prev``) or the new one, never a half-written one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from typing import IO, Any


def temp_path(path: str) -> str:
    """The temporary name :func:`atomic_write` uses for ``path`` in this process and thread."""
    return f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None,
                 fsync: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file for writing (``mode`` "w" or "wb"); rename it over ``path`` when the block
    ends, remove it when the block raises."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    tmp = temp_path(path)
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    f = open(tmp, mode.replace("w", "x"), **kwargs)
    try:
        with f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes, fsync: bool = False) -> None:
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)


def write_text_atomic(path: str, text: str, fsync: bool = False) -> None:
    with atomic_write(path, fsync=fsync) as f:
        f.write(text)


def write_json_atomic(path: str, obj: Any, fsync: bool = False, **dump_kwargs) -> None:
    """``json.dump(obj, f, **dump_kwargs)`` into ``path`` atomically (``ensure_ascii=False`` by default)."""
    dump_kwargs.setdefault("ensure_ascii", False)
    with atomic_write(path, fsync=fsync) as f:
        json.dump(obj, f, **dump_kwargs)


# ---- whole folders --------------------------------------------------------------------------------------
def new_temp_folder(path: str) -> str:
    """An empty ``<path>.tmp`` folder beside ``path`` to build the new folder in (a leftover of an interrupted
    write is removed first); returns its path."""
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    return tmp


def fsync_dir(path: str) -> None:
    """Flush a folder's entries (names, renames) to disk; a file system that cannot is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def replace_folder(tmp: str, path: str) -> None:
    """Rename the complete folder ``tmp`` to ``path``. An existing ``path`` becomes ``<path>.prev`` until the
    rename is done, then is removed (so does a ``<path>.prev`` left by an earlier interrupted swap)."""
    prev = path + ".prev"
    fsync_dir(tmp)
    if os.path.exists(path):
        if os.path.exists(prev):
            shutil.rmtree(prev)
        os.replace(path, prev)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    if os.path.exists(prev):
        shutil.rmtree(prev)
