"""Fixed-shape rendering replayed from a CUDA graph: one graph launch per frame instead of a dozen
kernel launches and a host sync.

``rasterization(..., max_intersections=M)`` never waits for the GPU, so a per-frame function built
on it can be captured once and replayed. ``CudaGraphFrame`` does the capture, sizes the bound from
the real intersection count, and re-captures with a larger bound when a frame does not fit, so a
frame is never returned with intersections missing.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

# frame(*inputs, max_intersections=M) -> (outputs, n_isects): n_isects [k] holds the real
# intersection count of each rasterization call in the frame
BoundedFrame = Callable[..., tuple[Sequence[Tensor], Tensor]]


class CudaGraphFrame:
    """``frame(*inputs)`` replayed from a CUDA graph captured for the inputs' shapes.

    ``frame(*inputs, max_intersections=M)`` must do all its GPU work on its inputs, return
    ``(outputs, n_isects)`` and call ``rasterization`` with that bound. Calls copy the inputs into
    the graph's buffers, replay it and check the counts (one sync, when the frame is finished
    anyway); a frame that did not fit is captured again with ``headroom`` times its count and
    replayed. The returned outputs are the graph's buffers: valid until the next call (clone them
    to keep them).
    """

    def __init__(self, frame: BoundedFrame, headroom: float = 1.25, min_intersections: int = 1 << 16):
        if headroom < 1:
            raise ValueError(f"headroom must be >= 1, got {headroom}")
        self.frame = frame
        self.headroom = headroom
        self.max_intersections = min_intersections
        self.captures = 0  # how many times a graph was captured (grows when frames outgrow the bound)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._key: tuple | None = None

    def __call__(self, *inputs: Tensor) -> Sequence[Tensor]:
        key = tuple((x.shape, x.dtype, x.device) for x in inputs)
        if key != self._key:
            if not all(x.is_cuda for x in inputs):
                raise ValueError("CudaGraphFrame needs CUDA tensors")
            self._capture(inputs, key)
        self._replay(inputs)
        if self._outgrew(int(self._n_isects.max())):
            self._capture(inputs, key)
            self._replay(inputs)
        return self._outputs

    def _outgrew(self, needed: int) -> bool:
        """Whether a frame needed more intersections than the bound; if so, raise the bound."""
        if needed <= self.max_intersections:
            return False
        self.max_intersections = math.ceil(needed * self.headroom)
        return True

    def _replay(self, inputs: Sequence[Tensor]) -> None:
        for buffer, x in zip(self._inputs, inputs):
            buffer.copy_(x)
        self._graph.replay()

    def _capture(self, inputs: Sequence[Tensor], key: tuple) -> None:
        self._inputs = [x.detach().clone() for x in inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # compile kernels and find the count outside the capture
            while True:
                _, n_isects = self.frame(*self._inputs, max_intersections=self.max_intersections)
                if not self._outgrew(int(n_isects.max())):
                    break
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._outputs, self._n_isects = self.frame(*self._inputs, max_intersections=self.max_intersections)
        self._key = key
        self.captures += 1
