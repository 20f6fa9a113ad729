"""Triton, when it imports: kernel modules define their kernels only if ``triton`` is not None,
so that ``import instant4d`` works on machines without a working Triton."""

from __future__ import annotations

from ..backend import triton_import_error

if triton_import_error() is None:
    import triton
    import triton.language as tl
else:  # pragma: no cover - exercised on machines without Triton
    triton = None
    tl = None


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
