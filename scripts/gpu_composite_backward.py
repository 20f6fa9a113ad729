"""GPU: the compositing backward kernel alone, the package's against the kernel it replaced.

    PYTHONPATH=.:scripts python scripts/gpu_composite_backward.py          # H100: ~1-2 minutes
    PYTHONPATH=.:scripts python scripts/gpu_composite_backward.py --tiny   # CPU, Triton interpreter
    PYTHONPATH=.:scripts python scripts/gpu_composite_backward.py --sweep  # also other blocks / warps

For head-like scenes (gpu_compare's), renders once through ``instant4d.rasterization`` (Triton path)
and keeps the backward kernel's launch, then times each kernel on exactly those inputs
(``triton.testing.do_bench`` medians; float atomics add into buffers that are not cleared between
calls, which costs the same) and compares its gradients with the old kernel's: max |x - ref| /
max |ref| per gradient. "(a) again" reruns the old kernel: the float atomics' own noise floor.

Kernels: (a) the kernel as of commit ecb9ab5 (16 Gaussians a block, atomics with the default acq_rel
ordering), copied here so that it stays timeable; (b) the package's (relaxed atomics, 8 a block),
with ``--sweep`` also at other block sizes and warp counts. A kernel that fails prints its error and
the others still run. Measured (H100, 2026-11-25, docs/benchmarks.md): relaxed atomics 1.41-1.44x,
8 a block another 1.3-1.4x. The barrier-free variant timed alongside (v3) was removed after it
lost; its last timed form is on branch composite-v3 (this script at commit 0e94431 holds the first).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

import torch

if not torch.cuda.is_available():  # decided when kernels are decorated, so before importing them
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
import triton.testing  # noqa: E402

import instant4d  # noqa: E402
from instant4d.gaussians import head_like_scene  # noqa: E402
from instant4d.kernels import composite  # noqa: E402
from instant4d.kernels._triton import launch_kernel  # noqa: E402
from instant4d.kernels.composite import _add6, _alphas, _load_block, _tile_setup  # noqa: E402

GRADS = ("v_means2d", "v_conics", "v_colors", "v_opacities")
# the backward kernel's positional arguments: where flatten_ids and the gradient outputs are
FLATTEN_IDS, FIRST_OUTPUT, N_OUTPUTS = 6, 12, 6
SCENES = ((100_000, 512, 1), (1_000_000, 1024, 1), (100_000, 512, 8))
TINY_SCENES = ((120, 32, 1), (80, 16, 2))  # the interpreter takes seconds a tile


# ---- (a): the backward kernel as of commit ecb9ab5, copied; the helpers it calls are unchanged since
# and come from the package

@triton.jit
def _add_gradient(targets, record_slots, value, mask, DETERMINISTIC: tl.constexpr):
    """Accumulate a per-(tile, Gaussian) gradient: an atomic add into the Gaussian's gradient, or
    (deterministic mode) a store into the intersection's own record, summed later in a fixed order."""
    if DETERMINISTIC:
        tl.store(record_slots, value, mask=mask)
    else:
        tl.atomic_add(targets, value, mask=mask)


# Tensors are [BLOCK_G, P] with the pixel axis last and one warp per 32 pixels, so each thread
# owns a pixel and walks the block's Gaussians in registers: the transmittance scan and the
# colour sums never leave the thread. Only per-Gaussian gradients reduce across the tile.


@triton.jit
def old_backward_kernel(
    means2d_ptr, conics_ptr, colors_ptr, opacities_ptr, tile_mask_ptr, offsets_ptr, flatten_ids_ptr,
    out_colors_ptr, out_transmittance_ptr, last_ids_ptr, v_out_colors_ptr, v_out_alphas_ptr,
    v_means2d_ptr, v_absgrad_ptr, v_conics_ptr, v_colors_ptr, v_opacities_ptr, records_ptr,
    n_isects, n_flat_tiles, n_tiles, tile_width, image_width, image_height,
    TILE: tl.constexpr, TILE_PAD: tl.constexpr, CHANNELS: tl.constexpr, CHANNELS_PAD: tl.constexpr,
    BLOCK_G: tl.constexpr, HAS_MASK: tl.constexpr, USE_DOT: tl.constexpr, ABSGRAD: tl.constexpr,
    DETERMINISTIC: tl.constexpr, RECORD_WIDTH: tl.constexpr,
):
    # a record per intersection (deterministic mode): dL/d(mean x, mean y, conic a, b, c, opacity),
    # then dL/dcolour, then |dL/dmean| (absgrad)
    RECORD_COLORS: tl.constexpr = 6
    # no count needed here in bounded mode: every pixel stops at its last composited Gaussian
    image, pixel, inside, fx, fy, start, end = _tile_setup(
        offsets_ptr, tile_mask_ptr, n_isects, n_flat_tiles, n_tiles, tile_width, image_width,
        image_height, TILE, TILE_PAD, HAS_MASK, TILE_PAD * TILE_PAD)  # one program a tile
    ch = tl.arange(0, CHANNELS_PAD)
    ch_ok = ch < CHANNELS
    pix_ch = pixel[None, :] * CHANNELS + ch[:, None]
    pix_ch_ok = inside[None, :] & ch_ok[:, None]
    g_col = tl.load(v_out_colors_ptr + pix_ch, mask=pix_ch_ok, other=0.0)  # [CHANNELS_PAD, P]
    out_col = tl.load(out_colors_ptr + pix_ch, mask=pix_ch_ok, other=0.0)
    g_alpha = tl.load(v_out_alphas_ptr + pixel, mask=inside, other=0.0)
    final_t = tl.load(out_transmittance_ptr + pixel, mask=inside, other=1.0)
    last = tl.load(last_ids_ptr + pixel, mask=inside, other=-1)
    g_dot_out = tl.sum(g_col * out_col, axis=0)
    g_final = g_alpha * final_t
    end = tl.minimum(end, tl.max(last, axis=0) + 1)
    transmittance = tl.full([TILE_PAD * TILE_PAD], 1.0, tl.float32)
    front = tl.zeros([TILE_PAD * TILE_PAD], tl.float32)
    b = start
    # the next block is loaded one iteration ahead, so that the loads' latency (ids, then the
    # Gaussians they point to) overlaps this block's arithmetic: 10-16% faster on an H100
    j = b + tl.arange(0, BLOCK_G)
    n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity = _load_block(
        means2d_ptr, conics_ptr, opacities_ptr, flatten_ids_ptr, j, j < end)
    while b < end:
        j = b + tl.arange(0, BLOCK_G)
        in_range = j < end
        ids, mx, my, ca, cb, cc, opacity = n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity
        n_ids, n_mx, n_my, n_ca, n_cb, n_cc, n_opacity = _load_block(
            means2d_ptr, conics_ptr, opacities_ptr, flatten_ids_ptr, j + BLOCK_G, j + BLOCK_G < end)
        record = records_ptr + j.to(tl.int64) * RECORD_WIDTH  # [BLOCK_G] (deterministic mode)
        dx, dy, sigma, raw, alpha, valid = _alphas(mx, my, ca, cb, cc, opacity, fx, fy, in_range)
        included = (j[:, None] <= last[None, :]) & inside[None, :]
        t_incl = transmittance[None, :] * tl.cumprod(1.0 - alpha, axis=0)
        inv_one_minus = tl.fdiv(1.0, 1.0 - alpha)  # alpha <= 0.999: the approximate reciprocal is exact enough
        weight = tl.where(included, alpha * (t_incl * inv_one_minus), 0.0)
        if USE_DOT:
            col = tl.load(colors_ptr + ids[:, None] * CHANNELS + ch[None, :],
                          mask=in_range[:, None] & ch_ok[None, :], other=0.0)  # [BLOCK_G, CHANNELS_PAD]
            u = tl.dot(col, g_col, input_precision="ieee")  # [BLOCK_G, P]
            v_col = tl.dot(weight, tl.trans(g_col), input_precision="ieee")  # [BLOCK_G, CHANNELS_PAD]
            _add_gradient(v_colors_ptr + ids[:, None] * CHANNELS + ch[None, :],
                          record[:, None] + RECORD_COLORS + ch[None, :], v_col,
                          in_range[:, None] & ch_ok[None, :], DETERMINISTIC)
        else:
            u = tl.zeros([BLOCK_G, TILE_PAD * TILE_PAD], tl.float32)
            for c in tl.static_range(CHANNELS):
                g_c = tl.sum(tl.where(ch[:, None] == c, g_col, 0.0), axis=0)  # row c, in-thread
                col_c = tl.load(colors_ptr + ids * CHANNELS + c, mask=in_range, other=0.0)
                u += col_c[:, None] * g_c[None, :]
                _add_gradient(v_colors_ptr + ids * CHANNELS + c, record + RECORD_COLORS + c,
                              tl.sum(weight * g_c[None, :], axis=1), in_range, DETERMINISTIC)
        wu = weight * u
        rest = g_dot_out[None, :] - (front[None, :] + tl.cumsum(wu, axis=0))
        # T_j u_j - (rest after j) / (1 - alpha_j) + dL/dalpha_out * T_final / (1 - alpha_j)
        v_alpha = (t_incl * u + g_final[None, :] - rest) * inv_one_minus
        v_alpha = tl.where(included & valid & (raw <= 0.999), v_alpha, 0.0)
        # With v = dL/dsigma = -alpha dL/dalpha, the means and conics need only the moments of v over
        # the pixels: dL/dmean = [[a, b], [b, c]] sum(v d), dL/dconic = sum(v (dx^2/2, dx dy, dy^2/2)),
        # and dL/dopacity = sum(exp(-sigma) dL/dalpha) = -sum(v) / opacity (alpha = o exp(-sigma) there).
        v_sigma = -alpha * v_alpha
        v_dx = v_sigma * dx
        v_dy = v_sigma * dy
        s_dx, s_dy, s_dxdx, s_dxdy, s_dydy, s_v = tl.reduce(
            (v_dx, v_dy, v_dx * dx, v_dx * dy, v_dy * dy, v_sigma), 1, _add6)
        _add_gradient(v_means2d_ptr + ids * 2, record, ca * s_dx + cb * s_dy, in_range, DETERMINISTIC)
        _add_gradient(v_means2d_ptr + ids * 2 + 1, record + 1, cb * s_dx + cc * s_dy, in_range, DETERMINISTIC)
        _add_gradient(v_conics_ptr + ids * 3, record + 2, 0.5 * s_dxdx, in_range, DETERMINISTIC)
        _add_gradient(v_conics_ptr + ids * 3 + 1, record + 3, s_dxdy, in_range, DETERMINISTIC)
        _add_gradient(v_conics_ptr + ids * 3 + 2, record + 4, 0.5 * s_dydy, in_range, DETERMINISTIC)
        _add_gradient(v_opacities_ptr + ids, record + 5, -s_v / tl.where(opacity > 0, opacity, 1.0), in_range,
                      DETERMINISTIC)
        if ABSGRAD:
            v_mx = ca[:, None] * v_dx + cb[:, None] * v_dy
            v_my = cb[:, None] * v_dx + cc[:, None] * v_dy
            _add_gradient(v_absgrad_ptr + ids * 2, record + RECORD_COLORS + CHANNELS,
                          tl.sum(tl.abs(v_mx), axis=1), in_range, DETERMINISTIC)
            _add_gradient(v_absgrad_ptr + ids * 2 + 1, record + RECORD_COLORS + CHANNELS + 1,
                          tl.sum(tl.abs(v_my), axis=1), in_range, DETERMINISTIC)
        transmittance = tl.min(tl.where(included, t_incl, transmittance[None, :]), axis=0)
        front += tl.sum(wu, axis=0)
        b += BLOCK_G

# ---- timing


def capture(scene) -> tuple:
    """Renders the scene forward and backward once; returns the backward kernel's (grid, positional
    arguments, keyword arguments) as the package launched it."""
    seen = []

    def spy(kernel, grid, *args, **kwargs):
        if kernel is composite._composite_backward_kernel:
            seen.append((grid, args, kwargs))
        launch_kernel(kernel, grid, *args, **kwargs)

    leaves = [getattr(scene, k).detach().clone().requires_grad_()
              for k in ("means", "quats", "scales", "opacities", "colors")]
    composite.launch_kernel = spy
    try:
        colors, alphas, _ = instant4d.rasterization(*leaves, scene.viewmats, scene.Ks, scene.width, scene.height,
                                                    packed=False, backend="triton")
        g = torch.Generator(device=colors.device).manual_seed(0)
        loss = ((colors * torch.rand(colors.shape, device=colors.device, generator=g)).sum()
                + (alphas * torch.rand(alphas.shape, device=colors.device, generator=g)).sum())
        loss.backward()
    finally:
        composite.launch_kernel = launch_kernel
    (launch,) = seen
    return launch


def with_outputs(args: tuple) -> tuple[tuple, list]:
    """The arguments with fresh zeroed gradient buffers, and the four gradients to compare."""
    v_means2d = torch.zeros_like(args[FIRST_OUTPUT])
    v_conics, v_colors, v_opacities = (torch.zeros_like(args[FIRST_OUTPUT + k]) for k in (2, 3, 4))
    # v_absgrad and records are unused without absgrad / deterministic mode: the package passes v_means2d
    outputs = (v_means2d, v_means2d, v_conics, v_colors, v_opacities, v_means2d)
    return args[:FIRST_OUTPUT] + outputs + args[FIRST_OUTPUT + N_OUTPUTS:], [v_means2d, v_conics, v_colors, v_opacities]


def variants(kwargs: dict, sweep: bool) -> list:
    """(label, launch(grid, args)) for each kernel, given the package's keyword arguments."""
    def old(grid, args):  # one 4-warp program a tile, where the package's kernel has a warp a part of one
        pixels = kwargs["TILE_PAD"] ** 2
        old_kwargs = {k: v for k, v in kwargs.items() if k != "PIXELS"} | dict(BLOCK_G=16, num_warps=pixels // 64)
        launch_kernel(old_backward_kernel, (grid[0] // (pixels // kwargs["PIXELS"]),), *args, **old_kwargs)

    def package_at(block_g, warps):
        launch_args = kwargs | dict(BLOCK_G=block_g, num_warps=warps)
        return lambda grid, args: launch_kernel(composite._composite_backward_kernel, grid, *args, **launch_args)

    rows = [("(a) old kernel", old), ("(a) again", old), ("(b) package kernel", package_at(kwargs["BLOCK_G"], kwargs["num_warps"]))]
    if sweep:
        rows += [(f"(b) at {g} Gaussians a block, {w} warps", package_at(g, w)) for g, w in ((16, 4), (4, 4), (32, 4), (16, 8), (8, 8))]
    return rows


def bench_ms(fn) -> float:
    if torch.cuda.is_available():
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    return float("nan")  # the interpreter's times mean nothing


def max_rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def run_scene(n: int, size: int, cameras: int, sweep: bool) -> list[str]:
    scene = head_like_scene(n, size, size, n_cameras=cameras, seed=0)
    if torch.cuda.is_available():
        scene = scene.to("cuda")
    grid, args, kwargs = capture(scene)
    name = f"{n // 1000}k, {size}², {cameras} cam" if n >= 1000 else f"{n}, {size}², {cameras} cam"
    print(f"{name}: {args[FLATTEN_IDS].numel()} intersections, {grid[0]} tiles", flush=True)
    rows, ref, ref_ms = [], None, None
    for label, launch in variants(kwargs, sweep):
        try:
            run_args, grads = with_outputs(args)
            launch(grid, run_args)  # compiles; these gradients are the ones compared
            # timed on other buffers: the timed runs add into them (as many times as do_bench runs)
            bench_args, _ = with_outputs(args)
            ms = bench_ms(lambda: launch(grid, bench_args))
        except Exception as error:  # a variant that does not compile or run: say why, time the others
            traceback.print_exc()
            rows.append(f"| {name} | {label} | failed: {type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''} | | |")
            continue
        if ref is None:
            ref, ref_ms = grads, ms
        errors = " / ".join(f"{max_rel(x, r):.1e}" for x, r in zip(grads, ref))
        rows.append(f"| {name} | {label} | {ms:.3f} | {ref_ms / ms:.2f}x | {errors} |")
        print(rows[-1], flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny scenes (for a CPU check under the interpreter)")
    parser.add_argument("--sweep", action="store_true", help="the package kernel at other block sizes and warps too")
    opts = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (Triton interpreter, not timed)"
    rows = []
    for n, size, cameras in TINY_SCENES if opts.tiny else SCENES:
        rows += run_scene(n, size, cameras, opts.sweep)
    print(f"\nDevice: {device}; torch {torch.__version__}, Triton {triton.__version__}, Python {sys.version.split()[0]}.\n")
    print("| scene | kernel | ms (median) | speedup vs (a) | max rel err vs (a): " + " / ".join(GRADS) + " |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
