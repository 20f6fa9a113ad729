"""launch_kernel on a CPU machine: its argument rules and its specialisation key.

Its direct launches (the compiled kernel's launcher, no Triton binder) need CUDA: their outputs are
checked bit for bit against Triton's own launch on the GPU by scripts/gpu_launch.py (results in
docs/benchmarks.md). Every kernel test of this suite goes through launch_kernel's interpreter path.
"""

import pytest
import torch

from instant4d.kernels import _triton
from instant4d.kernels._triton import cdiv, launch_kernel

triton = pytest.importorskip("triton")
tl = triton.language


@triton.jit
def _scale_kernel(x_ptr, out_ptr, n, factor, BLOCK: tl.constexpr, SHIFT: tl.constexpr = 0.0):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + i, tl.load(x_ptr + i, mask=i < n) * factor + SHIFT, mask=i < n)


def test_launch_matches_the_formula(interpret_triton):
    x = torch.arange(37, dtype=torch.float32)
    out = torch.empty_like(x)
    launch_kernel(_scale_kernel, (cdiv(37, 16),), x, out, 37, 2.0, BLOCK=16)
    assert torch.equal(out, x * 2.0)
    launch_kernel(_scale_kernel, (cdiv(37, 16),), x, out, 37, 2.0, BLOCK=16, SHIFT=1.0)
    assert torch.equal(out, x * 2.0 + 1.0)


def test_launch_options_pass_beside_the_compile_time_arguments(interpret_triton):
    """num_warps, num_stages and maxnreg (a FusionLaunch's max_registers) are Triton's launch options, not
    kernel parameters: launch_kernel hands them to Triton and the kernel computes the same."""
    x = torch.arange(37, dtype=torch.float32)
    out = torch.empty_like(x)
    launch_kernel(_scale_kernel, (cdiv(37, 16),), x, out, 37, 2.0, BLOCK=16, num_warps=4, num_stages=1, maxnreg=128)
    assert torch.equal(out, x * 2.0)


def test_compile_time_arguments_by_position_are_refused(interpret_triton):
    x = torch.zeros(4)
    with pytest.raises(TypeError, match="by position"):
        launch_kernel(_scale_kernel, (1,), x, x, 4, 1.0, 16)


def test_runtime_arguments_by_keyword_are_refused(interpret_triton):
    x = torch.zeros(4)
    with pytest.raises(TypeError, match="by position"):
        launch_kernel(_scale_kernel, (1,), x, x, 4, factor=1.0, BLOCK=16)


def test_missing_compile_time_argument_is_refused(interpret_triton):
    x = torch.zeros(4)
    with pytest.raises(TypeError, match="missing"):
        launch_kernel(_scale_kernel, (1,), x, x, 4, 1.0)


def test_specialisation_separates_what_triton_compiles_apart():
    """Two calls share a compiled kernel only if Triton would: same dtypes, same 16-byte alignment,
    ints in the same range class, equally 1 or not, equally divisible by 16 or not."""
    spec = _triton._specialisation
    base = torch.zeros(64)
    assert spec(base) == spec(torch.zeros(8))
    assert spec(base) != spec(base.to(torch.bfloat16))
    assert spec(base) != spec(base[1:])  # 4 bytes off: not 16-byte aligned
    assert spec(base[4:]) == spec(base)  # 16 bytes off: aligned
    assert spec(1) != spec(2) and spec(2) == spec(3)
    assert spec(16) != spec(17) and spec(32) == spec(48)
    assert spec(2**31) != spec(2**31 - 1) and spec(2**63) != spec(2**62)
    assert spec(0.5) == spec(3.0) and spec(True) != spec(1)
    with pytest.raises(TypeError, match="runtime arguments"):
        spec("a string")


def test_cdiv():
    assert [cdiv(a, 16) for a in (0, 1, 16, 17, 32)] == [0, 1, 1, 2, 2]


def test_ensure_allocator_sets_one_only_where_none_is():
    """Triton keeps its scratch allocator in a ContextVar whose default raises at launch: ensure_allocator
    gives a context without one torch's, and leaves a caller's own allocator in place."""
    import contextvars

    from triton.runtime import _allocation

    def fresh_context():
        assert isinstance(_allocation._allocator.get(), _allocation.NullAllocator)
        _triton.ensure_allocator()
        return _allocation._allocator.get()

    assert contextvars.Context().run(fresh_context) is _triton._torch_scratch

    def callers_allocator(size, alignment, stream):
        return torch.empty(size, dtype=torch.int8)

    def with_callers():
        triton.set_allocator(callers_allocator)
        _triton.ensure_allocator()
        return _allocation._allocator.get()

    assert contextvars.Context().run(with_callers) is callers_allocator
