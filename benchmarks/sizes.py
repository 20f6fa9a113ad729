"""The one registry of benchmark sizes. CPU runs time the PyTorch twins at small sizes; GPU runs time
the Triton path at the sizes of docs/benchmarks.md."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RasterSize:
    gaussians: int
    pixels: int  # square images
    cameras: int = 1

    @property
    def id(self) -> str:
        return f"{self.gaussians // 1000}k-{self.pixels}px-{self.cameras}cam"


CPU_RASTER_SIZES = [RasterSize(2_000, 128), RasterSize(20_000, 256)]
GPU_RASTER_SIZES = [
    RasterSize(n, px, c) for n in (20_000, 100_000, 250_000, 1_000_000) for px in (512, 1024) for c in (1, 8)
]


def raster_sizes() -> list[RasterSize]:
    return GPU_RASTER_SIZES if torch.cuda.is_available() else CPU_RASTER_SIZES
