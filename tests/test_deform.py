"""The avatar deformation kernel (Triton, under the interpreter on CPU) against its PyTorch twin in
float64: forward and every gradient.

Tolerances (tests/tolerance.py): float64 kernels agree with the float64 twin to rtol 1e-10 (the same
formulas, reordered sums); float32 kernels to rtol 1e-4 with atol 1e-5 x the quantity's scale (the
outputs are O(1) sums of at most K + 10 terms)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from instant4d.kernels import reference
from instant4d.kernels.deform import BLOCK_N, deform_gaussians
from tolerance import assert_close

NAMES = ("means", "quats", "opacities", "basis", "opacity_basis", "rigid", "pivot", "codes", "poses")


def make_inputs(n: int, k: int, b: int, seed: int, dtype=torch.float64, saturate: bool = False):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    pose_q = torch.nn.functional.normalize(randn(b, 4), dim=-1)
    pose_q = torch.where(pose_q[:, :1] < 0, -pose_q, pose_q)  # w >= 0, as HeadPose gives
    rigid = rand(n)
    rigid[: n // 4] = 1.0  # the head proper
    rigid[n // 4 : n // 3] = 0.0  # the shoulders
    opacities = rand(n)
    codes = rand(b, k)
    if saturate:  # clamps at both ends, and exactly at the bounds (the interior at rest)
        opacities[: n // 2] = 0.0
        opacities[n // 2 :] = 1.0
        codes[0] = 0.0
    inputs = (
        randn(n, 3), randn(n, 4), opacities, 0.1 * randn(n, k, 3), 2 * randn(n, k), rigid,
        0.3 * randn(3), codes, torch.cat([pose_q, 0.1 * randn(b, 3)], -1),
    )  # fmt: skip
    return [t.to(dtype) for t in inputs]


def check_against_twin(inputs, rtol: float, atol: float):
    kernel_inputs = [t.clone().requires_grad_(True) for t in inputs]
    twin_inputs = [t.detach().double().requires_grad_(True) for t in inputs]
    outputs = deform_gaussians(*kernel_inputs, backend="triton")
    expected = reference.deform_gaussians(*twin_inputs)
    for name, out, ref in zip(("out_means", "out_quats", "out_opacities"), outputs, expected):
        assert_close(out, ref, name, rtol=rtol, atol=atol)
    g = torch.Generator().manual_seed(1)
    cotangents = [torch.randn(r.shape, generator=g, dtype=torch.float64) for r in expected]
    if all(t.numel() == 0 for t in inputs[:1]):
        return
    grads = torch.autograd.grad(outputs, kernel_inputs, [c.to(inputs[0].dtype) for c in cotangents], allow_unused=True)
    twin_grads = torch.autograd.grad(expected, twin_inputs, cotangents, allow_unused=True)
    n = max(inputs[0].shape[0], 1)
    for name, got, want in zip(NAMES, grads, twin_grads):
        want = torch.zeros_like(got) if want is None else want
        # per-frame reductions (codes, poses, pivot) sum over N Gaussians: scale atol with N
        scale = n if name in ("codes", "poses", "pivot") else 1
        assert_close(got, want, f"v_{name}", rtol=rtol, atol=atol * scale)


@pytest.mark.interpreter
@given(
    n=st.sampled_from([0, 1, 7, BLOCK_N - 1, BLOCK_N, BLOCK_N + 1, 2 * BLOCK_N + 37]),
    k=st.integers(1, 12),
    b=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_deform_matches_twin_float64(interpret_triton, n, k, b, seed):
    check_against_twin(make_inputs(n, k, b, seed), rtol=1e-10, atol=1e-12)


@pytest.mark.interpreter
@given(n=st.integers(1, 300), k=st.integers(1, 12), b=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_deform_matches_twin_float32(interpret_triton, n, k, b, seed):
    check_against_twin(make_inputs(n, k, b, seed, torch.float32), rtol=1e-4, atol=1e-5)


@pytest.mark.interpreter
def test_deform_opacity_clamp_bounds(interpret_triton):
    """At rest the mouth interior sits exactly at opacity 0: the gradient must pass there, as torch's."""
    check_against_twin(make_inputs(200, 5, 2, 3, saturate=True), rtol=1e-10, atol=1e-12)


def test_identity_pose_and_zero_code_leave_gaussians_unchanged():
    means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses = make_inputs(50, 4, 1, 0)
    codes = torch.zeros_like(codes)
    poses = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    out = deform_gaussians(means, quats, opacities.clamp(0, 1), basis, opacity_basis, rigid, pivot, codes, poses, backend="torch")
    assert_close(out[0][0], means, "means", rtol=0, atol=1e-12)
    assert_close(out[1][0], quats, "quats", rtol=0, atol=1e-12)
    assert_close(out[2][0], opacities.clamp(0, 1), "opacities", rtol=0, atol=0)


def test_full_rigid_weight_is_a_rigid_motion():
    """With rigid = 1 and no expression every pairwise distance is kept and the translation adds up."""
    means, quats, opacities, basis, opacity_basis, rigid, pivot, codes, poses = make_inputs(40, 3, 1, 5)
    out = deform_gaussians(means, quats, opacities, basis, opacity_basis, torch.ones_like(rigid), pivot,
                           torch.zeros_like(codes), poses, backend="torch")[0][0]  # fmt: skip
    def distances(x):
        return (x[:, None] - x[None]).norm(dim=-1)

    assert_close(distances(out), distances(means), "distances", rtol=1e-9, atol=1e-12)


def test_validation_names_the_argument():
    inputs = make_inputs(10, 3, 2, 0)
    inputs[4] = inputs[4][:, :2]
    with pytest.raises(ValueError, match="opacity_basis"):
        deform_gaussians(*inputs)
    inputs = make_inputs(10, 3, 2, 0)
    inputs[8] = inputs[8][:1]
    with pytest.raises(ValueError, match="poses"):
        deform_gaussians(*inputs)


def test_forced_triton_on_cpu_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="backend='triton' cannot run"):
        deform_gaussians(*make_inputs(4, 2, 1, 0, torch.float32), backend="triton")


def test_half_precision_is_refused_by_the_kernel(interpret_triton):
    with pytest.raises(ValueError, match="float16"):
        deform_gaussians(*make_inputs(4, 2, 1, 0, torch.float16), backend="triton")
