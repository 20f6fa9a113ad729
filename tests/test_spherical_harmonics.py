"""Spherical harmonics: the Triton kernels (fwd + bwd) vs the float64 twin, the bases against their
textbook closed forms, gradcheck of the twin, and input validation.

Tolerances (``assert_close``, rtol 1e-4): a colour is a sum of at most 16 products of a basis
(|Y| < 1.1 on the unit sphere) and a coefficient, computed in float32: its error is a few ulps of
sum |Y c|, so atol is 1e-5 x the largest expected magnitude. Gradients are single products
(v_coeffs) or sums of 16 x 3 products scaled by 1 / |dirs| (v_dirs): atol 1e-4 x the largest
expected magnitude.
"""

import math

import pytest
import torch
from hypothesis import given, strategies as st

from instant4d.kernels import reference
from instant4d.kernels.spherical_harmonics import BLOCK, spherical_harmonics
from tolerance import assert_close


def sh_inputs(seed, batch, degree, extra_bases, use_masks):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(*batch, 3, generator=g, dtype=torch.float64)
    dirs = dirs * torch.exp(torch.randn(*batch, 1, generator=g, dtype=torch.float64))  # lengths ~ 0.1 .. 10
    coeffs = torch.randn(*batch, (degree + 1) ** 2 + extra_bases, 3, generator=g, dtype=torch.float64)
    masks = torch.rand(*batch, generator=g) < 0.7 if use_masks else None
    v_colors = torch.randn(*batch, 3, generator=g, dtype=torch.float64)
    return dirs.float(), coeffs.float(), masks, v_colors


def colors_and_grads(degree, dirs, coeffs, masks, v_colors, dtype, backend):
    dirs = dirs.to(dtype).clone().requires_grad_()
    coeffs = coeffs.to(dtype).clone().requires_grad_()
    colors = spherical_harmonics(degree, dirs, coeffs, masks, backend=backend)
    (colors * v_colors.to(dtype)).sum().backward()
    return colors, dirs.grad, coeffs.grad


@given(
    batch=st.sampled_from([(0,), (1,), (9,), (2, 37), (BLOCK + 3,)]),
    degree=st.integers(0, 3),
    extra_bases=st.integers(0, 3),
    use_masks=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_triton_matches_twin(interpret_triton, batch, degree, extra_bases, use_masks, seed):
    inputs = sh_inputs(seed, batch, degree, extra_bases, use_masks)
    actual = colors_and_grads(degree, *inputs, torch.float32, "triton")
    expected = colors_and_grads(degree, *inputs, torch.float64, "torch")
    for name, a, e, floor in zip(("colors", "v_dirs", "v_coeffs"), actual, expected, (1e-5, 1e-4, 1e-4)):
        if e is None:  # degree 0 does not depend on dirs
            assert a is None and name == "v_dirs" and degree == 0, name
            continue
        assert_close(a, e, name, atol=floor * max(float(e.abs().max()) if e.numel() else 0.0, 1.0))
    masks = inputs[2]
    if masks is not None:
        for name, t in zip(("colors", "v_dirs", "v_coeffs"), actual):
            assert t is None or (t[~masks] == 0).all(), f"{name} of masked points"
    n_used = (degree + 1) ** 2
    assert (actual[2][..., n_used:, :] == 0).all(), "v_coeffs beyond the degree"


def textbook_bases(x, y, z):
    """Real spherical harmonics with the Condon-Shortley phase, from their normalisation constants."""
    pi = math.pi
    return [
        0.5 * math.sqrt(1 / pi) + 0 * x,
        -math.sqrt(3 / (4 * pi)) * y, math.sqrt(3 / (4 * pi)) * z, -math.sqrt(3 / (4 * pi)) * x,
        0.5 * math.sqrt(15 / pi) * x * y,
        -0.5 * math.sqrt(15 / pi) * y * z,
        0.25 * math.sqrt(5 / pi) * (3 * z * z - 1),
        -0.5 * math.sqrt(15 / pi) * x * z,
        0.25 * math.sqrt(15 / pi) * (x * x - y * y),
        -0.25 * math.sqrt(35 / (2 * pi)) * y * (3 * x * x - y * y),
        0.5 * math.sqrt(105 / pi) * x * y * z,
        -0.25 * math.sqrt(21 / (2 * pi)) * y * (5 * z * z - 1),
        0.25 * math.sqrt(7 / pi) * z * (5 * z * z - 3),
        -0.25 * math.sqrt(21 / (2 * pi)) * x * (5 * z * z - 1),
        0.25 * math.sqrt(105 / pi) * z * (x * x - y * y),
        -0.25 * math.sqrt(35 / (2 * pi)) * x * (x * x - 3 * y * y),
    ]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_each_basis_matches_its_closed_form(interpret_triton, backend):
    """Coefficients one-hot in basis k, channel k % 3: the colour is Y_k(dirs / |dirs|) in that channel."""
    g = torch.Generator().manual_seed(1)
    dirs = torch.randn(16, 5, 3, generator=g, dtype=torch.float64)  # [basis, point, xyz]
    unit = dirs / dirs.norm(dim=-1, keepdim=True)
    coeffs = torch.zeros(16, 5, 16, 3, dtype=torch.float64)
    for k in range(16):
        coeffs[k, :, k, k % 3] = 1.0
    colors = spherical_harmonics(3, dirs, coeffs, backend=backend)
    bases = textbook_bases(*unit.unbind(-1))
    expected = torch.zeros(16, 5, 3, dtype=torch.float64)
    for k in range(16):
        expected[k, :, k % 3] = bases[k][k]
    assert_close(colors, expected, "colors", atol=1e-6)  # float32 rounding of values below 1.1


def test_twin_gradcheck():
    g = torch.Generator().manual_seed(2)
    dirs = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(4, 17, 3, generator=g, dtype=torch.float64, requires_grad=True)
    masks = torch.tensor([True, False, True, True])
    assert torch.autograd.gradcheck(lambda d, c: reference.spherical_harmonics(3, d, c, masks), (dirs, coeffs))


@pytest.mark.parametrize("change, match", [
    (dict(degrees_to_use=4), "degrees_to_use"),
    (dict(degrees_to_use=-1), "degrees_to_use"),
    (dict(degrees_to_use=True), "degrees_to_use"),
    (dict(coeffs=torch.zeros(6, 15, 3)), "coeffs"),
    (dict(coeffs=torch.zeros(5, 16, 3)), "coeffs"),
    (dict(coeffs=torch.zeros(6, 16, 4)), "coeffs"),
    (dict(coeffs=torch.zeros(6, 16, 3, dtype=torch.float64)), "coeffs"),
    (dict(coeffs=torch.zeros(6, 16, 3, device="meta")), "coeffs"),
    (dict(dirs=torch.zeros(6, 2)), "dirs"),
    (dict(dirs=torch.zeros(6, 3, dtype=torch.int64)), "dirs"),
    (dict(masks=torch.ones(6, dtype=torch.float32)), "masks"),
    (dict(masks=torch.ones(5, dtype=torch.bool)), "masks"),
])
def test_bad_inputs_name_the_argument(change, match):
    args = dict(degrees_to_use=3, dirs=torch.zeros(6, 3), coeffs=torch.zeros(6, 16, 3), masks=None)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        spherical_harmonics(**args)
