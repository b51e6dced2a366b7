"""CSV output that is safe to open in a spreadsheet: every CSV file the project writes goes through
:class:`SafeCsvWriter`, which neutralises cells a spreadsheet would run as a formula (JSON lines files keep
the raw values)."""
from __future__ import annotations

import csv

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """``value`` with a leading ``'`` when it is a string starting with ``= + - @``, a tab or a carriage
    return (a spreadsheet would read it as a formula); numbers and other strings are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class SafeCsvWriter:
    """A ``csv.writer`` whose rows pass through :func:`csv_cell`."""

    def __init__(self, fh, **kwargs):
        self._w = csv.writer(fh, **kwargs)

    def writerow(self, row):
        return self._w.writerow([csv_cell(v) for v in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)
