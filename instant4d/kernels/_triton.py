"""Triton, when it imports: kernel modules define their kernels only if ``triton`` is not None,
so that ``import instant4d`` works on machines without a working Triton. Also ``launch_kernel``,
through which every kernel of the package is launched."""

from __future__ import annotations

import inspect

import torch

from ..backend import interpreting, triton_import_error

if triton_import_error() is None:
    import triton
    import triton.language as tl
    from triton import knobs
    from triton.runtime import _allocation  # where Triton keeps its scratch allocator (3.6 and 3.9)
else:  # pragma: no cover - exercised on machines without Triton
    triton = None
    tl = None
    knobs = None
    _allocation = None


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def float32_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` as the kernels read it, float32 and contiguous, with no torch call when it already is:
    every torch call costs the host 3-15 us on the H100 machine (scripts/gpu_host.py), which decides
    the time of small frames."""
    return t if t.dtype == torch.float32 and t.is_contiguous() else t.float().contiguous()


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for grids on the host (triton.cdiv is a jitted function: ~5 us a call from Python)."""
    return -(-a // b)


# (id of the kernel, device, argument specialisation, compile-time arguments) -> (the compiled
# kernel's launcher, the compiled kernel, its compile-time arguments in parameter order); kernels
# are module-level objects that live as long as the process, so their ids are never reused
_COMPILED: dict = {}


def _specialisation(arg) -> object:
    """What Triton compiles a separate kernel for, per runtime argument (triton.runtime.jit's
    specialize_impl, in 3.6 and 3.9): a tensor's dtype and 16-byte alignment; an int's range (i32 /
    i64 / u64), whether it is 1 and whether it divides by 16; only the type of a float or bool."""
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    if isinstance(arg, bool) or arg is None:
        return arg
    if isinstance(arg, int):
        return -2**31 <= arg < 2**31, arg < 2**63, arg == 1, arg % 16 == 0
    if isinstance(arg, float):
        return float
    raise TypeError(f"launch_kernel() takes tensors, ints, floats, bools and None as runtime arguments, got {type(arg)}")


def launch_kernel(kernel, grid: tuple[int, ...], *args, **constexprs) -> None:
    """``kernel[grid](*args, **constexprs)``, with runtime arguments positional and compile-time
    ones (and num_warps / num_stages) by keyword, for less host time per call.

    Triton's own launch binds every argument, builds a cache key string and launch metadata and
    calls the (empty) launch hooks: about 45 us of host time a launch on the H100 machine, which
    makes small frames host-bound. The first call of each specialisation goes through Triton and
    keeps the compiled kernel; later calls hand the arguments straight to its launcher. Under the
    interpreter, or while a launch hook is set (a profiler), every call goes through Triton.
    """
    if interpreting() or _hooks_set():
        _constexpr_tail(kernel, len(args), constexprs)  # the same argument rules on every path
        kernel[grid](*args, **constexprs)
        return
    device = torch.cuda.current_device()
    key = (id(kernel), device, tuple(_specialisation(a) for a in args), tuple(constexprs.items()))
    entry = _COMPILED.get(key)
    if entry is None:
        tail = _constexpr_tail(kernel, len(args), constexprs)
        compiled = kernel[grid](*args, **constexprs)
        compiled = compiled.result() if hasattr(compiled, "result") else compiled  # Triton's async compile mode
        _COMPILED[key] = (compiled.run, compiled, tail)
        return
    run, compiled, tail = entry
    grid = tuple(grid) + (1, 1)
    stream = torch._C._cuda_getCurrentRawStream(device)  # what Triton's own launch passes
    run(grid[0], grid[1], grid[2], stream, compiled.function, compiled.packed_metadata, None, None, None, *args, *tail)


def _constexpr_tail(kernel, n_args: int, constexprs: dict) -> tuple:
    """The compile-time arguments in parameter order, after checking that the n_args runtime
    arguments are exactly the kernel's leading non-constexpr parameters."""
    params = list(inspect.signature(kernel.fn).parameters.values())  # a JITFunction's or the interpreter's
    is_constexpr = ["constexpr" in str(p.annotation) for p in params]  # Triton's own test
    if any(is_constexpr[:n_args]) or not all(is_constexpr[n_args:]):
        raise TypeError(f"launch_kernel({kernel.fn.__name__}): pass the runtime arguments by position, "
                        f"the compile-time ones by keyword")
    tail = tuple(constexprs.get(p.name, p.default) for p in params[n_args:])
    if any(v is inspect.Parameter.empty for v in tail):
        raise TypeError(f"launch_kernel({kernel.fn.__name__}): a compile-time argument is missing")
    return tail


def _torch_scratch(size: int, alignment: int, stream) -> torch.Tensor:
    return torch.empty(size, device="cuda", dtype=torch.int8)


def ensure_allocator() -> None:
    """Give Triton an allocator for the global scratch memory of kernels that build tensor
    descriptors on the device, unless the calling context has one: Triton keeps it in a
    ContextVar whose default raises at launch. The scratch (128 bytes a descriptor and program)
    comes from torch's caching allocator, stream-ordered, and so also works inside CUDA graphs."""
    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(_torch_scratch)


def _hooks_set() -> bool:
    hooks = knobs.runtime
    return bool(hooks.launch_enter_hook.calls or hooks.launch_exit_hook.calls)
