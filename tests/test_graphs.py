"""instant4d.graphs on a CPU machine: what can be checked without CUDA is that it refuses clearly.

The capture itself (images bit-identical to the eager path, re-capture on overflow, frame rate) is
checked on the GPU by scripts/gpu_avatar.py; results in docs/benchmarks.md.
"""

import pytest
import torch

from instant4d.graphs import CudaGraphFrame
from instant4d.model import Avatar, EncoderConfig


def test_cpu_inputs_are_refused():
    frame = CudaGraphFrame(lambda x, max_intersections: ((x,), torch.zeros(1)))
    with pytest.raises(ValueError, match="CUDA"):
        frame(torch.zeros(3))


def test_headroom_below_one_is_refused():
    with pytest.raises(ValueError, match="headroom"):
        CudaGraphFrame(lambda x, max_intersections: ((x,), torch.zeros(1)), headroom=0.5)


def test_avatar_renderer_needs_cuda_and_our_kernels():
    avatar = Avatar.sample(EncoderConfig(resolution=32))
    with pytest.raises(ValueError, match="cuda_graph=True needs CUDA"):
        avatar.renderer(64, cuda_graph=True)
