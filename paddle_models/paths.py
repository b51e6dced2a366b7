"""Path containment, the one helper for "this path stays inside that folder".

    full = contained_path(root, rel)   # PathOutsideRoot when rel leaves root

Data readers (image paths in records, ``multimodal/readers.safe_join``) and export folders (every path
``export.yaml`` names, ``engine/artifact.export_path``) use it and word its error for their reader.
"""
from __future__ import annotations

import os


class PathOutsideRoot(ValueError):
    """``rel`` does not stay inside ``root``: ``reason`` says why ("not a path", "a NUL byte", "leaves the
    folder", "a symbolic link"); ``resolved`` is where a symbolic link led (else None)."""

    def __init__(self, rel, root: str, reason: str, resolved: str | None = None):
        self.rel, self.root, self.reason, self.resolved = rel, root, reason, resolved
        where = f" (it resolves to {resolved})" if resolved else ""
        super().__init__(f"path {rel!r}: {reason}{where}; it must stay inside {root}")


def contained_path(root: str, rel) -> str:
    """``root/rel`` as an absolute path, checked to stay inside ``root``.

    ``rel`` must be a non-empty string without NUL bytes that can name a file (``os.fsencode`` takes it). An
    absolute ``rel`` (or one starting with ``~``) is taken as it is and must lie inside ``root``. The check is
    made on the joined path (``..`` that leave ``root``) and on real paths (``os.path.realpath`` of both: a
    symbolic link inside ``root`` that points outside it is refused; ``root`` itself may be a symbolic link).
    The returned path is the joined one."""
    if not isinstance(rel, str) or not rel.strip():
        raise PathOutsideRoot(rel, root, "not a path (expected a non-empty string)")
    if "\x00" in rel:
        raise PathOutsideRoot(rel, root, "a NUL byte in the path")
    try:
        os.fsencode(rel)
    except UnicodeEncodeError:
        raise PathOutsideRoot(rel, root, "not a path (a character no file name can hold: a lone surrogate)") from None
    root_abs = os.path.abspath(root)
    if os.path.isabs(rel) or rel.startswith("~"):
        full = os.path.abspath(os.path.expanduser(rel))
    else:
        full = os.path.abspath(os.path.join(root_abs, rel))
    if os.path.commonpath([root_abs, full]) != root_abs:
        raise PathOutsideRoot(rel, root_abs, "leaves the folder")
    root_real, full_real = os.path.realpath(root_abs), os.path.realpath(full)
    if os.path.commonpath([root_real, full_real]) != root_real:
        raise PathOutsideRoot(rel, root_abs, "leaves the folder through a symbolic link", full_real)
    return full
