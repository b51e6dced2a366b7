"""Parity numerics: how far an exported graph's outputs are from the dygraph model's."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ParityError(RuntimeError):
    """Two sets of outputs cannot be compared (count or shapes differ)."""


def flatten_outputs(out) -> list[np.ndarray]:
    """A model output (Tensor, tuple/list, dict) as a flat list of numpy arrays, in a fixed order."""
    if isinstance(out, dict):
        return [a for k in sorted(out) for a in flatten_outputs(out[k])]
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in flatten_outputs(o)]
    if hasattr(out, "numpy") and not isinstance(out, np.ndarray):
        return [out.numpy()]
    return [np.asarray(out)]


def max_rel_err(outputs: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> float:
    """max over outputs of ``max|out - ref| / max(max|ref|, 1e-30)`` (infinity-norm relative error).

    Shapes must agree; a NaN anywhere gives ``inf``. Relative to the output's scale rather than per
    element, so a logit that happens to be near zero does not dominate."""
    if len(outputs) != len(references):
        raise ParityError(f"parity: {len(outputs)} outputs vs {len(references)} reference outputs")
    worst = 0.0
    for i, (o, r) in enumerate(zip(outputs, references, strict=True)):
        o, r = np.asarray(o), np.asarray(r)
        if o.shape != r.shape:
            raise ParityError(f"parity: output {i} has shape {o.shape}, the reference {r.shape}")
        if o.size == 0:
            continue
        o64, r64 = o.astype(np.float64), r.astype(np.float64)
        if not (np.all(np.isfinite(o64)) and np.all(np.isfinite(r64))):
            if np.array_equal(o64, r64, equal_nan=True):
                continue
            return float("inf")
        scale = max(float(np.max(np.abs(r64))), 1e-30)
        worst = max(worst, float(np.max(np.abs(o64 - r64))) / scale)
    return worst


def first_sample(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch reduced to its first sample (only the batch axis is cut)."""
    return {k: np.ascontiguousarray(v[:1]) for k, v in inputs.items()}
