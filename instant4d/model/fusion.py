"""The learned per-Gaussian path: motion code -> (scale, shift) -> local fusion -> Gaussian decoder.

``LocalFusion`` owns every weight of the paper's local fusion and Gaussian decoder and runs them
through :func:`instant4d.kernels.fusion.local_fusion` (one fused Triton
kernel on CUDA, its PyTorch twin elsewhere).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import shapes
from ..kernels.fusion import FusedGaussians, FusionConfig, FusionWeights, local_fusion


class LocalFusion(nn.Module):
    """Deforms per-Gaussian features by a motion code and decodes B frames of Gaussians.

    The modulation is the paper's ``Linear_{Cm -> 2F}(c)``: ``scale_shift = c @ w_ada + b_ada``. Its
    bias starts at scale 1, shift 0, so that at initialisation ``LayerNorm(m) * scale + shift`` is
    the plain LayerNorm whatever the code (the issue's form ``c @ W_ada`` is the bias-free case).
    """

    def __init__(self, config: FusionConfig = FusionConfig(), *, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.config = config
        f, cm = config.feature_dim, config.motion_dim
        bound = 1.0 / math.sqrt(cm)
        self.w_ada = nn.Parameter((torch.rand(cm, 2 * f, generator=generator) * 2 - 1) * bound)  # [Cm, 2F]
        self.b_ada = nn.Parameter(torch.cat([torch.ones(f), torch.zeros(f)]))  # [2F]
        init = FusionWeights.init(config, generator=generator)
        for name, tensor in zip(config.weight_shapes(), init.tensors()):
            setattr(self, name, nn.Parameter(tensor))

    @property
    def weights(self) -> FusionWeights:
        """The parameters as one FusionWeights, kept while they are the same tensors, so that the
        Triton path reuses its packed weights (it repacks after any in-place update)."""
        params = tuple(getattr(self, name) for name in self.config.weight_shapes())
        cached = self.__dict__.get("_weights")
        if cached is None or any(a is not b for a, b in zip(cached.tensors(), params)):
            cached = self.__dict__["_weights"] = FusionWeights(*params)
        return cached

    def forward(
        self,
        features: Tensor,  # [N, F]
        motion_basis: Tensor,  # [N, F]
        anchors: Tensor,  # [N, 3]
        motion_code: Tensor,  # [B, Cm]
        *,
        return_delta: bool = False,
        backend: Optional[str] = None,
    ) -> FusedGaussians:
        """B frames of Gaussians ([B, N, ...] tensors), computed in the features' dtype."""
        shapes.check_tensor("motion_code", motion_code, (None, self.config.motion_dim))
        dtype = features.dtype
        scale_shift = torch.addmm(self.b_ada.to(dtype), motion_code.to(dtype), self.w_ada.to(dtype))  # [B, 2F]
        weights = self.weights
        if weights.w_in.dtype != dtype:
            weights = FusionWeights(*(w.to(dtype) for w in weights.tensors()))
        return local_fusion(features, motion_basis, anchors, scale_shift, weights, self.config,
                            return_delta=return_delta, backend=backend)
