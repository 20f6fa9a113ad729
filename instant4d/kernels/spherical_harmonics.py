"""View-dependent colour from spherical harmonics (gsplat 1.5.3's ``spherical_harmonics``).

Math: with n = d / max(|d|, 1e-12) (``F.normalize``), colour_ch = sum_{k < (l+1)^2} Y_k(n) coeffs[k, ch]
over the real SH bases Y_k of degree <= l in gsplat's order and signs (Sloan, "Efficient Spherical
Harmonic Evaluation", JCGT 2013; Condon-Shortley phase). Backward: v_coeffs[k, ch] = Y_k(n) v_colour_ch
and v_d = (g - (g . n) n) / |d| with g = sum_k (sum_ch v_colour_ch coeffs[k, ch]) grad Y_k(n).
Masked points (``masks`` False) give colour 0 and zero gradients.

Work split: one program per block of BLOCK points; each lane evaluates the bases of its point once
for all three channels (unrolled over k at compile time) and reads its K x 3 coefficients.

Limits: degrees 0 to 3 (gsplat also has 4); float32 compute (float64 inputs are cast and the outputs
cast back); at degree 0 the colour does not depend on dirs, so dirs get no gradient (None).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import shapes
from ..backend import resolve_backend
from ._triton import cdiv, launch_kernel, tl, triton
from . import reference

BLOCK = 128  # points per program: one coalesced load per direction component, 16 bases in registers
MAX_DEGREE = 3

if triton is not None:

    @triton.jit
    def _sh_basis(k: tl.constexpr, x, y, z):
        """Y_k at the unit direction (x, y, z)."""
        if k == 0:
            value = x * 0.0 + 0.2820947917738781
        elif k == 1:
            value = -0.48860251190292 * y
        elif k == 2:
            value = 0.48860251190292 * z
        elif k == 3:
            value = -0.48860251190292 * x
        elif k == 4:
            value = 0.5462742152960395 * (2.0 * x * y)
        elif k == 5:
            value = -1.092548430592079 * z * y
        elif k == 6:
            value = 0.9461746957575601 * z * z - 0.3153915652525201
        elif k == 7:
            value = -1.092548430592079 * z * x
        elif k == 8:
            value = 0.5462742152960395 * (x * x - y * y)
        elif k == 9:
            value = -0.5900435899266435 * (3.0 * x * x - y * y) * y
        elif k == 10:
            value = 1.445305721320277 * z * (2.0 * x * y)
        elif k == 11:
            value = (-2.285228997322329 * z * z + 0.4570457994644658) * y
        elif k == 12:
            value = z * (1.865881662950577 * z * z - 1.119528997770346)
        elif k == 13:
            value = (-2.285228997322329 * z * z + 0.4570457994644658) * x
        elif k == 14:
            value = 1.445305721320277 * z * (x * x - y * y)
        else:
            value = -0.5900435899266435 * (x * x - 3.0 * y * y) * x
        return value

    @triton.jit
    def _sh_basis_grad(k: tl.constexpr, x, y, z):
        """(dY_k/dx, dY_k/dy, dY_k/dz) at (x, y, z), treating the three as independent."""
        zero = x * 0.0
        if k == 0:
            gx, gy, gz = zero, zero, zero
        elif k == 1:
            gx, gy, gz = zero, zero - 0.48860251190292, zero
        elif k == 2:
            gx, gy, gz = zero, zero, zero + 0.48860251190292
        elif k == 3:
            gx, gy, gz = zero - 0.48860251190292, zero, zero
        elif k == 4:
            gx, gy, gz = 2.0 * 0.5462742152960395 * y, 2.0 * 0.5462742152960395 * x, zero
        elif k == 5:
            gx, gy, gz = zero, -1.092548430592079 * z, -1.092548430592079 * y
        elif k == 6:
            gx, gy, gz = zero, zero, 2.0 * 0.9461746957575601 * z
        elif k == 7:
            gx, gy, gz = -1.092548430592079 * z, zero, -1.092548430592079 * x
        elif k == 8:
            gx, gy, gz = 2.0 * 0.5462742152960395 * x, -2.0 * 0.5462742152960395 * y, zero
        elif k == 9:
            gx = -0.5900435899266435 * 6.0 * x * y
            gy = -0.5900435899266435 * 3.0 * (x * x - y * y)
            gz = zero
        elif k == 10:
            gx = 2.0 * 1.445305721320277 * y * z
            gy = 2.0 * 1.445305721320277 * x * z
            gz = 2.0 * 1.445305721320277 * x * y
        elif k == 11:
            gx, gy, gz = zero, -2.285228997322329 * z * z + 0.4570457994644658, -2.0 * 2.285228997322329 * z * y
        elif k == 12:
            gx, gy, gz = zero, zero, 3.0 * 1.865881662950577 * z * z - 1.119528997770346
        elif k == 13:
            gx, gy, gz = -2.285228997322329 * z * z + 0.4570457994644658, zero, -2.0 * 2.285228997322329 * z * x
        elif k == 14:
            gx = 2.0 * 1.445305721320277 * z * x
            gy = -2.0 * 1.445305721320277 * z * y
            gz = 1.445305721320277 * (x * x - y * y)
        else:
            gx = -0.5900435899266435 * 3.0 * (x * x - y * y)
            gy = 0.5900435899266435 * 6.0 * x * y
            gz = zero
        return gx, gy, gz

    @triton.jit
    def _points(dirs_ptr, masks_ptr, n_points, HAS_MASKS: tl.constexpr, BLOCK: tl.constexpr):
        """This program's point ids, which are in range, which are unmasked, and their unit directions."""
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        in_range = i < n_points
        active = in_range
        if HAS_MASKS:
            active = active & (tl.load(masks_ptr + i, mask=in_range, other=0) != 0)
        dx = tl.load(dirs_ptr + i * 3, mask=in_range, other=0.0)
        dy = tl.load(dirs_ptr + i * 3 + 1, mask=in_range, other=0.0)
        dz = tl.load(dirs_ptr + i * 3 + 2, mask=in_range, other=0.0)
        inv_norm = 1.0 / tl.maximum(tl.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
        return i, in_range, active, dx * inv_norm, dy * inv_norm, dz * inv_norm, inv_norm

    @triton.jit
    def _sh_fwd_kernel(dirs_ptr, coeffs_ptr, masks_ptr, colors_ptr, n_points, K,
                       DEGREE: tl.constexpr, HAS_MASKS: tl.constexpr, BLOCK: tl.constexpr):
        i, in_range, active, x, y, z, _ = _points(dirs_ptr, masks_ptr, n_points, HAS_MASKS, BLOCK)
        row = coeffs_ptr + i * K * 3
        red = tl.zeros([BLOCK], dtype=tl.float32)
        green = tl.zeros([BLOCK], dtype=tl.float32)
        blue = tl.zeros([BLOCK], dtype=tl.float32)
        for k in tl.static_range((DEGREE + 1) * (DEGREE + 1)):
            basis = _sh_basis(k, x, y, z)
            red += basis * tl.load(row + k * 3, mask=active, other=0.0)
            green += basis * tl.load(row + k * 3 + 1, mask=active, other=0.0)
            blue += basis * tl.load(row + k * 3 + 2, mask=active, other=0.0)
        tl.store(colors_ptr + i * 3, tl.where(active, red, 0.0), mask=in_range)
        tl.store(colors_ptr + i * 3 + 1, tl.where(active, green, 0.0), mask=in_range)
        tl.store(colors_ptr + i * 3 + 2, tl.where(active, blue, 0.0), mask=in_range)

    @triton.jit
    def _sh_bwd_kernel(dirs_ptr, coeffs_ptr, masks_ptr, v_colors_ptr, v_coeffs_ptr, v_dirs_ptr, n_points, K,
                       DEGREE: tl.constexpr, HAS_MASKS: tl.constexpr, V_DIRS: tl.constexpr,
                       BLOCK: tl.constexpr):
        i, in_range, active, x, y, z, inv_norm = _points(dirs_ptr, masks_ptr, n_points, HAS_MASKS, BLOCK)
        v_red = tl.load(v_colors_ptr + i * 3, mask=active, other=0.0)
        v_green = tl.load(v_colors_ptr + i * 3 + 1, mask=active, other=0.0)
        v_blue = tl.load(v_colors_ptr + i * 3 + 2, mask=active, other=0.0)
        row = coeffs_ptr + i * K * 3
        v_row = v_coeffs_ptr + i * K * 3
        v_x = tl.zeros([BLOCK], dtype=tl.float32)
        v_y = tl.zeros([BLOCK], dtype=tl.float32)
        v_z = tl.zeros([BLOCK], dtype=tl.float32)
        for k in tl.static_range((DEGREE + 1) * (DEGREE + 1)):
            basis = _sh_basis(k, x, y, z)
            tl.store(v_row + k * 3, basis * v_red, mask=active)
            tl.store(v_row + k * 3 + 1, basis * v_green, mask=active)
            tl.store(v_row + k * 3 + 2, basis * v_blue, mask=active)
            if V_DIRS:
                v_basis = (v_red * tl.load(row + k * 3, mask=active, other=0.0)
                           + v_green * tl.load(row + k * 3 + 1, mask=active, other=0.0)
                           + v_blue * tl.load(row + k * 3 + 2, mask=active, other=0.0))
                gx, gy, gz = _sh_basis_grad(k, x, y, z)
                v_x += v_basis * gx
                v_y += v_basis * gy
                v_z += v_basis * gz
        if V_DIRS:
            # through the normalisation d / |d|: drop the radial part, scale by 1 / |d|
            radial = v_x * x + v_y * y + v_z * z
            tl.store(v_dirs_ptr + i * 3, tl.where(active, (v_x - radial * x) * inv_norm, 0.0), mask=in_range)
            tl.store(v_dirs_ptr + i * 3 + 1, tl.where(active, (v_y - radial * y) * inv_norm, 0.0), mask=in_range)
            tl.store(v_dirs_ptr + i * 3 + 2, tl.where(active, (v_z - radial * z) * inv_norm, 0.0), mask=in_range)


class _SphericalHarmonics(torch.autograd.Function):
    """Colours of float32 contiguous points with flattened batch dims."""

    @staticmethod
    def forward(
        ctx,
        degree: int,
        dirs: Tensor,  # [P, 3]
        coeffs: Tensor,  # [P, K, 3]
        masks: Optional[Tensor],  # [P] uint8 or None
    ) -> Tensor:
        n_points = dirs.shape[0]
        colors = torch.empty_like(dirs)
        if n_points > 0:
            launch_kernel(_sh_fwd_kernel, (cdiv(n_points, BLOCK),),
                dirs, coeffs, masks if masks is not None else dirs, colors, n_points, coeffs.shape[1],
                DEGREE=degree, HAS_MASKS=masks is not None, BLOCK=BLOCK)
        ctx.save_for_backward(dirs, coeffs, masks)
        ctx.degree = degree
        return colors

    @staticmethod
    def backward(ctx, v_colors: Tensor):
        dirs, coeffs, masks = ctx.saved_tensors
        n_points = dirs.shape[0]
        v_dirs_needed = ctx.needs_input_grad[1] and ctx.degree > 0
        v_coeffs = torch.zeros_like(coeffs)
        v_dirs = torch.empty_like(dirs) if v_dirs_needed else None
        if n_points > 0:
            launch_kernel(_sh_bwd_kernel, (cdiv(n_points, BLOCK),),
                dirs, coeffs, masks if masks is not None else dirs, v_colors.contiguous(), v_coeffs,
                v_dirs if v_dirs_needed else dirs, n_points, coeffs.shape[1],
                DEGREE=ctx.degree, HAS_MASKS=masks is not None, V_DIRS=v_dirs_needed, BLOCK=BLOCK)
        elif v_dirs_needed:
            v_dirs.zero_()
        return None, v_dirs, v_coeffs, None


def spherical_harmonics(
    degrees_to_use: int,
    dirs: Tensor,  # [..., 3] view directions, need not be normalised
    coeffs: Tensor,  # [..., K, 3] with K >= (degrees_to_use + 1)^2; bases beyond that are ignored
    masks: Optional[Tensor] = None,  # [...] bool, False -> colour 0 and no gradient
    *,
    backend: Optional[str] = None,
) -> Tensor:
    """Colours [..., 3] from SH coefficients: a drop-in for gsplat 1.5.3's ``spherical_harmonics``
    (degrees 0 to 3). Gradients reach coeffs and dirs. ``backend`` is "auto" | "triton" | "torch"."""
    if isinstance(degrees_to_use, bool) or not isinstance(degrees_to_use, int) or not (
        0 <= degrees_to_use <= MAX_DEGREE
    ):
        raise ValueError(f"degrees_to_use must be an int in [0, {MAX_DEGREE}], got {degrees_to_use!r}")
    if not isinstance(dirs, Tensor) or dirs.dim() < 1:
        raise ValueError(f"dirs must have shape [..., 3], got {getattr(dirs, 'shape', type(dirs).__name__)}")
    batch = list(dirs.shape[:-1])
    shapes.check_tensor("dirs", dirs, [*batch, 3], dtypes=(torch.float32, torch.float64))
    shapes.check_tensor("coeffs", coeffs, [*batch, None, 3], dtypes=(dirs.dtype,), device=dirs.device)
    n_bases = coeffs.shape[-2]
    if n_bases < (degrees_to_use + 1) ** 2:
        raise ValueError(
            f"coeffs must have at least (degrees_to_use + 1)^2 = {(degrees_to_use + 1) ** 2} bases "
            f"(dim -2), got {n_bases}")
    if masks is not None:
        shapes.check_tensor("masks", masks, batch, dtypes=(torch.bool,), device=dirs.device)
    if resolve_backend(backend, dirs, coeffs, masks) == "torch":
        return reference.spherical_harmonics(degrees_to_use, dirs, coeffs, masks)
    colors = _SphericalHarmonics.apply(
        degrees_to_use,
        dirs.float().reshape(-1, 3).contiguous(),
        coeffs.float().reshape(-1, n_bases, 3).contiguous(),
        None if masks is None else masks.reshape(-1).contiguous().view(torch.uint8),
    )
    return colors.to(dirs.dtype).reshape(*batch, 3)
