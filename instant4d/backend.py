"""Which implementation runs an op: the Triton kernels or their PyTorch twins.

``backend="auto"`` (the default) picks Triton for CUDA tensors and the PyTorch twin otherwise.
``"triton"`` forces the kernels (CUDA tensors, or any tensors under ``TRITON_INTERPRET=1``);
``"torch"`` forces the twins. The environment variable ``INSTANT4D_BACKEND`` sets the default
for every call that does not pass one. A forced backend that cannot run raises an error that
says why, instead of silently falling back.
"""

from __future__ import annotations

import functools
import os
from typing import Literal

import torch

Backend = Literal["auto", "triton", "torch"]
BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "INSTANT4D_BACKEND"


@functools.lru_cache(maxsize=None)
def triton_import_error() -> str | None:
    """None when Triton imports, else the reason it does not."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return f"Triton is not usable ({type(exc).__name__}: {exc})"
    return None


def interpreting() -> bool:
    """True when Triton kernels run on the CPU under the Triton interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reasons(*tensors: torch.Tensor | None) -> list[str]:
    """Every reason the Triton kernels cannot run on these tensors (empty when they can)."""
    reasons = []
    error = triton_import_error()
    if error is not None:
        reasons.append(error)
    devices = {t.device.type for t in tensors if t is not None}
    if devices - {"cuda"} and not interpreting():
        reasons.append(
            f"tensors are on {sorted(devices)}; Triton kernels need CUDA tensors "
            "(or TRITON_INTERPRET=1 to interpret them on the CPU)"
        )
    return reasons


def resolve_backend(backend: str | None, *tensors: torch.Tensor | None) -> str:
    """Return ``"triton"`` or ``"torch"`` for an op on ``tensors``.

    ``backend=None`` reads ``INSTANT4D_BACKEND`` (default ``"auto"``).
    """
    requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    if requested not in BACKENDS:
        source = "backend" if backend is not None else ENV_VAR
        raise ValueError(f"{source} must be one of {BACKENDS}, got {requested!r}")
    if requested == "torch":
        return "torch"
    if requested == "auto":
        on_cuda = all(t.is_cuda for t in tensors if t is not None)
        if not on_cuda or triton_import_error() is not None:
            return "torch"
        return "triton"
    reasons = triton_unavailable_reasons(*tensors)
    if reasons:
        raise RuntimeError("backend='triton' cannot run: " + "; ".join(reasons))
    return "triton"
