"""The JSON of the server's requests and answers: parsing with a nesting limit, finding strings that are
not Unicode text, and encoding an answer so that it is always JSON.

    doc = parse_json(body)                   # JSONProblem (-> 400) for invalid JSON or too deep nesting
    where = invalid_string(record)           # ("text", "a lone surrogate U+D800 at character 3") or None
    content, status = encode_json(body, 200) # bytes; an answer that cannot be JSON becomes a JSON 500

A JSON string may spell a lone UTF-16 surrogate (``"\\ud800"``): Python then holds a ``str`` that no UTF-8
encoder accepts, so a tokenizer (or the answer echoing an id) fails on it later. The server refuses such
records when it reads them.
"""
from __future__ import annotations

import json

MAX_DEPTH = 32  # nesting of arrays and objects in a request body; a record needs three


class JSONProblem(ValueError):
    """The request body is not JSON the server reads (the message says why)."""


def parse_json(body: bytes, max_depth: int = MAX_DEPTH):
    """The JSON document of ``body``; :class:`JSONProblem` when it is not JSON, or nests arrays and objects
    deeper than ``max_depth``."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise JSONProblem(f"request body nests arrays / objects deeper than the limit of {max_depth}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise JSONProblem(f"request body is not JSON ({e})") from None
    if nesting_depth(doc, max_depth) > max_depth:
        raise JSONProblem(f"request body nests arrays / objects deeper than the limit of {max_depth}")
    return doc


def nesting_depth(doc, stop_at: int) -> int:
    """How deep ``doc`` nests lists and dicts (a scalar: 0, ``[]``: 1), counted without recursion; the count
    stops once it passes ``stop_at``."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, (list, dict)):
            continue
        deepest = max(deepest, depth)
        if deepest > stop_at:
            return deepest
        stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def text_problem(text: str) -> str | None:
    """What makes ``text`` not valid Unicode text (a lone surrogate, and where), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"not valid Unicode text: a lone surrogate U+{ord(text[e.start]):04X} at character {e.start}"
    return None


def invalid_string(value, path: str = "") -> tuple[str, str] | None:
    """The first string (or object key) in ``value`` that is not valid Unicode text, as (its path, what is
    wrong): ``("evidence_texts[1]", "not valid Unicode text: a lone surrogate U+D800 at character 0")``;
    None when every string is valid. The path is the field's name for a top-level field of a record."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return where or "record", problem
        elif isinstance(item, dict):
            for key, sub in item.items():
                key_problem = text_problem(key) if isinstance(key, str) else None
                if key_problem:
                    return (f"{where}.<key>" if where else "<key>"), key_problem
                stack.append((sub, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
    return None


def encode_json(body, status: int) -> tuple[bytes, int]:
    """(UTF-8 JSON bytes of ``body``, the status to send). A string that is not valid Unicode is sent escaped
    (``\\ud800``, still JSON); a body that is not JSON at all (NaN, infinity, an object JSON has no form for)
    becomes a 500 whose JSON body says so."""
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8"), status
    except UnicodeEncodeError:
        pass
    except (ValueError, TypeError) as e:
        return _error_bytes(f"the answer could not be encoded as JSON ({e})"), 500
    try:
        return json.dumps(body, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii"), status
    except (ValueError, TypeError) as e:
        return _error_bytes(f"the answer could not be encoded as JSON ({e})"), 500


def _error_bytes(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=True).encode("ascii")
