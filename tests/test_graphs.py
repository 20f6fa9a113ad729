"""instant4d.graphs on a CPU machine: what can be checked without CUDA is that it refuses clearly,
which calls a graph may serve, which backwards a captured call's backward graph serves, and that
rasterization() on CPU tensors takes the eager path.

The captures themselves (CudaGraphFrame: images bit-identical to the eager path, re-capture on
overflow, frame rate; RasterizationGraphs: outputs and gradients against the eager path, outputs still
held, inputs changed in place, outgrown buffers, retain_grad, a second backward) are checked on the GPU
by scripts/gpu_avatar.py and scripts/gpu_graphs.py; results in docs/benchmarks.md.
"""

import pytest
import torch

import instant4d
from instant4d import graphs
from instant4d.gaussians import head_like_scene
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


def test_no_graph_serves_cpu_tensors():
    assert graphs.call_key((torch.zeros(4, 3), None), (64, 64)) is None


@pytest.mark.parametrize("n, images, width, expected", [
    (100_000, 1, 512, True),
    (graphs.GRAPH_MAX_GAUSSIAN_IMAGES, 1, 512, True),
    (graphs.GRAPH_MAX_GAUSSIAN_IMAGES // 8 + 1, 8, 64, False),  # over the Gaussian bound
    (1_000, 8, 1024, False),  # over the pixel bound: 8 x 1024² pixels
    (20_000, 8, 512, True),  # 8 x 512² pixels
    (1_000, 16, 512, False),  # over the pixel bound: 16 x 512² pixels
    (250_000, 1, 1024, True),
    (0, 1, 512, False),
])
def test_which_calls_graphs_may_serve(n, images, width, expected):
    means = torch.zeros(()).expand(n, 3)  # (no memory: only the shapes count)
    viewmats = torch.zeros(()).expand(images, 4, 4)
    assert graphs.may_serve(means, viewmats, width, width) is expected
    # the images split between a batch dim and the cameras count alike
    if images == 8:
        assert graphs.may_serve(means.expand(2, n, 3), viewmats[:4].expand(2, 4, 4, 4), width, width) is expected


@pytest.mark.parametrize("means, viewmats, width", [
    (None, torch.eye(4)[None], 64),  # not tensors, or too few dims: rasterization()'s checks say why
    (torch.zeros(3), torch.eye(4)[None], 64),
    (torch.zeros(10, 3), torch.eye(4), 64),
    (torch.zeros(10, 3), torch.eye(4)[None], 64.0),
])
def test_malformed_calls_get_no_graph(means, viewmats, width):
    assert not graphs.may_serve(means, viewmats, width, 64)


def test_first_call_with_a_key_only_registers_it():
    cache = graphs.RasterizationGraphs(max_keys=2)
    assert cache.capture(("a",), None, ()) is None
    assert cache.replay(("a",), ()) is None  # registered, nothing captured
    cache.capture(("b",), None, ())
    cache.capture(("c",), None, ())
    assert list(cache._entries) == [("b",), ("c",)]  # the oldest key goes


def test_reservation_keeps_an_instance_busy_until_released_once():
    class Instance:
        pending = 0

    instance = Instance()
    reservation = graphs._Reservation(instance)
    assert instance.pending == 1
    reservation.release()
    reservation.release()
    assert instance.pending == 0
    graphs._Reservation(instance)  # dropped at once: released as it goes
    assert instance.pending == 0


def _captured_call(grad_targets: list, differentiable: tuple = (0, 1)):
    """A captured call's routing state, without CUDA: its differentiable outputs (the colours and alphas first),
    the backward graph taking the two images into ``grad_targets``, outputs of their own, a fresh key's habits."""
    call = object.__new__(graphs._CapturedCall)
    call.differentiable, call.replayable = list(differentiable), [0, 1]
    call.backward_graph = object()
    call.grad_targets = grad_targets
    call.habits = graphs._Habits([True, True], outputs_dropped=True)
    call.overwrites_outputs = False
    return call


def test_backward_graph_serves_the_images_gradients_alone():
    # a captured call's routing rule, without CUDA: its differentiable outputs are the colours, the alphas, then
    # meta's (say means2d and depths); the backward graph takes the first two, anything else is recomputed
    call = _captured_call([torch.zeros(2, 2), torch.zeros(2, 1)], (0, 1, 3, 4))  # (image buffers take any gradient)
    g = torch.ones(2, 2)
    assert call.replays([g, None, None, None])
    assert call.replays([None, g[:, :1], None, None])
    assert not call.replays([g, None, None, g])  # a loss of meta's depths
    call.backward_graph = None  # nothing captured (no image needs a gradient)
    assert not call.replays([g, None, None, None])


def test_one_value_gradient_buffers_take_one_value_alone():
    # a backward graph captured for a .sum() loss keeps one value per image: a gradient that is not one value is
    # recomputed, and turns the key's note False for good (the next replay captures image-sized buffers)
    call = _captured_call([torch.zeros(()), torch.zeros(())])
    summed = torch.ones(()).expand(1, 4, 4, 3)  # what a .sum() loss gives the image
    dense = torch.rand(1, 4, 4, 3)
    assert call.replays([summed, None]) and call.replays([None, None])
    call.note([summed, None])
    assert call.habits.one_value == [True, True]
    assert not call.replays([dense, None])
    call.note([dense, None])
    assert call.habits.one_value == [False, True]


def test_a_backward_that_writes_over_the_outputs_waits_until_they_are_dropped():
    # a backward graph captured while calls dropped their outputs before their backward writes its buffers over
    # them: a backward that finds one held (a view of the alphas, here) is recomputed, and turns the key's note
    # False for good (the next replay captures outputs of their own)
    call = _captured_call([torch.zeros(()), torch.zeros(())])
    call.outputs, call.input_gradients, call.means2d_gradient = [torch.zeros(1, 4, 4, 3), torch.zeros(1, 4, 4, 1)], [], None
    call._count_holders()
    summed = torch.ones(()).expand(1, 4, 4, 3)
    for overwrites in (False, True):
        call.overwrites_outputs = overwrites
        returned = [o.detach() for o in call.outputs]  # what a replay hands out, dropped before the backward
        del returned
        call.note([summed, None])
        assert call.replays([summed, None]) and call.habits.outputs_dropped
    kept = call.outputs[1].detach()[..., 0]
    call.overwrites_outputs = False  # (outputs of their own: held ones are no matter)
    call.note([summed, None])
    assert call.replays([summed, None]) and call.habits.outputs_dropped
    call.overwrites_outputs = True
    call.note([summed, None])
    assert not call.replays([summed, None]) and not call.habits.outputs_dropped
    del kept
    assert call.replays([summed, None])


@pytest.mark.parametrize("loss, expected", [
    (lambda c, a: c.sum(), [True, True]),  # the alphas get no gradient: one value, zero
    (lambda c, a: c.sum() + 2 * a.sum(), [True, True]),
    (lambda c, a: (c * torch.arange(3.0)).sum(), [False, True]),
    (lambda c, a: c.sum() + (a - 0.5).square().sum(), [True, False]),
])
def test_first_call_notes_whether_each_image_gradient_is_one_value(loss, expected):
    cache = graphs.RasterizationGraphs()
    key = ("k",)
    leaf = torch.rand(1, 4, 4, 4, requires_grad=True)
    cache.note_gradients(key, leaf[..., :3] * 1.0, leaf[..., 3:] * 1.0, {})  # not registered yet: no note
    loss(leaf[..., :3] * 1.0, leaf[..., 3:] * 1.0).backward()
    assert key not in cache._habits
    cache.capture(key, None, ())  # registers it: the eager call that follows notes its images' gradients
    colors, alphas = (leaf * 1.0).split([3, 1], dim=-1)  # (one node: a hook sees None where the loss has no use)
    cache.note_gradients(key, colors, alphas, {})
    loss(colors, alphas).backward()
    assert cache._habits[key].one_value == expected


@pytest.mark.parametrize("kept", ["nothing", "colors", "meta"])
def test_first_call_notes_whether_its_outputs_are_held_through_its_backward(kept):
    # what a backward graph may write over: the outputs of a call dropped before its backward (the colours, and
    # meta's intersections, stand for them: autograd saves neither)
    cache = graphs.RasterizationGraphs()
    key = ("k",)
    cache.capture(key, None, ())
    leaf = torch.rand(1, 4, 4, 4, requires_grad=True)
    colors, alphas = (leaf * 1.0).split([3, 1], dim=-1)
    meta = {"isect_ids": torch.arange(5), "width": 4}
    cache.note_gradients(key, colors, alphas, meta)
    loss = colors.sum() + alphas.sum()
    held = {"nothing": (), "colors": (colors[..., :1],), "meta": (meta,)}[kept]  # (a view holds its base)
    del colors, alphas, meta
    loss.backward()
    assert cache._habits[key].outputs_dropped == (kept == "nothing")
    assert held is not None


@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_cpu_calls_run_eagerly(cuda_graphs):
    s = head_like_scene(200, 32, 32, seed=3)
    args = (s.means, s.quats, s.scales, s.opacities, s.colors, s.viewmats, s.Ks, 32, 32)
    ref = instant4d.rasterization(*args, packed=False, backend="torch", cuda_graphs=False)
    for _ in range(3):  # repeated: still no graph on the CPU
        out = instant4d.rasterization(*args, packed=False, backend="torch", cuda_graphs=cuda_graphs)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    assert not graphs.RASTERIZATION_GRAPHS._entries


def test_a_kept_gradient_buffer_keeps_the_instance_busy():
    # a replay's backward hands autograd the graph's gradient buffers as new tensors: whoever keeps one (a leaf's
    # .grad that was None, torch.autograd.grad's result) holds its storage, and busy() sees it until dropped
    buffer = torch.full((3,), 2.0)
    call = object.__new__(graphs._CapturedCall)
    call.pending = 0
    call.outputs, call.input_gradients, call.means2d_gradient = [torch.zeros(2)], [buffer, None], None
    call._count_holders()
    assert not call.busy()

    class Replayed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return buffer.detach()

    leaf = torch.zeros(3, requires_grad=True)
    Replayed.apply(leaf).sum().backward()  # .grad was None: it takes the buffer, or a copy of it
    assert torch.equal(leaf.grad, buffer)
    assert call.busy() == (leaf.grad.untyped_storage()._cdata == buffer.untyped_storage()._cdata)
    leaf.grad = None
    assert not call.busy()
    leaf.grad = torch.ones(3)
    Replayed.apply(leaf).sum().backward()  # added into the existing .grad: nothing kept
    assert torch.equal(leaf.grad, torch.full((3,), 3.0)) and not call.busy()
    kept = torch.autograd.grad(Replayed.apply(leaf).sum(), leaf)[0]
    assert torch.equal(kept, buffer) and call.busy()
    del kept
    assert not call.busy()


def test_images_that_nothing_else_holds_are_freed_and_still_root_a_backward():
    # before a backward capture, the colours (which no autograd node saves) give their memory to the backward's
    # buffers; the alphas, saved by the compositing node as the forward's output, keep theirs
    class Composite(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            colors, alphas = x * 2.0, x * 3.0
            ctx.save_for_backward(alphas)
            return colors, alphas

        @staticmethod
        def backward(ctx, g_colors, g_alphas):
            (alphas,) = ctx.saved_tensors
            return 2.0 * g_colors + alphas * g_alphas

    x = torch.rand(4, 3, requires_grad=True)
    colors, alphas = Composite.apply(x)
    expected = 2.0 + 3.0 * x.detach()
    graphs._free_unsaved([colors, alphas])
    assert colors.untyped_storage().nbytes() == 0 and colors.shape == (4, 3)
    assert alphas.untyped_storage().nbytes() == alphas.numel() * 4
    (grad,) = torch.autograd.grad([colors, alphas], [x], [torch.ones(()).expand(4, 3), torch.ones(4, 3)])
    assert torch.allclose(grad, expected)
