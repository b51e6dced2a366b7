"""Lines of UTF-8 text files, plain or gzipped, read in blocks; every error names the file and the line.

    for first, lines in line_blocks("train.csv.gz", 65536, error=FeatureError):
        ...  # lines[k] is line first + k, its line end kept

A file is gzipped when it starts with the gzip magic bytes (whatever its name). A UTF-8 byte-order mark at
the start is dropped. Lines end at ``\\n`` (a ``\\r`` before it stays, for readers that strip it). A byte
sequence that is not UTF-8, and a gzip stream that is damaged or cut short, are ``error`` exceptions naming
the file and the line (a ``ValueError`` unless the caller gives its own subclass), never a bare codec,
``EOFError`` or ``zlib`` error.
"""
from __future__ import annotations

import gzip
import itertools
import os
import zlib
from collections.abc import Iterator

GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"
_STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _open_binary(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} not found")
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def _decode(block: list[bytes], path: str, first: int, error: type[Exception]) -> list[str]:
    """The lines of ``block`` (line ``first`` first) as text; a line that is not UTF-8 is an ``error``."""
    try:
        return [raw.decode("utf-8") for raw in block]
    except UnicodeDecodeError:
        pass
    for k, raw in enumerate(block):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{path}: line {first + k}: not valid UTF-8 (byte {e.start + 1} of the line, "
                        f"{raw[e.start:e.start + 1]!r}: {e.reason})") from None
    raise AssertionError("unreachable: a block that failed to decode has a line that fails")


def _damaged_line(path: str) -> int:
    """The number of the line a damaged gzip stream breaks in (read again up to the damage)."""
    count = 0
    with gzip.open(path, "rb") as fh:
        try:
            for _ in fh:
                count += 1
        except _STREAM_ERRORS:
            pass
    return count + 1


def _binary_blocks(fh, path: str, chunk_rows: int, error: type[Exception]) -> Iterator[list[bytes]]:
    """Blocks of at most ``chunk_rows`` raw lines; a damaged gzip stream is an ``error`` naming the line."""
    while True:
        try:
            block = list(itertools.islice(fh, chunk_rows))
        except _STREAM_ERRORS as e:
            raise error(f"{path}: line {_damaged_line(path)}: the gzip data is damaged or cut short "
                        f"({type(e).__name__}: {e})") from None
        if not block:
            return
        yield block


def line_blocks(path: str, chunk_rows: int = 1 << 16, error: type[Exception] = ValueError,
                what: str = "file") -> Iterator[tuple[int, list[str]]]:
    """``(number of the block's first line, [lines])`` over the file ``path``, ``chunk_rows`` lines at a time
    (line ends kept). A missing file is a ``FileNotFoundError`` "``path``: ``what`` not found"."""
    with _open_binary(path, what) as fh:
        first = 1
        for block in _binary_blocks(fh, path, chunk_rows, error):
            lines = _decode(block, path, first, error)
            if first == 1 and lines[0].startswith(_BOM):
                lines[0] = lines[0][1:]
                if not lines[0]:  # the file is a byte-order mark and nothing else: it has no line
                    return
            yield first, lines
            first += len(lines)


def read_lines(path: str, error: type[Exception] = ValueError, what: str = "file") -> list[str]:
    """Every line of ``path`` without its line end (``\\n``, ``\\r\\n``)."""
    out: list[str] = []
    for _, lines in line_blocks(path, error=error, what=what):
        out.extend(line.rstrip("\r\n") for line in lines)
    return out
