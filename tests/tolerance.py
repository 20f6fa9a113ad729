"""The one tolerance rule of the kernel tests.

A kernel result ``actual`` is compared with its PyTorch twin run in float64 (``expected``). It passes
when every element satisfies ``|actual - expected| <= atol + rtol * |expected|``; the defaults are for
float32 kernels: rtol 1e-4 covers a few dozen float32 roundings (2^-24 each) accumulated along
sums of up to a few hundred terms, and atol is set per quantity by the caller from its scale.
On failure the message names the quantity, the worst element, and how many elements failed.
"""

from __future__ import annotations

import torch

RTOL_FP32 = 1e-4


def assert_close(actual, expected, name: str, rtol: float = RTOL_FP32, atol: float = 1e-5) -> None:
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{name}: one side is None"
        return
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if actual.numel() == 0:
        return
    if not actual.is_floating_point():
        bad = actual != expected
        assert not bad.any(), (
            f"{name}: {int(bad.sum())} of {actual.numel()} integer elements differ, first at "
            f"{tuple(bad.nonzero()[0].tolist())}: {actual[bad][0].item()} vs {expected[bad][0].item()}"
        )
        return
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    assert torch.isfinite(a).all() == torch.isfinite(e).all(), f"{name}: non-finite values differ"
    err = (a - e).abs()
    bound = atol + rtol * e.abs()
    bad = err > bound
    if bad.any():
        worst = int((err - bound).argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape))
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {a.numel()} elements outside atol={atol} rtol={rtol}; "
            f"worst at {idx}: got {a[idx].item():.8g}, expected {e[idx].item():.8g}"
        )


def assert_close_to_twin(actual, expected, twin_fp32, name: str, factor: float = 3.0, rtol: float = 1e-4,
                         atol: float = 1e-6) -> None:
    """flash-attention's rule: the float32 kernel may be at most ``factor`` times as far from the
    float64 twin as the float32 twin itself is (plus ``atol`` + ``rtol * |expected|`` for rounding
    noise where the twin happens to be exact). Use it where the math amplifies float32 rounding
    (division by small alphas in expected depth, ill-conditioned 2D covariances)."""
    if expected is None:
        assert actual is None, f"{name}: one side is None"
        return
    twin_error = float((twin_fp32.detach().double() - expected.detach().double()).abs().max()) if expected.numel() else 0.0
    assert_close(actual, expected, name, rtol=rtol, atol=atol + factor * twin_error)
