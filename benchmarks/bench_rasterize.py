"""``pytest benchmarks/bench_rasterize.py --benchmark-only``: rasterization forward and forward+backward
over the size registry (the twin on CPU, the Triton kernels on a GPU), head-like scenes."""

import pytest
import torch

import instant4d
from instant4d.gaussians import head_like_scene
from sizes import raster_sizes

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _scene(size, requires_grad):
    scene = head_like_scene(size.gaussians, size.pixels, size.pixels, n_cameras=size.cameras).to(DEVICE)
    return scene.requires_grad_() if requires_grad else scene


def _render(scene):
    return instant4d.rasterization(scene.means, scene.quats, scene.scales, scene.opacities, scene.colors,
                                   scene.viewmats, scene.Ks, scene.width, scene.height, packed=False)


def _record(benchmark, size):
    mean_s = benchmark.stats.stats.mean if benchmark.stats else float("nan")
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        ms_per_frame=1e3 * mean_s / size.cameras,
        gaussians_per_s=size.gaussians * size.cameras / mean_s,
        peak_mb=torch.cuda.max_memory_allocated() / 2**20 if DEVICE == "cuda" else None,
    )


@pytest.mark.parametrize("size", raster_sizes(), ids=lambda s: s.id)
def test_rasterize_forward(benchmark, size):
    scene = _scene(size, requires_grad=False)

    def run():
        colors, alphas, _ = _render(scene)
        _sync()
        return colors

    colors = benchmark(run)
    assert colors.shape == (size.cameras, size.pixels, size.pixels, 3) and torch.isfinite(colors).all()
    _record(benchmark, size)


@pytest.mark.parametrize("size", raster_sizes(), ids=lambda s: s.id)
def test_rasterize_forward_backward(benchmark, size):
    scene = _scene(size, requires_grad=True)

    def run():
        colors, alphas, _ = _render(scene)
        (colors.sum() + alphas.sum()).backward()
        _sync()
        return scene.means.grad

    grad = benchmark(run)
    assert grad is not None and torch.isfinite(grad).all()
    _record(benchmark, size)
