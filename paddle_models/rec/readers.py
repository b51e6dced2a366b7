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
import itertools
import math
import os
from collections.abc import Iterator

import numpy as np

from .features import FeatureError, Table

DEFAULT_CHUNK = 1 << 16


def _open(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: data file not found")
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # a UTF-8 byte-order mark is accepted


def _line_chunks(fh, chunk_rows: int, start_line: int = 1):
    """(first line number, [lines]) blocks of the open file, blank lines dropped later by the parsers."""
    line_no = start_line
    while True:
        block = list(itertools.islice(fh, chunk_rows))
        if not block:
            return
        yield line_no, block
        line_no += len(block)


def _label01(value: str, path: str, line: int, field: str = "label") -> float:
    try:
        v = float(value)
    except ValueError:
        raise FeatureError(f"{path}: line {line}: field '{field}': label {value!r} is not a number") from None
    if v not in (0.0, 1.0, -1.0):
        raise FeatureError(f"{path}: line {line}: field '{field}': label {value!r} is outside the label set "
                           f"{{0, 1}} (libfm: {{-1, 1}})")
    return 1.0 if v > 0 else 0.0


# ---------------------------------------------------------------------------------------------- libfm
def iter_libfm(path: str, field_names: list[str] | None = None, chunk_rows: int = DEFAULT_CHUNK
               ) -> Iterator[Table]:
    names = list(field_names) if field_names else None
    seen_field: dict[int, tuple] = {}  # index -> (field position, first line): the field of every index
    with _open(path) as fh:
        for first, block in _line_chunks(fh, chunk_rows):
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
            matrix = np.asarray(rows, dtype=np.int64)
            _check_libfm_fields(matrix, names, lines, seen_field, path)
            yield Table({n: matrix[:, j].copy() for j, n in enumerate(names)}, np.asarray(labels, np.float32), path,
                        np.asarray(lines, np.int64))


def _libfm_line(tokens: list[str], names: list[str], path: str, line: int) -> tuple[float, list[int]]:
    """The label and the index of each ``index:1`` token (one per field) of one libfm line."""
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
            raise FeatureError(f"{where}: bad token {token!r}, expected <index>:<value>") from None
        if not sep or index_value < 0:
            raise FeatureError(f"{where}: bad token {token!r}, expected <index>:<value> with index >= 0")
        if float_value != 1.0:
            raise FeatureError(f"{where}: value {value!r} in {token!r}: only one-hot libfm (value 1) is supported")
        indices.append(index_value)
    return label, indices


def _check_libfm_fields(matrix: np.ndarray, names: list[str], lines: list[int], seen_field: dict[int, tuple],
                        path: str) -> None:
    """The field of an index is its position: an index in two positions (in this chunk, or against
    ``seen_field`` from earlier chunks, updated here) is inconsistent data."""
    pairs = np.unique(matrix * len(names) + np.arange(len(names))[None, :])
    for pair in pairs.tolist():
        index, pos = divmod(pair, len(names))
        previous = seen_field.get(index)
        if previous is None:
            row = int(np.flatnonzero(matrix[:, pos] == index)[0])
            seen_field[index] = (pos, lines[row])
        elif previous[0] != pos:
            row = int(np.flatnonzero(matrix[:, pos] == index)[0])
            raise FeatureError(
                f"{path}: line {lines[row]}: field '{names[pos]}': index {index} was in field "
                f"'{names[previous[0]]}' on line {previous[1]}; every index must belong to one field")


# ---------------------------------------------------------------------------------------------- criteo csv/tsv
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def iter_csv(path: str, delimiter: str = "auto", label_col: str = "label", has_header: str = "auto",
             chunk_rows: int = DEFAULT_CHUNK) -> Iterator[Table]:
    """CSV/TSV rows; columns are text (numeric parsing happens in the feature map), the label 0/1."""
    with _open(path) as fh:
        first_line = fh.readline()
        if not first_line.strip():
            raise FeatureError(f"{path}: line 1: empty file or empty first line")
        delim = delimiter if delimiter not in ("auto", "") else ("\t" if "\t" in first_line else ",")
        first = next(csv.reader([first_line], delimiter=delim))
        header = has_header == "yes" or (has_header == "auto" and not _looks_numeric(first[0] or "0"))
        if header:
            names = [c.strip() for c in first]
            pending, start = [], 2
        else:
            names = CRITEO_COLUMNS if len(first) == len(CRITEO_COLUMNS) else \
                ["label"] + [f"c{i}" for i in range(1, len(first))]
            pending, start = [first_line], 1
        if label_col not in names:
            raise FeatureError(f"{path}: line 1: label column '{label_col}' not in the header ({', '.join(names)})")
        li = names.index(label_col)
        others = [(j, n) for j, n in enumerate(names) if j != li]
        lines_iter = itertools.chain(pending, fh)
        for first_no, block in _line_chunks(lines_iter, chunk_rows, start):
            cells, labels, lines = [], [], []
            for k, row in enumerate(csv.reader(block, delimiter=delim)):
                ln = first_no + k
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(names):
                    raise FeatureError(f"{path}: line {ln}: expected {len(names)} fields ({delim!r}-separated), "
                                       f"got {len(row)}")
                labels.append(_label01(row[li].strip(), path, ln, label_col))
                cells.append(row)
                lines.append(ln)
            if not cells:
                continue
            arr = np.asarray(cells, dtype=str)
            yield Table({n: arr[:, j] for j, n in others}, np.asarray(labels, np.float32), path,
                        np.asarray(lines, np.int64))


# ---------------------------------------------------------------------------------------------- paddlerec slots
def iter_slot(path: str, label_col: str = "click", dense_slot: str = "dense_feature",
              chunk_rows: int = DEFAULT_CHUNK) -> Iterator[Table]:
    layout = None  # (n_dense, [slot names]) fixed by the first line
    with _open(path) as fh:
        for first, block in _line_chunks(fh, chunk_rows):
            cols: dict[str, list] = {}
            labels, lines = [], []
            for k, raw in enumerate(block):
                toks = raw.split()
                if not toks:
                    continue
                ln = first + k
                label, dense, slots = None, [], {}
                for pos, tok in enumerate(toks):
                    name, sep, value = tok.partition(":")
                    if not sep or not name or value == "":
                        raise FeatureError(f"{path}: line {ln}: token {pos + 1} {tok!r}: expected <slot>:<value>")
                    if name == label_col:
                        label = _label01(value, path, ln, label_col)
                    elif name == dense_slot:
                        dense.append(value)
                    else:
                        slots.setdefault(name, []).append(value)
                if label is None:
                    raise FeatureError(f"{path}: line {ln}: field '{label_col}': missing label slot")
                if layout is None:
                    layout = (len(dense), list(slots))
                if len(dense) != layout[0]:
                    raise FeatureError(f"{path}: line {ln}: field '{dense_slot}': expected {layout[0]} values, "
                                       f"got {len(dense)}")
                for j, v in enumerate(dense):
                    cols.setdefault(f"{dense_slot}_{j}", []).append(v)
                for s in layout[1]:
                    cols.setdefault(f"slot_{s}", []).append(" ".join(slots.get(s, [])))
                extra = set(slots) - set(layout[1])
                if extra:
                    raise FeatureError(f"{path}: line {ln}: slot(s) {sorted(extra)} not on the first line "
                                       f"(slots: {', '.join(layout[1])})")
                labels.append(label)
                lines.append(ln)
            if labels:
                yield Table({k: np.asarray(v, dtype=str) for k, v in cols.items()}, np.asarray(labels, np.float32),
                            path, np.asarray(lines, np.int64))


# ---------------------------------------------------------------------------------------------- recbole
def read_atomic(path: str) -> Table:
    """One RecBole atomic file; float columns are parsed (errors name line and field), others stay text."""
    with _open(path) as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
        names, types = [], []
        for j, h in enumerate(header):
            name, sep, typ = h.partition(":")
            if not sep or typ not in ("token", "token_seq", "float", "float_seq"):
                raise FeatureError(f"{path}: line 1: column {j + 1} {h!r}: expected <name>:<token|token_seq|float|"
                                   f"float_seq>")
            names.append(name)
            types.append(typ)
        rows, lines = [], []
        for ln, raw in enumerate(fh, start=2):
            raw = raw.rstrip("\r\n")
            if not raw.strip():
                continue
            parts = raw.split("\t")
            if len(parts) != len(names):
                raise FeatureError(f"{path}: line {ln}: expected {len(names)} tab-separated fields, got {len(parts)}")
            rows.append(parts)
            lines.append(ln)
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
            raise FeatureError(f"{path}: line {lines[i]}: field '{name}': {text!r} is not a finite number")
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
