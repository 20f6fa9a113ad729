"""Projection: the Triton kernels (fwd + bwd) vs the float64 twin, closed-form cases, gradcheck of the
twin, and input validation.

Tolerances (``assert_close``: |a - e| <= atol + rtol |e|, rtol 1e-4): the kernels run in float32 and
the twin in float64 on the same (float32-representable) inputs. Each output is a chain of ~50 float32
operations with no long sums, so its error is a few ulps of the largest intermediate: atol is 1e-5 x
the largest expected magnitude of that output. Gradients add up to C cameras' contributions with
cancellation (a near-isotropic Gaussian's quaternion gradient is a difference of large terms), so
they get atol 1e-4 x the largest expected magnitude, as in the compositing tests.

Integer outputs: radii are ceil() of a float and every culling test is a hard threshold, so float32
and float64 can disagree for a pair that sits within rounding of a boundary. The kernel's radii (and
packed ids) are therefore compared exactly with the twin run in float32, and the float64 comparison
covers the pairs that both precisions keep or both cull; the test asserts such flips stay rare.
"""

import math

import pytest
import torch
from hypothesis import given, strategies as st

from instant4d.camera import orbit_viewmat
from instant4d.kernels import reference
from instant4d.kernels.projection import BLOCK_N, fully_fused_projection
from instant4d.shapes import ALPHA_THRESHOLD, RADIUS_EXTENT
from tolerance import assert_close

FLOAT_OUTPUTS = ("means2d", "depths", "conics", "compensations")


def projection_scene(seed, batch, n, n_cameras, width, height, use_covars):
    """World-space Gaussians and cameras, float32. Kinds of Gaussian (by index mod 10): 0-5 in a cube
    at the origin that every camera faces, 6 behind the cameras, 7 far away (beyond a far plane of 20),
    8 beside the view (off-screen or in the Jacobian's clamped zone), 9 just in front of the cameras
    (around the near plane). Scales are tiny (1e-4), ordinary or huge (up to 3) per Gaussian."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*batch, *shape, generator=g, dtype=torch.float64)

    def randn(*shape):
        return torch.randn(*batch, *shape, generator=g, dtype=torch.float64)

    kind = (torch.arange(n) % 10)[:, None]  # [N, 1]
    cube = rand(n, 3) * 3 - 1.5
    side = torch.sign(randn(n, 1)) * torch.tensor([6.0, -1.0, 0.0], dtype=torch.float64)
    means = torch.where(kind == 6, cube * torch.tensor([1.0, 1.0, 0.5]) - torch.tensor([0.0, 0.0, 7.0]), cube)
    means = torch.where(kind == 7, cube * 5 + torch.tensor([0.0, 0.0, 40.0]), means)
    means = torch.where(kind == 8, cube + side, means)
    means = torch.where(kind == 9, cube * 0.2 - torch.tensor([0.0, 0.0, 3.6]), means)
    log_size = torch.log(torch.tensor(1e-4)) + rand(n) * math.log(3e4)  # 1e-4 .. 3, log-uniform
    scales = torch.exp(log_size[..., None] + 0.5 * randn(n, 3))
    quats = randn(n, 4) * torch.exp(randn(n, 1))
    opacities = rand(n)
    opacities = torch.where(kind[:, 0] % 5 == 3, opacities * 2 / 255, opacities)  # some below 1/255
    covars = None
    if use_covars:
        factor = scales[..., None] * randn(n, 3, 3)
        full = factor @ factor.transpose(-1, -2)
        covars = full[..., [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]

    yaw = (rand(n_cameras) - 0.5) * 60
    pitch = (rand(n_cameras) - 0.5) * 30
    viewmats = torch.stack([orbit_viewmat(float(a), float(b), 4.0, dtype=torch.float64)
                            for a, b in zip(yaw.reshape(-1), pitch.reshape(-1))]).reshape(*batch, n_cameras, 4, 4)
    focal = 0.5 * height / torch.tan(torch.deg2rad(20 + 25 * rand(n_cameras)))
    Ks = torch.zeros(*batch, n_cameras, 3, 3, dtype=torch.float64)
    Ks[..., 0, 0] = focal * (1 + 0.1 * randn(n_cameras))
    Ks[..., 1, 1] = focal
    Ks[..., 0, 2] = width / 2 + width * 0.1 * randn(n_cameras)
    Ks[..., 1, 2] = height / 2 + height * 0.1 * randn(n_cameras)
    Ks[..., 2, 2] = 1
    tensors = dict(means=means, covars=covars, quats=None if use_covars else quats,
                   scales=None if use_covars else scales, viewmats=viewmats, Ks=Ks, opacities=opacities)
    return {k: None if v is None else v.float() for k, v in tensors.items()}


def project(scene, dtype, backend, grad_names=(), with_opacities=True, **options):
    """Run the projection on copies of ``scene`` in ``dtype``; returns (outputs, leaves) with the
    leaves named in ``grad_names`` requiring grad."""
    leaves = {k: None if v is None else v.to(dtype).clone().requires_grad_(k in grad_names)
              for k, v in scene.items()}
    leaves["Ks"] = leaves["Ks"].detach()
    leaves["opacities"] = leaves["opacities"].detach() if with_opacities else None
    return fully_fused_projection(**leaves, **options, backend=backend), leaves


def unpacked(outputs, packed, batch, n_cameras, n):
    """Outputs in the layout [B, C, N, ...] (packed ones scattered, zeros for culled pairs), and the
    flat index of each packed row into [B * C * N] (None when unpacked)."""
    shape = (math.prod(batch), n_cameras, n)
    if not packed:
        return [None if t is None else t.reshape(*shape, *t.shape[len(batch) + 2:]) for t in outputs], None
    batch_ids, camera_ids, gaussian_ids, *values = outputs
    flat = (batch_ids.long() * n_cameras + camera_ids.long()) * n + gaussian_ids.long()
    scattered = []
    for v in values:
        if v is not None:
            v = torch.zeros(math.prod(shape), *v.shape[1:], dtype=v.dtype).index_put((flat,), v)
            v = v.reshape(*shape, *v.shape[1:])
        scattered.append(v)
    return scattered, flat


def within_float32_error(actual, expected, twin32, name, factor, floor):
    """The kernel may err against the float64 twin by ``factor`` times what the float32 twin errs
    there, plus ``floor`` times the largest expected magnitude (flash-attention's rule)."""
    e = expected.detach().double()
    scale = max(float(e.abs().max()) if e.numel() else 0.0, 1.0)
    allowance = floor * scale + factor * (twin32.detach().double() - e).abs()
    assert_close(actual, expected, name, atol=allowance)


def assert_radii_match(actual, twin32, expected, opacities, calc_compensations):
    """The kernel's radii [B, C, N, 2] equal the float32 twin's, except where the two float32 values of
    extent * sqrt(S_xx) straddle an integer: allowed only when they differ by 1 and the float64 value
    lies within float32 rounding (1e-5 relative) of that integer."""
    differ = actual != twin32
    if not differ.any():
        return
    p, q, r = expected[3].unbind(-1)  # float64 conic = S^-1, so S_xx = r / det, S_yy = p / det
    det = p * r - q * q
    extent = torch.full_like(det, RADIUS_EXTENT)
    if opacities is not None:
        alpha = opacities * (expected[4] if calc_compensations else 1.0)
        extent = torch.clamp(torch.sqrt(2 * torch.log(alpha.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)),
                             max=RADIUS_EXTENT)
    value = extent[..., None] * torch.sqrt(torch.stack([r / det, p / det], dim=-1))
    at_integer = (value - value.round()).abs() <= 1e-5 * value
    allowed = ((actual.long() - twin32.long()).abs() == 1) & at_integer
    assert allowed[differ].all(), f"radii: {int((differ & ~allowed).sum())} of {actual.numel()} differ"


@given(
    batch=st.sampled_from([(), (2,)]),
    n=st.sampled_from([0, 1, 7, 41, BLOCK_N + 5]),
    n_cameras=st.integers(1, 3),
    width=st.integers(1, 45),
    height=st.integers(1, 37),
    use_covars=st.booleans(),
    with_opacities=st.booleans(),
    calc_compensations=st.booleans(),
    packed=st.booleans(),
    viewmats_grad=st.booleans(),
    near_far=st.sampled_from([(0.01, 1e10), (0.3, 20.0)]),
    radius_clip=st.sampled_from([0.0, 1.5]),
    seed=st.integers(0, 2**16),
)
def test_triton_matches_twin(interpret_triton, batch, n, n_cameras, width, height, use_covars, with_opacities,
                             calc_compensations, packed, viewmats_grad, near_far, radius_clip, seed):
    scene = projection_scene(seed, batch, n, n_cameras, width, height, use_covars)
    grad_names = ("means", "covars", "quats", "scales") + (("viewmats",) if viewmats_grad else ())
    options = dict(width=width, height=height, near_plane=near_far[0], far_plane=near_far[1],
                   radius_clip=radius_clip, calc_compensations=calc_compensations, with_opacities=with_opacities)
    runs = [project(scene, torch.float32, "triton", grad_names, packed=packed, **options),
            project(scene, torch.float32, "torch", grad_names, packed=packed, **options),
            project(scene, torch.float64, "torch", grad_names, **options)]
    actual, twin32, expected = [unpacked(out, packed and i < 2, batch, n_cameras, n)[0]
                                for i, (out, _) in enumerate(runs)]
    flat = unpacked(runs[0][0], packed, batch, n_cameras, n)[1]
    for i, name in enumerate(("batch_ids", "camera_ids", "gaussian_ids") if packed else ()):
        assert_close(runs[0][0][i], runs[1][0][i], name)
    opacities = scene["opacities"].reshape(math.prod(batch), 1, n) if with_opacities else None
    assert_radii_match(actual[0], twin32[0], expected, opacities, calc_compensations)

    # pairs that float32 and float64 keep (or cull) alike; a flip needs a value within rounding of a
    # threshold, so it must stay rare (the kernel's own culling matched the float32 twin exactly above)
    visible = (actual[0] > 0).all(-1)
    agree = visible == (expected[0] > 0).all(-1)
    assert int((~agree).sum()) <= 1 + visible.numel() // 1000, f"{int((~agree).sum())} visibility flips"

    g = torch.Generator().manual_seed(seed + 1)
    weights = []
    for name, a, t, e in zip(FLOAT_OUTPUTS, actual[1:], twin32[1:], expected[1:]):
        if e is None:
            assert a is None, name
            weights.append(None)
            continue
        keep = agree.reshape(*agree.shape, *([1] * (e.dim() - agree.dim())))
        within_float32_error(torch.where(keep, a, 0.0), torch.where(keep, e, 0.0), torch.where(keep, t, 0.0),
                             name, factor=2, floor=1e-5)
        weights.append(torch.randn(e.shape, generator=g, dtype=torch.float64) * keep)

    if n == 0:
        return
    for i, (out, _) in enumerate(runs):
        loss = 0.0
        for w, o in zip(weights, out[4 if packed and i < 2 else 1:]):
            if w is not None:
                w = w.reshape(-1, *w.shape[3:])[flat] if packed and i < 2 else w.reshape(o.shape)
                loss = loss + (o * w.to(o.dtype)).sum()
        loss.backward()
    culled_everywhere = ~visible.any(dim=1)  # [B, N]: no camera keeps these Gaussians
    for name in grad_names:
        if scene.get(name) is None:
            continue
        a, t, e = [leaves[name].grad if leaves[name].grad is not None else torch.zeros_like(leaves[name])
                   for _, leaves in runs]
        within_float32_error(a, e, t, "v_" + name, factor=3, floor=1e-4)
        if name != "viewmats":
            assert (a.reshape(culled_everywhere.shape + (-1,))[culled_everywhere] == 0).all(), f"v_{name} culled"


@pytest.mark.parametrize("seed", [0, 1])
def test_elongated_gaussians_gradients_match_twin(interpret_triton, seed):
    """Regression: needle-like Gaussians (one scale 10-100x the others) spanning tens of pixels, with
    conic gradients shaped like compositing's (v_conic ~ -k (S_xx / 2, S_xy, S_yy / 2): sums over pixels
    of the offsets' second moments). Their 2D covariance S is ill-conditioned and W = dL/dS nearly
    commutes with S, so the rotation gradient is the small antisymmetric part of W S. Forming W as
    -P G P from the rounded conic P amplified float32 rounding by cond(S) (~500 here): quaternion and mean
    gradients were ~2e-3 off (50-140x the float32 twin's error), as on random_scene. Compositing's
    v_conic is within ~1e-3 of that moment form, hence the small perturbation."""
    g = torch.Generator().manual_seed(seed)
    n, width, height = 40, 256, 192
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1
    thin = 0.005 + 0.025 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    axis = torch.randint(0, 3, (n,), generator=g)
    scales = torch.where(torch.nn.functional.one_hot(axis, 3).bool(),
                         0.3 + 0.3 * torch.rand(n, 3, generator=g, dtype=torch.float64), thin)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    viewmats = torch.stack([orbit_viewmat(0.0, 0.0, 4.0, dtype=torch.float64),
                            orbit_viewmat(20.0, -10.0, 4.0, dtype=torch.float64)])
    focal = 0.5 * height / math.tan(math.radians(20.0))
    Ks = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]],
                      dtype=torch.float64).expand(2, 3, 3)
    scene = dict(means=means, covars=None, quats=quats, scales=scales, viewmats=viewmats, Ks=Ks,
                 opacities=torch.full((n,), 0.8, dtype=torch.float64))
    scene = {k: None if v is None else v.float() for k, v in scene.items()}
    grad_names = ("means", "quats", "scales")
    runs = [project(scene, dtype, backend, grad_names, width=width, height=height)
            for dtype, backend in ((torch.float32, "triton"), (torch.float32, "torch"), (torch.float64, "torch"))]
    radii, means2d, _, conics, _ = runs[2][0]
    visible = (radii > 0).all(-1)
    assert int(visible.sum()) >= n, "the scene should keep at least half the pairs"
    p, q, r = conics.detach().unbind(-1)
    det = p * r - q * q
    moments = torch.stack([0.5 * r, -q, 0.5 * p], dim=-1) / torch.where(visible, det, 1.0)[..., None]  # S / 2
    k = 1e3 * (1 + torch.rand(visible.shape, generator=g, dtype=torch.float64))[..., None]
    v_conics = -k * moments * (1 + 1e-3 * torch.randn(moments.shape, generator=g, dtype=torch.float64))
    v_conics = torch.where(visible[..., None], v_conics, 0.0)
    v_means2d = torch.randn(means2d.shape, generator=g, dtype=torch.float64)
    for out, _ in runs:
        ((out[1] * v_means2d.to(out[1].dtype)).sum() + (out[3] * v_conics.to(out[3].dtype)).sum()).backward()
    for name in grad_names:  # ||kernel - twin64|| within 3x ||twin32 - twin64|| (the old kernel: 50-140x)
        a, t, e = [leaves[name].grad.double() for _, leaves in runs]
        kernel_error, twin_error = float((a - e).norm()), float((t - e).norm())
        assert kernel_error <= 3 * twin_error + 1e-6 * float(e.norm()), (
            f"v_{name}: relative error {kernel_error / float(e.norm()):.2e}, float32 twin's {twin_error / float(e.norm()):.2e}")


def camera_at_origin(fx, fy, cx, cy, dtype=torch.float64):
    viewmats = torch.eye(4, dtype=dtype)[None]  # [1, 4, 4]: camera frame = world frame
    Ks = torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]], dtype=dtype)
    return viewmats, Ks


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("mean, scale, clamped_u", [
    ((0.3, -0.2, 2.5), (0.05, 0.08, 0.1), None),  # x/z inside the field of view
    ((4.8, 0.0, 4.0), (1.0, 0.2, 0.5), 0.832),  # x/z = 1.2 clamped to lim_x_pos = 32/50 + 0.3 * 32/50
])
def test_axis_aligned_gaussian_closed_form(interpret_triton, backend, mean, scale, clamped_u):
    """An axis-aligned Gaussian (identity rotation) in camera space: mean2d = f x/z + c and
    S = J diag(s^2) J^T + eps2d I with J = [[fx/z, 0, -fx u/z], [0, fy/z, -fy v/z]], u = x/z unless
    clamped (float64 inputs also check that the Triton path returns the input dtype)."""
    fx, fy, cx, cy, width, height, eps2d, opacity = 50.0, 55.0, 32.0, 20.25, 64, 41, 0.3, 0.5
    viewmats, Ks = camera_at_origin(fx, fy, cx, cy)
    x, y, z = mean
    sx, sy, sz = scale
    u = x / z if clamped_u is None else clamped_u
    v = y / z
    a = (fx / z) ** 2 * sx**2 + (fx * u / z) ** 2 * sz**2
    b = (fx * u / z) * (fy * v / z) * sz**2
    c = (fy / z) ** 2 * sy**2 + (fy * v / z) ** 2 * sz**2
    det_blur = (a + eps2d) * (c + eps2d) - b * b
    extent = math.sqrt(2 * math.log(255 * opacity))
    radii = [extent * math.sqrt(a + eps2d), extent * math.sqrt(c + eps2d)]
    assert all(0.01 < r % 1 < 0.99 for r in radii), "closed-form radius too close to an integer"

    radii_out, means2d, depths, conics, comps = fully_fused_projection(
        torch.tensor([mean], dtype=torch.float64), None, torch.tensor([[2.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
        torch.tensor([scale], dtype=torch.float64), viewmats, Ks, width, height, eps2d=eps2d,
        calc_compensations=True, opacities=torch.tensor([opacity], dtype=torch.float64), backend=backend)
    assert means2d.dtype == torch.float64
    assert radii_out.tolist() == [[[math.ceil(r) for r in radii]]]
    expected = [
        ("means2d", means2d, [[[fx * x / z + cx, fy * y / z + cy]]]),
        ("depths", depths, [[z]]),
        ("conics", conics, [[[(c + eps2d) / det_blur, -b / det_blur, (a + eps2d) / det_blur]]]),
        ("compensations", comps, [[math.sqrt((a * c - b * b) / det_blur)]]),
    ]
    for name, got, want in expected:
        assert_close(got, torch.tensor(want, dtype=torch.float64), name, atol=1e-6)  # float32 roundings


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_culled_gaussians_output_zeros_and_get_no_gradient(interpret_triton, backend):
    """Behind the camera, beyond the far plane, off-screen, too transparent, below radius_clip: all
    culled, with zeros in every output and zero gradients; the one visible Gaussian is kept."""
    viewmats, Ks = camera_at_origin(40.0, 40.0, 20.0, 15.0)
    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, -3.0], [0.0, 0.0, 50.0], [30.0, 0.0, 3.0],
                          [0.1, 0.0, 3.0], [0.0, 0.1, 3.0]], dtype=torch.float64, requires_grad=True)
    quats = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    scales = torch.tensor([[0.2] * 3] * 5 + [[0.01] * 3], dtype=torch.float64, requires_grad=True)
    opacities = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.003, 0.9], dtype=torch.float64)
    radii, *floats = fully_fused_projection(
        means, None, quats, scales, viewmats, Ks, 40, 30, far_plane=10.0, radius_clip=3.0,
        calc_compensations=True, opacities=opacities, backend=backend)
    assert (radii[0, 0] > 0).all() and (radii[0, 1:] == 0).all()
    assert all((t[0, 1:] == 0).all() for t in floats)
    sum(t.sum() for t in floats).backward()
    for grad in (means.grad, quats.grad, scales.grad):
        assert (grad[1:] == 0).all() and (grad[0] != 0).any()


@pytest.mark.parametrize("use_covars", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_twin_gradcheck(use_covars, packed):
    """The twin's autograd gradients (incl. viewmats, compensations) against finite differences, on
    Gaussians well inside two views so no culling decision moves under the perturbation."""
    g = torch.Generator().manual_seed(3)
    means = (torch.rand(2, 3, 3, generator=g, dtype=torch.float64) - 0.5) * 0.6
    scales = 0.05 + 0.1 * torch.rand(2, 3, 3, generator=g, dtype=torch.float64)
    quats = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    factor = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64) * 0.1
    covars = (factor @ factor.transpose(-1, -2) + 0.01 * torch.eye(3, dtype=torch.float64))[
        ..., [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    viewmats = torch.stack([torch.stack([orbit_viewmat(10.0, 5.0, 3.0, dtype=torch.float64),
                                         orbit_viewmat(-15.0, 0.0, 3.5, dtype=torch.float64)])] * 2)
    Ks = torch.tensor([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]], dtype=torch.float64).expand(2, 2, 3, 3)
    opacities = torch.full((2, 3), 0.7, dtype=torch.float64)

    def project_floats(means, shape_a, shape_b, viewmats):
        shape_args = (shape_a, None, None) if use_covars else (None, shape_a, shape_b)
        out = reference.fully_fused_projection(means, *shape_args, viewmats, Ks, 64, 48, packed=packed,
                                               calc_compensations=True, opacities=opacities)
        return torch.cat([t.reshape(-1) for t in out[4 if packed else 1:]])

    inputs = (means, covars, scales, viewmats) if use_covars else (means, quats, scales, viewmats)
    inputs = tuple(t.clone().requires_grad_() for t in inputs)
    if use_covars:
        inputs[2].requires_grad_(False)  # unused when covars are given
    assert torch.autograd.gradcheck(project_floats, inputs)


@pytest.mark.parametrize("change, error, match", [
    (dict(means=torch.zeros(5, 2)), ValueError, "means"),
    (dict(means=torch.zeros(3)), ValueError, "means"),
    (dict(means=torch.zeros(5, 3, dtype=torch.int32)), ValueError, "means"),
    (dict(quats=torch.zeros(4, 4)), ValueError, "quats"),
    (dict(scales=torch.zeros(5, 4)), ValueError, "scales"),
    (dict(scales=torch.zeros(5, 3, dtype=torch.float64)), ValueError, "scales"),
    (dict(covars=torch.zeros(5, 3, 3)), ValueError, "covars"),
    (dict(quats=None), ValueError, "quats"),
    (dict(viewmats=torch.zeros(2, 3, 4)), ValueError, "viewmats"),
    (dict(Ks=torch.zeros(3, 3, 3)), ValueError, "Ks"),
    (dict(Ks=torch.zeros(2, 3, 3, device="meta")), ValueError, "Ks"),
    (dict(opacities=torch.zeros(4)), ValueError, "opacities"),
    (dict(width=0), ValueError, "width"),
    (dict(height=-3), ValueError, "height"),
    (dict(width=12.0), ValueError, "width"),
    (dict(camera_model="fisheye"), NotImplementedError, "camera_model"),
    (dict(sparse_grad=True), NotImplementedError, "sparse_grad"),
    (dict(backend="cuda"), ValueError, "backend"),
])
def test_bad_inputs_name_the_argument(change, error, match):
    args = dict(means=torch.zeros(5, 3), covars=None, quats=torch.zeros(5, 4), scales=torch.zeros(5, 3),
                viewmats=torch.zeros(2, 4, 4), Ks=torch.zeros(2, 3, 3), width=16, height=16,
                opacities=torch.zeros(5))
    args.update(change)
    with pytest.raises(error, match=match):
        fully_fused_projection(**args)


@pytest.mark.parametrize("output", ["means2d", "depths", "conics", "compensations"])
def test_loss_of_one_output_matches_twin(interpret_triton, output):
    """A loss of one output alone: autograd hands the kernel no gradient (None) for the others, and the
    kernel reads none for them (depths, compensations) or zeros (means2d, conics); gradients as the twin's."""
    scene = projection_scene(3, (), 41, 2, 40, 30, False)
    index = FLOAT_OUTPUTS.index(output)
    runs = [project(scene, dtype, backend, ("means", "quats", "scales", "viewmats"), width=40, height=30,
                    calc_compensations=True)
            for dtype, backend in ((torch.float32, "triton"), (torch.float32, "torch"), (torch.float64, "torch"))]
    for out, _ in runs:
        out[1 + index].sum().backward()
    for name in ("means", "quats", "scales", "viewmats"):
        a, t, e = [leaves[name].grad if leaves[name].grad is not None else torch.zeros_like(leaves[name])
                   for _, leaves in runs]  # (the twin leaves the inputs an output does not depend on without one)
        within_float32_error(a, e, t, f"v_{name} ({output} alone)", factor=3, floor=1e-4)
