"""Readers of the recommender data layouts into :class:`~paddle_models.rec.features.Table` chunks.

Every reader is a generator of chunks of at most ``chunk_rows`` rows (so a file of any size is read in
constant memory) and a ``read_*`` helper that concatenates them. Errors name the file, the line and the
field. Layouts:

``libfm``    ``<label> <index>:<value> ...`` (Frappe). Every line has one ``index:1`` token per field, in
             field order; the field of an index is its position (checked: an index seen in two positions
             is an error). Columns: one int64 column per field (``field_names``, default ``f0, f1, ...``).
             Labels ``1`` / ``-1`` (or ``0``).
``criteo``   Criteo's raw data as CSV or TSV: a header line (``label,I1..I13,C1..C26``) or none (the
             Kaggle ``train.txt``: tab-separated label, 13 integer and 26 hashed categorical columns).
             Columns stay text; numeric parsing (with its errors) happens in the feature map.
``slot``     PaddleRec's slot format: space-separated ``slot:value`` tokens, ``click:<0|1>`` the label,
             ``dense_feature:<float>`` repeated (columns ``dense_feature_0 ..``), then ``<slot>:<id>``
             (column ``slot_<slot>``; a slot repeated on a line becomes a space-separated sequence).
``recbole``  RecBole atomic files ``<prefix>.inter`` / ``.user`` / ``.item``: tab-separated, the header
             declares ``name:type`` (``token``, ``token_seq``, ``float``, ``float_seq``).
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator

import numpy as np

from ..textfile import line_blocks
from .features import FeatureError, Table

DEFAULT_CHUNK = 1 << 16
#: libfm indices are int64: 0 .. 2^63-1
INDEX_MAX = 2 ** 63 - 1


def _blocks(path: str, chunk_rows: int) -> Iterator[tuple[int, list[str]]]:
    """(first line number, [lines]) blocks of a UTF-8 data file, plain or gzipped; bytes that are not UTF-8 and
    damaged gzip data are FeatureErrors naming the file and the line."""
    return line_blocks(path, chunk_rows, error=FeatureError, what="data file")


def _show(text: str, limit: int = 40) -> str:
    """``repr`` of a value from a data file, shortened to about ``limit`` characters for an error message."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _label01(value: str, path: str, line: int, field: str = "label") -> float:
    try:
        v = float(value)
    except ValueError:
        raise FeatureError(f"{path}: line {line}: field '{field}': label {_show(value)} is not a number") from None
    if v not in (0.0, 1.0, -1.0):
        raise FeatureError(f"{path}: line {line}: field '{field}': label {_show(value)} is outside the label set "
                           f"{{0, 1}} (libfm: {{-1, 1}})")
    return 1.0 if v > 0 else 0.0


# ---------------------------------------------------------------------------------------------- libfm
def iter_libfm(path: str, field_names: list[str] | None = None, chunk_rows: int = DEFAULT_CHUNK
               ) -> Iterator[Table]:
    names = list(field_names) if field_names else None
    seen_field: dict[int, tuple] = {}  # index -> (field position, first line): the field of every index
    for first, block in _blocks(path, chunk_rows):
        rows, labels, lines = [], [], []
        for k, raw in enumerate(block):
            tokens = raw.split()
            if not tokens:
                continue
            names = names or [f"f{i}" for i in range(len(tokens) - 1)]
            label, indices = _libfm_line(tokens, names, path, first + k)
            labels.append(label)
            rows.append(indices)
            lines.append(first + k)
        if not rows:
            continue
        matrix = np.asarray(rows, dtype=np.int64).reshape(len(rows), len(names))
        _check_libfm_fields(matrix, names, lines, seen_field, path)
        yield Table({n: matrix[:, j].copy() for j, n in enumerate(names)}, np.asarray(labels, np.float32), path,
                    np.asarray(lines, np.int64))


def _libfm_line(tokens: list[str], names: list[str], path: str, line: int) -> tuple[float, list[int]]:
    """The label and the index of each ``index:1`` token (one per field) of one libfm line."""
    if not names:
        raise FeatureError(f"{path}: line {line}: a label without index:value tokens (a libfm line is <label> "
                           f"<index>:1 ..., one token per field)")
    if len(tokens) - 1 != len(names):
        raise FeatureError(f"{path}: line {line}: expected {len(names)} index:value tokens (one per field: "
                           f"{', '.join(names)}), got {len(tokens) - 1}")
    label = _label01(tokens[0], path, line)
    indices = []
    for pos, token in enumerate(tokens[1:]):
        where = f"{path}: line {line}: field '{names[pos]}' (token {pos + 1})"
        index, sep, value = token.partition(":")
        try:
            index_value, float_value = int(index), float(value)
        except ValueError:
            raise FeatureError(f"{where}: bad token {_show(token)}, expected <index>:<value>") from None
        if not sep or index_value < 0:
            raise FeatureError(f"{where}: bad token {_show(token)}, expected <index>:<value> with index >= 0")
        if index_value > INDEX_MAX:
            raise FeatureError(f"{where}: index {_show(index)} is out of range (0 .. 2^63-1)")
        if float_value != 1.0:
            raise FeatureError(f"{where}: value {_show(value)} in {_show(token)}: only one-hot libfm (value 1) is "
                               f"supported")
        indices.append(index_value)
    return label, indices


def _index_field_pairs(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (index, field position) pairs of ``matrix`` ``[rows, fields]``, ``[n, 2]``, and the flat
    position of each pair's first occurrence. Indices small enough are paired as ``index * fields + position``
    in one int64 (fast); larger ones, which that would overflow, by rows."""
    n_fields = matrix.shape[1]
    positions = np.arange(n_fields, dtype=np.int64)
    if int(matrix.max()) <= (INDEX_MAX - n_fields) // n_fields:
        keys, first_flat = np.unique((matrix * n_fields + positions[None, :]).ravel(), return_index=True)
        return np.stack([keys // n_fields, keys % n_fields], axis=1), first_flat
    stacked = np.stack([matrix.ravel(), np.broadcast_to(positions, matrix.shape).ravel()], axis=1)
    return np.unique(stacked, axis=0, return_index=True)


def _check_libfm_fields(matrix: np.ndarray, names: list[str], lines: list[int], seen_field: dict[int, tuple],
                        path: str) -> None:
    """The field of an index is its position: an index in two positions (in this chunk, or against
    ``seen_field`` from earlier chunks, updated here) is inconsistent data, reported at the later line."""
    n_fields = len(names)
    pairs, first_flat = _index_field_pairs(matrix)
    first_rows = first_flat // n_fields
    for k in np.argsort(first_rows, kind="stable").tolist():  # (index, position) pairs in the order of their lines
        index, pos = int(pairs[k, 0]), int(pairs[k, 1])
        line = lines[int(first_rows[k])]
        previous = seen_field.get(index)
        if previous is None:
            seen_field[index] = (pos, line)
        elif previous[0] != pos:
            raise FeatureError(
                f"{path}: line {line}: field '{names[pos]}': index {index} was in field "
                f"'{names[previous[0]]}' on line {previous[1]}; every index must belong to one field")


# ---------------------------------------------------------------------------------------------- criteo csv/tsv
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _csv_error(error: csv.Error, path: str, line: int, delim: str) -> FeatureError:
    """A line the csv module cannot read (a cell over its field limit, a carriage return inside a cell)."""
    return FeatureError(f"{path}: line {line}: not readable as {delim!r}-separated cells ({error})")


def _csv_layout(first_line: str, path: str, delimiter: str, label_col: str, has_header: str):
    """(delimiter, column names, label column position, whether line 1 is a header) from the first line."""
    if not first_line.strip():
        raise FeatureError(f"{path}: line 1: empty file or empty first line")
    delim = delimiter if delimiter not in ("auto", "") else ("\t" if "\t" in first_line else ",")
    try:
        first = next(csv.reader([first_line], delimiter=delim))  # a line that is not blank has one row
    except csv.Error as e:
        raise _csv_error(e, path, 1, delim) from None
    header = has_header == "yes" or (has_header == "auto" and not _looks_numeric(first[0] or "0"))
    if header:
        names = [c.strip() for c in first]
    else:
        names = CRITEO_COLUMNS if len(first) == len(CRITEO_COLUMNS) else \
            ["label"] + [f"c{i}" for i in range(1, len(first))]
    if label_col not in names:
        raise FeatureError(f"{path}: line 1: label column '{label_col}' not in the header "
                           f"({_show(', '.join(names), 200)})")
    return delim, names, names.index(label_col), header


def _csv_table(block: list[str], first_no: int, layout: tuple, path: str, label_col: str) -> Table | None:
    """The lines of one block (line ``first_no`` first) as a Table of text columns, or None when all are blank."""
    delim, names, label_at, _ = layout
    cells, labels, lines = [], [], []
    reader = csv.reader(block, delimiter=delim)
    consumed = 0  # lines the reader has read: a row starts on the line after them
    try:
        for row in reader:
            line, consumed = first_no + consumed, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(names):
                raise FeatureError(f"{path}: line {line}: expected {len(names)} fields ({delim!r}-separated), "
                                   f"got {len(row)}")
            labels.append(_label01(row[label_at].strip(), path, line, label_col))
            cells.append(row)
            lines.append(line)
    except csv.Error as e:
        raise _csv_error(e, path, first_no + reader.line_num - 1, delim) from None
    if not cells:
        return None
    arr = np.asarray(cells, dtype=str)
    return Table({n: arr[:, j] for j, n in enumerate(names) if j != label_at}, np.asarray(labels, np.float32), path,
                 np.asarray(lines, np.int64))


def iter_csv(path: str, delimiter: str = "auto", label_col: str = "label", has_header: str = "auto",
             chunk_rows: int = DEFAULT_CHUNK) -> Iterator[Table]:
    """CSV/TSV rows; columns are text (numeric parsing happens in the feature map), the label 0/1."""
    layout = None
    for first_no, block in _blocks(path, chunk_rows):
        if layout is None:
            layout = _csv_layout(block[0], path, delimiter, label_col, has_header)
            if layout[3]:  # the header is not a row
                block, first_no = block[1:], 2
        table = _csv_table(block, first_no, layout, path, label_col)
        if table is not None:
            yield table
    if layout is None:
        raise FeatureError(f"{path}: line 1: empty file or empty first line")


# ---------------------------------------------------------------------------------------------- paddlerec slots
def _slot_line(tokens: list[str], path: str, line: int, label_col: str, dense_slot: str):
    """(label, [dense values], {slot: [ids]}) of one slot-format line."""
    label, dense, slots = None, [], {}
    for pos, token in enumerate(tokens):
        name, sep, value = token.partition(":")
        if not sep or not name or value == "":
            raise FeatureError(f"{path}: line {line}: token {pos + 1} {_show(token)}: expected <slot>:<value>")
        if name == label_col:
            label = _label01(value, path, line, label_col)
        elif name == dense_slot:
            dense.append(value)
        else:
            slots.setdefault(name, []).append(value)
    if label is None:
        raise FeatureError(f"{path}: line {line}: field '{label_col}': missing label slot")
    return label, dense, slots


def _check_slot_layout(layout, dense: list, slots: dict, path: str, line: int, dense_slot: str) -> None:
    """Every line has the first line's number of dense values and no slot the first line lacks."""
    if len(dense) != layout[0]:
        raise FeatureError(f"{path}: line {line}: field '{dense_slot}': expected {layout[0]} values, got {len(dense)}")
    extra = set(slots) - set(layout[1])
    if extra:
        raise FeatureError(f"{path}: line {line}: slot(s) {_show(str(sorted(extra)), 200)} not on the first line "
                           f"(slots: {', '.join(layout[1])})")


def iter_slot(path: str, label_col: str = "click", dense_slot: str = "dense_feature",
              chunk_rows: int = DEFAULT_CHUNK) -> Iterator[Table]:
    layout = None  # (n_dense, [slot names]) fixed by the first line
    for first, block in _blocks(path, chunk_rows):
        cols: dict[str, list] = {}
        labels, lines = [], []
        for k, raw in enumerate(block):
            tokens = raw.split()
            if not tokens:
                continue
            label, dense, slots = _slot_line(tokens, path, first + k, label_col, dense_slot)
            layout = layout or (len(dense), list(slots))
            _check_slot_layout(layout, dense, slots, path, first + k, dense_slot)
            for j, v in enumerate(dense):
                cols.setdefault(f"{dense_slot}_{j}", []).append(v)
            for slot in layout[1]:
                cols.setdefault(f"slot_{slot}", []).append(" ".join(slots.get(slot, [])))
            labels.append(label)
            lines.append(first + k)
        if labels:
            yield Table({k: np.asarray(v, dtype=str) for k, v in cols.items()}, np.asarray(labels, np.float32),
                        path, np.asarray(lines, np.int64))


# ---------------------------------------------------------------------------------------------- recbole
_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def _atomic_header(line: str, path: str) -> tuple[list[str], list[str]]:
    """(names, types) of an atomic file's header ``name:type<TAB>...``."""
    names, types = [], []
    for j, column in enumerate(line.rstrip("\r\n").split("\t")):
        name, sep, kind = column.partition(":")
        if not sep or kind not in _ATOMIC_TYPES:
            raise FeatureError(f"{path}: line 1: column {j + 1} {_show(column)}: expected "
                               f"<name>:<{'|'.join(_ATOMIC_TYPES)}>")
        names.append(name)
        types.append(kind)
    return names, types


def read_atomic(path: str) -> Table:
    """One RecBole atomic file; float columns are parsed (errors name line and field), others stay text."""
    names, types = None, None
    rows, lines = [], []
    for first, block in _blocks(path, DEFAULT_CHUNK):
        for k, raw in enumerate(block):
            if names is None:
                names, types = _atomic_header(raw, path)
                continue
            raw = raw.rstrip("\r\n")
            if not raw.strip():
                continue
            parts = raw.split("\t")
            if len(parts) != len(names):
                raise FeatureError(f"{path}: line {first + k}: expected {len(names)} tab-separated fields, got "
                                   f"{len(parts)}")
            rows.append(parts)
            lines.append(first + k)
    if names is None:
        raise FeatureError(f"{path}: line 1: empty file (an atomic file starts with its header)")
    cells = np.asarray(rows, dtype=str).reshape(len(rows), len(names))
    columns = {name: _float_column(cells[:, j], path, lines, name) if kind == "float" else cells[:, j]
               for j, (name, kind) in enumerate(zip(names, types, strict=True))}
    table = Table(columns, None, path, np.asarray(lines, np.int64))
    table.types = dict(zip(names, types, strict=True))
    return table


def _float_column(cells: np.ndarray, path: str, lines: list[int], name: str) -> np.ndarray:
    """A ``float`` column of an atomic file: blank cells are NaN, anything else must be a finite number."""
    column = np.full(len(cells), np.nan)
    for i, text in enumerate(cells):
        if text.strip() == "":
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise FeatureError(f"{path}: line {lines[i]}: field '{name}': {_show(text)} is not a finite number")
        column[i] = value
    return column


def read_recbole(prefix: str) -> dict[str, Table]:
    """``{"inter": Table, "user": Table or None, "item": Table or None}`` from ``<prefix>.inter`` etc.
    ``prefix`` may also be the dataset folder (``.../ml-100k`` -> ``.../ml-100k/ml-100k``)."""
    if os.path.isdir(prefix):
        prefix = os.path.join(prefix, os.path.basename(os.path.normpath(prefix)))
    out = {}
    for part in ("inter", "user", "item"):
        p = f"{prefix}.{part}"
        if part == "inter" and not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: RecBole interaction file not found (Data.path is the dataset folder or "
                                    f"the file prefix)")
        out[part] = read_atomic(p) if os.path.isfile(p) else None
    return out


# ---------------------------------------------------------------------------------------------- dispatch
def reader_settings(data_cfg: dict) -> dict:
    """``data_cfg`` (a ``Data`` section, or part of one: ``{}``) completed with the rec schema's defaults."""
    from ..config import family_defaults

    return {**family_defaults("rec")["Data"], **data_cfg}


def iter_table(fmt: str, path: str, data_cfg: dict, chunk_rows: int = DEFAULT_CHUNK) -> Iterator[Table]:
    """Chunks of ``path`` in the ``Data.format`` layout (libfm, criteo, slot), read with the ``Data``
    section's ``field_names`` / ``delimiter``, ``label_col``, ``has_header`` (see :func:`reader_settings`)."""
    settings = reader_settings(data_cfg)
    if fmt == "libfm":
        return iter_libfm(path, list(settings["field_names"]) or None, chunk_rows)
    if fmt == "criteo":
        return iter_csv(path, settings["delimiter"], settings["label_col"] or "label", settings["has_header"],
                        chunk_rows)
    if fmt == "slot":
        return iter_slot(path, settings["label_col"] or "click", chunk_rows=chunk_rows)
    raise FeatureError(f"Data.format: {fmt!r} cannot be read in chunks (libfm, criteo, slot)")


def concat_tables(chunks: list[Table], source: str = "") -> Table:
    """One table of ``chunks``; none is an error naming ``source`` (the file read)."""
    if not chunks:
        raise FeatureError(f"{source or 'input'}: no rows read (the file is empty or holds only blank lines)")
    if len(chunks) == 1:
        return chunks[0]
    cols = {}
    for k in chunks[0].columns:
        parts = [c.columns[k] for c in chunks]
        if parts[0].dtype.kind == "U":
            parts = [p.astype(f"U{max(p.dtype.itemsize // 4 for p in parts)}") for p in parts]
        cols[k] = np.concatenate(parts)
    label = None if chunks[0].label is None else np.concatenate([c.label for c in chunks])
    return Table(cols, label, chunks[0].file, np.concatenate([c.lines for c in chunks]))


def read_table(fmt: str, path: str, data_cfg: dict) -> Table:
    t = concat_tables(list(iter_table(fmt, path, data_cfg)), source=path)
    return t
