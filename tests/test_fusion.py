"""Local fusion + Gaussian decoder: the Triton kernels (interpreter) vs the float64 twin, forward and
every gradient, plus the module, the attribute ranges and the input checks.

Tolerance (the style's flash-attention rule): the kernels round tl.dot operands to bf16, or to fp16
with rows scaled, and do everything else in float32 (weight gradients always from bf16 operands),
so their error against the float64 twin must stay within 2x (outputs) or 3x (gradients) of the
error PyTorch makes running the same twin entirely in that low precision (bfloat16 for bf16
operands, bf16 inputs and weight gradients, float16 otherwise), per quantity, measured as the
largest absolute deviation. With a handful of elements PyTorch can be
exact by luck, so the bound never drops below 4 unit roundoffs of that precision (2^-11, 2^-8)
times the quantity's largest magnitude. Empty tensors compare by shape only.
"""

import pytest
import torch
from hypothesis import assume, example, given, strategies as st

from instant4d.kernels import reference
from instant4d.kernels.fusion import (FusionConfig, FusionWeights, example_inputs, local_fusion,
                                      triton_unsupported_reasons)
from instant4d.model.fusion import LocalFusion
from tolerance import assert_close

OUTPUTS = ("means", "quats", "scales", "opacities", "colors", "delta")
INPUTS = ("features", "motion_basis", "anchors", "scale_shift") + tuple(FusionConfig().weight_shapes())
WEIGHT_GRADIENTS = ("v_w_in", "v_w1", "v_w2", "v_d1", "v_d2")
PER_GAUSSIAN = OUTPUTS + ("v_features", "v_motion_basis", "v_anchors")  # one value per Gaussian (and frame)
YARDSTICK_N = 256


def run(fn, inputs, config, dtype, v_outputs):
    """Outputs and the gradients of sum(output * v_output) with respect to every input."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in inputs]
    out = fn(*leaves[:4], FusionWeights(*leaves[4:]), config, return_delta=True)
    outputs = [getattr(out, k) for k in OUTPUTS]
    grads = torch.autograd.grad(outputs, leaves, [v.to(dtype) for v in v_outputs], allow_unused=True)
    return dict(zip(OUTPUTS, outputs)) | {f"v_{k}": g for k, g in zip(INPUTS, grads)}


def output_gradients(config, n, b, seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(b, n, 3), (b, n, 4), (b, n, 3), (b, n), (b, n, config.color_dim), (b, n, config.feature_dim)]
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


def check_against_twin(config, n, b, dtype, seed):
    """Every output and gradient of the kernels within factor x PyTorch's own error running the twin
    in the low precision (bf16 for the weight gradients), plus 4 unit roundoffs of the scale. That
    yardstick is a maximum over the quantity's elements; for the per-Gaussian quantities it is also
    taken over YARDSTICK_N more Gaussians (same weights and frames), since a maximum over the few
    elements of a tiny N underestimates it (N = 2, F = 96, Hd = 128: 8 quaternion elements)."""
    f, m, p, ss, w = example_inputs(config, n, b, dtype=dtype, seed=seed)
    inputs = [f, m, p, ss, *w.tensors()]
    v_outputs = output_gradients(config, n, b, seed + 1)

    def kernel(*args, **kwargs):
        return local_fusion(*args, **kwargs, backend="triton")

    actual = run(kernel, inputs, config, dtype, v_outputs)
    expected = run(reference.local_fusion, inputs, config, torch.float64, v_outputs)
    low = torch.bfloat16 if torch.bfloat16 == dtype or config.dot_operands == "bf16" else torch.float16
    pytorch_low = run(reference.local_fusion, inputs, config, low, v_outputs)
    pytorch_bf16 = run(reference.local_fusion, inputs, config, torch.bfloat16, v_outputs)
    more = list(example_inputs(config, YARDSTICK_N, b, dtype=dtype, seed=seed + 2)[:3]) + inputs[3:]
    v_more = output_gradients(config, YARDSTICK_N, b, seed + 3)
    more_error = {name: (low_value.double() - value).abs().max().item() for (name, value), low_value in zip(
        run(reference.local_fusion, more, config, torch.float64, v_more).items(),
        run(reference.local_fusion, more, config, low, v_more).values()) if name in PER_GAUSSIAN}
    for name, value in expected.items():
        assert actual[name].dtype == dtype, name
        if value.numel() == 0:
            assert actual[name].shape == value.shape, name
            continue
        factor = 2.0 if name in OUTPUTS else 3.0
        yardstick = pytorch_bf16 if name in WEIGHT_GRADIENTS else pytorch_low
        pytorch_error = max((yardstick[name].double() - value).abs().max().item(), more_error.get(name, 0.0))
        floor = 4 * torch.finfo(yardstick[name].dtype).eps / 2 * value.abs().max().item()
        assert_close(actual[name], value, name, rtol=0.0, atol=factor * pytorch_error + floor)


@given(
    n=st.sampled_from([0, 1, 2, 15, 16, 17, 40, 67]),
    b=st.integers(1, 3),
    feature_dim=st.sampled_from([32, 48, 64, 96]),
    hidden_dim=st.sampled_from([64, 96, 128, 256]),
    color_dim=st.sampled_from([1, 3, 8]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    dot_operands=st.sampled_from(["fp16", "bf16"]),
    seed=st.integers(0, 2**16),
)
@example(n=0, b=2, feature_dim=48, hidden_dim=96, color_dim=3, dtype=torch.float32, dot_operands="fp16", seed=0)
@example(n=1, b=1, feature_dim=48, hidden_dim=96, color_dim=3, dtype=torch.float32, dot_operands="fp16", seed=1)
@example(n=40, b=1, feature_dim=48, hidden_dim=96, color_dim=3, dtype=torch.float32, dot_operands="bf16", seed=2)
# several blocks per chunk of the weight-gradient kernel, each over three frames (its loop over (block, frame))
@example(n=67, b=3, feature_dim=48, hidden_dim=96, color_dim=3, dtype=torch.float32, dot_operands="bf16", seed=3)
def test_triton_matches_twin(interpret_triton, n, b, feature_dim, hidden_dim, color_dim, dtype, dot_operands, seed):
    config = FusionConfig(feature_dim=feature_dim, hidden_dim=hidden_dim, color_dim=color_dim,
                          dot_operands=dot_operands, offset_scale=0.2, max_scale=0.05)
    assume(not triton_unsupported_reasons(config, dtype))  # F = 96 with Hd = 256: see test below
    check_against_twin(config, n, b, dtype, seed)


def test_module_grads_reach_motion_code(interpret_triton):
    config = FusionConfig(feature_dim=32, hidden_dim=64, motion_dim=24, dot_operands="fp16")
    module = LocalFusion(config, generator=torch.Generator().manual_seed(3))
    f, m, p, _, _ = example_inputs(config, 21, 2, seed=4)
    code = torch.randn(2, config.motion_dim, generator=torch.Generator().manual_seed(5))
    results = {}
    for backend, dtype in (("triton", torch.float32), ("torch", torch.float64)):
        mod = LocalFusion(config).to(dtype)
        mod.load_state_dict(module.state_dict())
        c = code.to(dtype).detach().requires_grad_()
        out = mod(f.to(dtype), m.to(dtype), p.to(dtype), c, backend=backend)
        loss = out.means.sum() + out.colors.square().sum() + (out.quats * torch.arange(4.0, dtype=dtype)).sum()
        loss.backward()
        results[backend] = (out.means, c.grad, mod.w_ada.grad, mod.d2.grad)
    for name, actual, expected in zip(("means", "v_code", "v_w_ada", "v_d2"), results["triton"], results["torch"]):
        assert expected.abs().max() > 0, name  # the gradient really flows
        # fp16 operands (2^-11 relative rounding, a few layers deep), bf16 (2^-8) for the kernels'
        # weight gradients (v_d2; v_w_ada comes from v_scale_shift); the property test above holds
        # the kernels to PyTorch's own low-precision error, this one checks the module's wiring
        unit = 2.0**-8 if name == "v_d2" else 2.0**-11
        assert_close(actual, expected, name, rtol=0.0, atol=8 * unit * expected.abs().max().item())


@pytest.mark.parametrize("seed", [0, 1])
def test_twin_attributes_are_in_range(seed):
    config = FusionConfig(offset_scale=0.1)
    f, m, p, ss, w = example_inputs(config, 300, 2, dtype=torch.float64, seed=seed)
    out = reference.local_fusion(3 * f, m, p, 4 * ss, w, config)
    assert torch.allclose(out.quats.norm(dim=-1), torch.ones(()).double())
    assert ((out.means - p).abs() < config.offset_scale).all()
    for name, value, high in (("scales", out.scales, config.max_scale), ("opacities", out.opacities, 1.0),
                              ("colors", out.colors, 1.0)):
        assert ((value > 0) & (value < high)).all(), name
    assert out.delta is None


def test_zero_fusion_weights_ignore_motion():
    config = FusionConfig(feature_dim=32, hidden_dim=64)
    f, m, p, ss, w = example_inputs(config, 10, 3, dtype=torch.float64, seed=2)
    w = FusionWeights(**{**{k: getattr(w, k) for k in config.weight_shapes()},
                         "w2": torch.zeros_like(w.w2), "b2": torch.zeros_like(w.b2)})
    out = reference.local_fusion(f, m, p, ss, w, config, return_delta=True)
    assert (out.delta == 0).all()
    # every frame decodes the same rows then; the batched matmuls may round frames' rows apart (which BLAS
    # kernel a row meets depends on the CPU: 1 ulp seen on a 2-core CI machine), so a few float64 ulps of
    # values of order 1
    ulps = 8 * torch.finfo(torch.float64).eps
    torch.testing.assert_close(out.means[0], out.means[2], rtol=0, atol=ulps)
    torch.testing.assert_close(out.colors[0], out.colors[1], rtol=0, atol=ulps)


@pytest.mark.parametrize("case, match", [
    ("features_rank", "features must have shape"),
    ("basis_rows", "motion_basis must have shape"),
    ("anchors_width", "anchors must have shape"),
    ("scale_shift_width", "scale_shift must have shape"),
    ("weight_shape", "weights.w1 must have shape"),
    ("dtype_mix", "anchors must have dtype"),
    ("float64_triton", "inputs are torch.float64"),
    # 272 KB: the backward's per-row kernel holds W1^T, W2^T, D1, D1^T, D2 and D2^T (it runs the decoder
    # again), more than the forward's 232
    ("too_large_triton", "needs 272 KB of weights on chip"),
])
def test_bad_inputs_name_the_argument(interpret_triton, case, match):
    config = FusionConfig(feature_dim=32, hidden_dim=64)
    f, m, p, ss, w = example_inputs(config, 5, 2, seed=0)
    backend = "torch"
    if case == "features_rank":
        f = f[0]
    elif case == "basis_rows":
        m = m[:4]
    elif case == "anchors_width":
        p = p[:, :2]
    elif case == "scale_shift_width":
        ss = ss[:, 1:]
    elif case == "weight_shape":
        w = FusionWeights(**{**{k: getattr(w, k) for k in config.weight_shapes()}, "w1": w.w1[:, :5]})
    elif case == "dtype_mix":
        p = p.double()
    elif case == "float64_triton":
        f, m, p, ss, w = example_inputs(config, 5, 2, dtype=torch.float64, seed=0)
        backend = "triton"
    else:
        config = FusionConfig(feature_dim=96, hidden_dim=256)
        f, m, p, ss, w = example_inputs(config, 5, 2, seed=0)
        backend = "triton"
    with pytest.raises(ValueError, match=match):
        local_fusion(f, m, p, ss, w, config, backend=backend)


def test_config_validation():
    with pytest.raises(ValueError, match="feature_dim"):
        FusionConfig(feature_dim=0)
    with pytest.raises(ValueError, match="dot_operands"):
        FusionConfig(dot_operands="tf32")
    with pytest.raises(TypeError, match="config must be a FusionConfig"):
        f, m, p, ss, w = example_inputs(FusionConfig(), 2, 1)
        local_fusion(f, m, p, ss, w, {"feature_dim": 48})
