"""Alpha compositing: the Triton kernels (fwd + bwd) vs the float64 twin, and closed-form cases.

Tolerances: the kernel runs in float32, the twin in float64. Colours and alphas are sums of at most
a few hundred products of numbers in [0, 1]: float32 rounding stays below 1e-5 absolute. Gradients
are sums over up to 256 pixels of terms up to O(10) (conic gradients scale with dx^2, up to
(tile size)^2), so they get atol 1e-4 times the largest expected magnitude and rtol 1e-4: a few
hundred float32 roundings of 6e-8 each, with margin. The transmittance floor (1e-4) is a hard
threshold: a pixel whose T lands within rounding of it could stop one Gaussian apart in the two
precisions. The scenes keep away from that knife edge only statistically, so the test reports such a
flip as a failure (it has not happened in the seeds CI draws).
"""

import pytest
import torch
from hypothesis import given, strategies as st

from instant4d.kernels import reference
from instant4d.kernels.composite import rasterize_to_pixels
from splats2d import random_splats
from tolerance import assert_close

NAMES = ("colors", "alphas", "v_means2d", "v_conics", "v_colors", "v_opacities", "v_backgrounds", "absgrad")


def composite_with_grads(s, width, height, tile_size, dtype, backend, use_background, masks, absgrad,
                         deterministic=False):
    inputs = [s[k].to(dtype).clone().requires_grad_() for k in ("means2d", "conics", "colors", "opacities", "backgrounds")]
    colors, alphas = rasterize_to_pixels(
        *inputs[:4], width, height, tile_size, s["isect_offsets"], s["flatten_ids"],
        backgrounds=inputs[4] if use_background else None, masks=masks, absgrad=absgrad, backend=backend,
        deterministic=deterministic,
    )
    g = torch.Generator().manual_seed(7)
    v_colors = torch.rand(colors.shape, generator=g, dtype=torch.float64).to(dtype) - 0.3
    v_alphas = torch.rand(alphas.shape, generator=g, dtype=torch.float64).to(dtype) - 0.3
    loss = (colors * v_colors).sum() + (alphas * v_alphas).sum()
    if loss.requires_grad:  # the twin builds no graph when no Gaussian touches the image
        loss.backward()
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in inputs]
    return [colors, alphas, *grads, getattr(inputs[0], "absgrad", None)]


@given(
    n_images=st.integers(1, 2),
    n=st.sampled_from([0, 1, 5, 33, 70]),
    width=st.integers(1, 40),
    height=st.integers(1, 36),
    channels=st.sampled_from([1, 3, 4, 5, 17]),
    tile_size=st.sampled_from([16, 8, 12]),
    use_background=st.booleans(),
    use_masks=st.booleans(),
    absgrad=st.booleans(),
    deterministic=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_triton_matches_twin(interpret_triton, n_images, n, width, height, channels, tile_size, use_background,
                             use_masks, absgrad, deterministic, seed):
    s = random_splats(n_images, n, width, height, channels, seed, tile_size)
    masks = None
    if use_masks:
        masks = torch.rand(s["isect_offsets"].shape, generator=torch.Generator().manual_seed(seed)) < 0.7
    args = (width, height, tile_size, torch.float64, "torch", use_background, masks, absgrad)
    expected = composite_with_grads(s, *args)
    actual = composite_with_grads(s, width, height, tile_size, torch.float32, "triton", use_background, masks, absgrad,
                                  deterministic)
    for name, a, e in zip(NAMES, actual, expected):
        if e is None:
            assert a is None, name
            continue
        scale = float(e.detach().abs().max()) if e.numel() else 1.0
        assert_close(a, e, name, atol=1e-5 if name in ("colors", "alphas") else 1e-4 * max(scale, 1.0))


@pytest.mark.parametrize("channels", [3, 17])  # the per-channel path and the tl.dot path
def test_deterministic_backward_matches_atomics_and_repeats_bit_for_bit(interpret_triton, channels):
    """deterministic=True sums per-intersection records in sorted order: the same gradients as the
    atomic adds up to float32 summation order (rtol 1e-5), and the same bits when run again."""
    s = random_splats(2, 60, 40, 36, channels, 11, 16)
    args = (40, 36, 16, torch.float32, "triton", True, None, True)
    atomic = composite_with_grads(s, *args)
    first = composite_with_grads(s, *args, deterministic=True)
    second = composite_with_grads(s, *args, deterministic=True)
    for name, a, b, c in zip(NAMES, atomic, first, second):
        assert torch.equal(b, c), name
        assert_close(b, a, name, rtol=1e-5, atol=1e-6 * max(float(a.detach().abs().max()), 1.0))


def single_gaussian(opacity=0.8, centre=(10.3, 7.6), conic=(0.2, 0.05, 0.1), size=(24, 20)):
    means2d = torch.tensor([[centre]], dtype=torch.float64)
    conics = torch.tensor([[conic]], dtype=torch.float64)
    flatten_ids = torch.zeros(2, dtype=torch.int32)  # it touches both 16 px tiles of the first row
    offsets = torch.tensor([[[0, 1], [2, 2]]], dtype=torch.int32)
    return means2d, conics, torch.tensor([[opacity]], dtype=torch.float64), offsets, flatten_ids, size


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_single_gaussian_closed_form(interpret_triton, backend):
    means2d, conics, opacities, offsets, flatten_ids, (w, h) = single_gaussian()
    colors = torch.tensor([[[0.2, 0.5, 0.9]]], dtype=torch.float64)
    background = torch.tensor([[0.1, 0.1, 0.1]], dtype=torch.float64)
    out, alpha = rasterize_to_pixels(means2d, conics, colors, opacities, w, h, 16, offsets, flatten_ids,
                                     backgrounds=background, backend=backend)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    dx, dy = 10.3 - xs, 7.6 - ys
    a = torch.clamp(0.8 * torch.exp(-(0.5 * (0.2 * dx**2 + 0.1 * dy**2) + 0.05 * dx * dy)), max=0.999)
    a = torch.where(a >= 1 / 255, a, torch.zeros_like(a))
    a[16:] = 0  # the second tile row has no intersections
    expected = a[..., None] * colors[0, 0] + (1 - a[..., None]) * background[0]
    assert_close(out[0], expected, "colour", atol=1e-6)
    assert_close(alpha[0, ..., 0], a, "alpha", atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opaque_front_gaussian_hides_the_back(interpret_triton, backend):
    means2d = torch.tensor([[[8.0, 8.0], [8.0, 8.0]]], dtype=torch.float64)
    conics = torch.tensor([[[1e-4, 0.0, 1e-4], [1e-4, 0.0, 1e-4]]], dtype=torch.float64)  # flat over the tile
    colors = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    opacities = torch.ones(1, 2, dtype=torch.float64)
    offsets = torch.zeros(1, 1, 1, dtype=torch.int32)
    flatten_ids = torch.tensor([0, 1], dtype=torch.int32)  # id 0 in front
    out, alpha = rasterize_to_pixels(means2d, conics, colors, opacities, 16, 16, 16, offsets, flatten_ids, backend=backend)
    # alpha clamps at 0.999 -> the back one would bring T to 1e-6 < 1e-4, so it is never composited
    assert_close(out[0, ..., 1], torch.zeros(16, 16, dtype=torch.float64), "hidden colour", atol=0)
    assert (out[0, ..., 0] > 0.99).all() and (alpha > 0.99).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_empty_scene_renders_the_background(interpret_triton, backend):
    empty = torch.zeros(2, 0, 2)
    background = torch.tensor([[0.2, 0.4], [0.6, 0.8]])
    out, alpha = rasterize_to_pixels(empty, torch.zeros(2, 0, 3), torch.zeros(2, 0, 2), torch.zeros(2, 0), 20, 10, 16,
                                     torch.zeros(2, 1, 2, dtype=torch.int32), torch.zeros(0, dtype=torch.int32),
                                     backgrounds=background, backend=backend)
    assert torch.equal(out, background[:, None, None, :].expand(2, 10, 20, 2)) and (alpha == 0).all()


def test_twin_gradcheck():
    s = random_splats(1, 4, 10, 9, 2, seed=3)
    inputs = [s[k].clone().requires_grad_() for k in ("means2d", "conics", "colors", "opacities", "backgrounds")]

    def render(means2d, conics, colors, opacities, backgrounds):
        return reference.rasterize_to_pixels(means2d, conics, colors, opacities, 10, 9, 16, s["isect_offsets"],
                                             s["flatten_ids"], backgrounds=backgrounds)

    assert torch.autograd.gradcheck(render, inputs, atol=1e-6)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(image_width=0), ValueError, "image_width"),
        (dict(conics=torch.zeros(1, 3, 3)), ValueError, "conics"),
        (dict(opacities=torch.zeros(1, 3)), ValueError, "opacities"),
        (dict(colors=torch.zeros(1, 2, 0)), ValueError, "at least one channel"),
        (dict(flatten_ids=torch.zeros(0, dtype=torch.int64)), ValueError, "flatten_ids"),
        (dict(backgrounds=torch.zeros(1, 4)), ValueError, "backgrounds"),
        (dict(isect_offsets=torch.zeros(1, 1, 1, dtype=torch.int32)), ValueError, "smaller than"),
        (dict(backend="cuda"), ValueError, "backend"),
    ],
)
def test_bad_input_names_the_argument(change, error, match):
    args = dict(means2d=torch.zeros(1, 2, 2), conics=torch.zeros(1, 2, 3), colors=torch.zeros(1, 2, 3),
                opacities=torch.zeros(1, 2), image_width=20, image_height=10, tile_size=16,
                isect_offsets=torch.zeros(1, 1, 2, dtype=torch.int32), flatten_ids=torch.zeros(0, dtype=torch.int32))
    args.update(change)
    with pytest.raises(error, match=match):
        rasterize_to_pixels(**args)


@pytest.mark.parametrize("output", ["colors", "alphas"])
def test_loss_of_one_output_matches_twin(interpret_triton, output):
    """A loss of the colours or the alphas alone: autograd hands the backward no gradient (None) for the
    other, and the kernel reads none for the alphas or zeros for the colours; gradients as the twin's."""
    s = random_splats(1, 33, 24, 20, 3, 5, 16)
    grads = []
    for dtype, backend in ((torch.float32, "triton"), (torch.float64, "torch")):
        inputs = [s[k].to(dtype).clone().requires_grad_() for k in ("means2d", "conics", "colors", "opacities")]
        colors, alphas = rasterize_to_pixels(*inputs, 24, 20, 16, s["isect_offsets"], s["flatten_ids"],
                                             backend=backend)
        ((colors if output == "colors" else alphas) ** 2).sum().backward()
        grads.append([t.grad if t.grad is not None else torch.zeros_like(t) for t in inputs])
    for name, a, e in zip(NAMES[2:6], *grads):
        assert_close(a, e, f"{name} ({output} alone)", atol=1e-4 * max(float(e.abs().max()), 1.0))


@pytest.mark.parametrize("layout", ["broadcast", "rows and columns swapped", "image dims swapped"])
def test_image_gradients_of_any_layout_match_twin(interpret_triton, layout):
    """The backward reads the images' gradients through their strides: a .sum() loss's broadcast gradient (strides
    0), a transposed one, and one whose image dims no single stride walks (read from a dense copy)."""
    s = random_splats(6, 33, 24, 20, 3, 11, 16)
    height, width = 20, 24
    g = torch.Generator().manual_seed(5)
    weights = [torch.rand(3, 2, width, height, c, generator=g, dtype=torch.float64) for c in (3, 1)]
    swapped = [w.reshape(2, 3, width, height, -1) for w in weights]  # (colors.transpose(-3, -2)'s shape, dense)
    grads = []
    for dtype, backend in ((torch.float32, "triton"), (torch.float64, "torch")):
        inputs = [s[k].to(dtype).reshape(2, 3, 33, -1).squeeze(-1).clone().requires_grad_()
                  for k in ("means2d", "conics", "colors", "opacities")]
        colors, alphas = rasterize_to_pixels(*inputs, width, height, 16, s["isect_offsets"].reshape(2, 3, 2, 2),
                                             s["flatten_ids"], backend=backend)
        if layout == "broadcast":
            loss = 0.7 * colors.sum() + 0.3 * alphas.sum()
        elif layout == "rows and columns swapped":
            # the gradient: rows a channel apart, columns a column of the weights apart
            loss = sum((x.transpose(-3, -2) * w.to(dtype)).sum() for x, w in zip((colors, alphas), swapped))
        else:
            loss = sum((x.permute(1, 0, 3, 2, 4) * w.to(dtype)).sum() for x, w in zip((colors, alphas), weights))
        loss.backward()
        grads.append([t.grad for t in inputs])
    for name, a, e in zip(NAMES[2:6], *grads):
        assert_close(a, e, f"{name} ({layout})", atol=1e-4 * max(float(e.abs().max()), 1.0))


def test_a_call_autograd_does_not_record_renders_the_same(interpret_triton):
    """Under torch.no_grad() the forward skips what only a backward reads (per-pixel last ids), even for inputs that
    need gradients: what it renders must be a recorded call's, bit for bit."""
    s = random_splats(2, 70, 40, 36, 3, 9, 16)
    inputs = [s[k].clone().requires_grad_() for k in ("means2d", "conics", "colors", "opacities")]
    recorded = rasterize_to_pixels(*inputs, 40, 36, 16, s["isect_offsets"], s["flatten_ids"], backend="triton")
    with torch.no_grad():
        unrecorded = rasterize_to_pixels(*inputs, 40, 36, 16, s["isect_offsets"], s["flatten_ids"], backend="triton")
    assert recorded[0].requires_grad and not unrecorded[0].requires_grad
    for a, b in zip(recorded, unrecorded):
        assert torch.equal(a.detach(), b)
