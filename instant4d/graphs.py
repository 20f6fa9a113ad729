"""CUDA graphs: one graph launch instead of a dozen kernel launches and their host time.

``rasterization(..., max_intersections=M)`` never waits for the GPU, so a per-frame function built
on it can be captured once and replayed. ``CudaGraphFrame`` does the capture, sizes the bound from
the real intersection count, and re-captures with a larger bound when a frame does not fit, so a
frame is never returned with intersections missing.

``RasterizationGraphs`` does the same for plain ``rasterization()`` calls that repeat (same tensors,
same options), forward and backward, with no change to the caller's code (``cuda_graphs=True``).
"""

from __future__ import annotations

import gc
import inspect
import math
import threading
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef

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



# ---- graphs of repeated eager rasterization() calls ----------------------------------------------

# Calls are captured only up to these sizes: beyond them the device, not the host, sets a call's time, and a
# graph keeps its pool between calls. On an H100 (docs/benchmarks.md, 2026-11-28 01:26), replayed calls need
# 0.81-0.95x the memory of gsplat's forward+backward, 0.81-0.96x of its forward; 20k / 512² / 8 cameras (2^21 pixels)
# replayed ran its forward at 1.76x gsplat's, eagerly at 0.92x with the host slow (2026-11-27 23:38).
# 250k / 1024² / 1 gained 4-9% from its graphs; eagerly its forward tied gsplat's in a run whose host was slow
# (21:06): it stays replayed.
GRAPH_MAX_GAUSSIAN_IMAGES = 1 << 18  # N x images of one call
GRAPH_MAX_PIXELS = 1 << 21  # W x H x images of one call

_SCALARS = (int, float, str, bool, type(None))
# the count of tensors holding a storage: how a graph tells that a tensor it returned is still alive
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)
# an event recorded inside a graph that the host can wait for (a mid-graph point)
_EXTERNAL_EVENTS = "external" in inspect.signature(torch.cuda.Event.__new__).parameters


def call_key(tensors: Sequence[Tensor | None], options: tuple) -> tuple | None:
    """What a graph depends on: each tensor's shape, strides, dtype, device and whether it needs a
    gradient, the options, and whether autograd records; None where no graph can serve the call (CPU
    tensors, inside a capture, under autocast, an option that is not a plain value)."""
    first = tensors[0]
    if not isinstance(first, Tensor) or not first.is_cuda or _storage_use_count is None or not _EXTERNAL_EVENTS:
        return None
    if torch.cuda.is_current_stream_capturing() or torch.is_autocast_enabled("cuda"):
        return None
    for value in options:
        if not isinstance(value, _SCALARS):
            return None
    needs_grad = False
    described = []
    for t in tensors:
        if t is None:
            described.append(None)
        elif isinstance(t, Tensor):
            described.append((t.shape, t.stride(), t.dtype, t.device, t.requires_grad))
            needs_grad = needs_grad or t.requires_grad
        else:
            return None
    return options, tuple(described), needs_grad and torch.is_grad_enabled()


def is_one_value(gradient: Tensor) -> bool:
    """Whether an image's gradient is one value read everywhere (strides of 0, as a ``.sum()`` loss gives)."""
    return all(stride == 0 for stride in gradient.stride())


def may_serve(means, viewmats, width, height) -> bool:
    """Whether a call's sizes (means [..., N, 3], viewmats [..., C, 4, 4], the image's) are within the bounds
    above; False for inputs that rasterization()'s checks refuse. Asked first: a call beyond them needs no key."""
    if not (isinstance(means, Tensor) and isinstance(viewmats, Tensor) and means.dim() >= 2 and viewmats.dim() >= 3
            and type(width) is int and type(height) is int):
        return False
    n_images = math.prod(means.shape[:-2]) * viewmats.shape[-3]
    return 0 < means.shape[-2] * n_images <= GRAPH_MAX_GAUSSIAN_IMAGES and width * height * n_images <= GRAPH_MAX_PIXELS


class RasterizationGraphs:
    """CUDA graphs of repeated eager ``rasterization()`` calls (unpacked, not deterministic, no absgrad).

    A call's key (``call_key``) is everything its work depends on but the values of its tensors: a graph
    captured for a key serves any later call with that key. The graphs read the caller's tensors where they
    were when captured, as long as calls pass tensors there (parameters rendered step after step, a scene
    rendered again: no copy, no memory of their own); once a call passes tensors elsewhere (activations made
    each step), the instance is captured again reading buffers of its own, and each call's inputs are copied
    into them (one multi-tensor copy). The first call with a key runs eagerly, the second is captured
    (intersection buffers ``headroom`` times the count) and later ones are replayed. The first call's backward
    tells whether each image's gradient is one value (a ``.sum()`` loss's, strides of 0; ``note_gradients``):
    the backward graph then keeps that value instead of an image-sized buffer, until a call's gradient is not
    one value and the instance is captured again with image buffers. While no backward has found the call's
    outputs still held (the loss kept, the images and meta dropped, as ``render(...)[0].sum().backward()``
    does), the backward graph writes its buffers over the forward's outputs once it is done with them, as the
    eager path frees them: a replayed call then needs no more memory than an eager one. A backward that finds
    an output held is recomputed eagerly, and the next replay captures the instance again with outputs of
    their own (``_Habits``). Such a graph's outputs lie in its pool's free blocks (``_Place``): while a caller
    holds them, ``torch.cuda.memory_allocated()`` does not count them, ``memory_reserved()`` does (the pools stay
    reserved as long as their graphs, or anything viewing them, live).
    A replay waits only until the intersection count is known; if the buffers are too small for it, the
    call is captured again with larger ones before anything is returned.

    A graph writes its outputs, and what its backward reads, into the same buffers each replay, so an
    instance serves a call only while it is free: no tensor it returned is alive (or viewed), and no
    backward that needs its buffers is pending. Otherwise another instance is captured (``instances`` per
    key), and beyond that the call runs eagerly. The inputs' gradients are the graph's buffers too, and count
    as outputs: autograd adds them into a leaf's existing ``.grad`` in place, and a ``.grad`` that was None
    takes the buffer itself (or a copy), which keeps the instance busy until ``.grad`` is set to None or
    replaced (``optimizer.zero_grad()``); ``meta["means2d"]`` gets its gradient after ``retain_grad()`` as on
    the eager path, the graph's buffer too. The backward graph takes the images'
    gradients; a backward it cannot serve (a loss of meta's tensors, a second one through the same outputs,
    ``retain_graph=True``, or one after the instance served a later call) runs the call again eagerly for its
    gradients. The ``max_keys`` keys used last keep their graphs; ``clear()`` frees them all.
    """

    def __init__(self, max_keys: int = 4, instances: int = 2, headroom: float = 1.25):
        self.max_keys, self.instances, self.headroom = max_keys, instances, headroom
        self._entries: OrderedDict[tuple, list[_CapturedCall]] = OrderedDict()
        self._uncapturable: set = set()
        # per key: what its calls' backwards have shown (_Habits)
        self._habits: dict[tuple, _Habits] = {}
        self._lock = threading.Lock()  # threads that render at once take instances one at a time

    def replay(self, key: tuple, tensors: Sequence[Tensor | None]):
        """rasterization()'s outputs from a free instance for ``key``, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if not entry:
                return None
            for call in entry:
                if not call.busy():
                    self._entries.move_to_end(key)
                    return call.replay(tensors)
            return None

    def capture(self, key: tuple, run: Callable, tensors: Sequence[Tensor | None]):
        """For a checked call that ``replay`` could not serve: the first call with ``key`` only registers
        it (and returns None: the call runs eagerly); a later one captures an instance, if there is room
        for one, and returns its replay. ``run(*tensors, max_intersections=M, count_signal=...)`` is the
        call's work."""
        with self._lock:
            return self._capture(key, run, tensors)

    def _capture(self, key: tuple, run: Callable, tensors: Sequence[Tensor | None]):
        if key in self._uncapturable:
            return None
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = []
            while len(self._entries) > self.max_keys:
                self._habits.pop(self._entries.popitem(last=False)[0], None)
            return None
        if len(entry) >= self.instances:
            return None
        bound = max((call.bound for call in entry), default=1)
        try:
            needs_grad = key[-1]  # (call_key's last item: whether autograd records)
            # (no backward seen: image buffers, outputs of their own)
            habits = self._habits.setdefault(key, _Habits([False, False], outputs_dropped=False))
            call = _CapturedCall(run, tensors, needs_grad, bound, self.headroom, habits)
        except RuntimeError as error:  # e.g. a stage that waits for the device: this key stays eager
            warnings.warn(f"instant4d: a rasterization() call could not be captured in a CUDA graph ({error}); "
                          "calls like it run eagerly")
            if len(self._uncapturable) > 256:  # (shapes change as scenes grow: keep the set bounded)
                self._uncapturable.clear()
            self._uncapturable.add(key)
            return None
        entry.append(call)
        return call.replay(tensors)

    def note_gradients(self, key: tuple, colors: Tensor, alphas: Tensor, meta: dict) -> None:
        """For an eager call with ``key`` before any capture for it: hooks on its images that note whether their
        gradients are one value each (an image that gets none counts as one value, zero), and whether the call's
        outputs are still held then (the colours, or meta's intersections: outputs that autograd does not save)."""
        with self._lock:
            if key not in self._entries or key in self._habits or not (colors.requires_grad or alphas.requires_grad):
                return
        # (weak references to the storages: a view of an output holds its storage, not its tensor)
        outputs = [StorageWeakRef(t.untyped_storage()) for t in (colors, meta.get("isect_ids")) if isinstance(t, Tensor)]

        def note(index: int, gradient: Tensor | None) -> None:  # (None: the loss does not use this image)
            habits = self._habits.setdefault(key, _Habits([True, True], outputs_dropped=True))
            habits.one_value[index] = habits.one_value[index] and (gradient is None or is_one_value(gradient))
            habits.outputs_dropped = habits.outputs_dropped and all(output.expired() for output in outputs)

        for index, image in enumerate((colors, alphas)):
            if image.requires_grad:
                image.register_hook(lambda gradient, index=index: note(index, gradient))

    def clear(self) -> None:
        """Free every graph (their memory goes back when no tensor they returned is alive)."""
        with self._lock:
            self._entries.clear()
            self._uncapturable.clear()
            self._habits.clear()


@dataclass
class _Habits:
    """What the backwards of calls with one key have shown, which their graphs' buffers follow: whether each
    image's gradient (colours, alphas) was one value, and whether every output of the call was dropped before
    its backward (then the backward graph writes over them). Shared by the key's instances; a backward that
    shows otherwise turns a value False for good, and the next replay captures the instance again."""
    one_value: list[bool]
    outputs_dropped: bool


class _Place:
    """Where a graph's replays write one output: ``tensor()`` is a tensor there that holds none of the
    allocator's blocks, so that the backward graph's buffers may take the place once the output is dropped.
    It holds the graphs instead (through ``torch.as_tensor``'s CUDA array interface), whose pool keeps the
    memory for as long as anything views it."""

    def __init__(self, output: Tensor):
        self.__cuda_array_interface__ = output.detach().__cuda_array_interface__
        self.shape, self.dtype, self.device = output.shape, output.dtype, output.device
        self.graphs: tuple = ()

    def tensor(self, graphs: tuple) -> Tensor:
        if not self.shape.numel():
            return torch.empty(self.shape, dtype=self.dtype, device=self.device)
        self.graphs = graphs
        place = torch.as_tensor(self, device=self.device)
        if place.data_ptr() != self.__cuda_array_interface__["data"][0] or place.dtype != self.dtype:
            raise RuntimeError("torch.as_tensor copied a CUDA array instead of viewing it")
        return place


class _CapturedCall:
    """One instance: the forward graph, the backward graph when autograd records, their buffers."""

    def __init__(self, run: Callable, tensors: Sequence[Tensor | None], needs_grad: bool, bound: int,
                 headroom: float, habits: _Habits):
        self.run, self.needs_grad, self.headroom = run, needs_grad, headroom
        self.habits = habits  # (the key's, shared by its instances: what the buffers follow)
        self.pending = 0  # replayed forwards whose backward may still read the buffers
        self.generation = 0  # forward replays so far: a backward replays only for the latest one,
        self.backward_generation = -1  # and only once (the replay of its backward frees what it saved)
        self.n_tensors = len(tensors)
        self.present = [i for i, t in enumerate(tensors) if t is not None]
        # what the graphs read: the caller's tensors at these addresses, or (once a call passes others) these
        # buffers, into which each call's inputs are copied
        self.addresses = [tensors[i].data_ptr() for i in self.present]
        self.static: list[Tensor] | None = None
        self._capture(tensors, bound)
        self._count_holders()

    def _capture(self, tensors: Sequence[Tensor | None], bound: int) -> None:
        # (the buffers of an earlier capture go first: the instance is free, nothing else holds them)
        self.forward_graph = self.backward_graph = None
        self.outputs, self.grad_outputs, self.grad_targets = [], [], []
        self.means2d_gradient: Tensor | None = None
        self.input_gradients: list[Tensor | None] = []
        self.captured_one_value = tuple(self.habits.one_value)
        self.captured_outputs_dropped = self.habits.outputs_dropped
        read = self.static if self.static is not None else [tensors[i] for i in self.present]
        inputs: list[Tensor | None] = [None] * self.n_tensors
        for i, source in zip(self.present, read):
            inputs[i] = source.detach().requires_grad_(self.needs_grad and tensors[i].requires_grad)
        wants = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compile the kernels, size the buffers, warm the backward
            while True:
                colors, alphas, meta = self.run(*inputs, max_intersections=bound)
                needed = int(meta["n_isects"].max())
                if needed <= bound:
                    break
                bound = math.ceil(needed * self.headroom)
                del colors, alphas, meta  # (before the next run: two calls' buffers at once would set the peak)
            # the tensors a call returns: the images, then meta's (its count is the eager path's None)
            self.names = [k for k, v in meta.items() if isinstance(v, Tensor) and k != "n_isects"]
            count_dtype = meta["n_isects"].dtype
            images = [(o, one) for o, one in zip((colors, alphas), self.captured_one_value) if o.requires_grad]
            del colors, alphas, meta  # (the backward as after a call whose outputs were dropped: its peak is less)
            if wants and images:  # (what the backward graph takes, in the layout it will read)
                _free_unsaved([o for o, _ in images])
                torch.autograd.grad([o for o, _ in images], [inputs[i] for i in wants],
                                    [_gradient_buffer(o, one).fill_(1.0).expand(o.shape) for o, one in images],
                                    allow_unused=True)
            del images
        torch.cuda.current_stream().wait_stream(side)
        self.count_host = torch.zeros(1, dtype=count_dtype, pin_memory=True)
        self.counted = torch.cuda.Event(external=True)

        read_storages = {t.untyped_storage()._cdata for t in read}
        pool = torch.cuda.graph_pool_handle()
        self.forward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph, pool=pool, capture_error_mode="thread_local"):
            colors, alphas, meta = self.run(*inputs, max_intersections=bound,
                                            count_signal=(self.count_host, self.counted))
            for name in self.names:  # (one camera's opacities are a view of the input)
                if meta[name].untyped_storage()._cdata in read_storages:
                    meta[name] = meta[name].clone()  # (the next call's inputs are there)
        self.meta = {k: v for k, v in meta.items() if not isinstance(v, Tensor)} | {"n_isects": None}
        outputs = self._returned(colors, alphas, meta)
        del colors, alphas, meta
        self.differentiable = [i for i, o in enumerate(outputs) if o.requires_grad]  # through autograd
        # The backward graph takes the images' gradients alone (a buffer each, filled each backward): a loss of
        # meta's tensors (depths, conics...) is rare, and its backward runs the call again eagerly (recompute).
        # (100k / 512²: 4.0 MB of gradient buffers, not 6.7 with meta's means2d, depths, conics and opacities).
        self.replayable = [k for k, i in enumerate(self.differentiable) if i < 2]  # (positions in differentiable)
        position = 2 + self.names.index("means2d")
        means2d = outputs[position]
        self.means2d_output = position if means2d.requires_grad else None
        self.needs_grad = bool(wants and self.differentiable)  # (no output may depend on what needs a gradient)
        self.overwrites_outputs = False
        places: list[_Place] = []
        if self.needs_grad and self.replayable:
            images = [outputs[self.differentiable[k]] for k in self.replayable]
            # an image's gradient buffer, or one value read with strides of 0 (filled in place: grad_targets)
            self.grad_targets = [_gradient_buffer(o, self.captured_one_value[self.differentiable[k]])
                                 for o, k in zip(images, self.replayable)]
            self.grad_outputs = [t.expand(o.shape) for t, o in zip(self.grad_targets, images)]
            self.zeroed = [True] * len(images)
            targets = [inputs[i] for i in wants] + ([means2d] if means2d.requires_grad else [])
            del means2d
            self.overwrites_outputs = self.captured_outputs_dropped
            if self.overwrites_outputs:
                # Past this point only autograd (what the forward saved), the images passed to it and means2d (a
                # target) hold the outputs, as on the eager path once the caller dropped them: the backward frees
                # each when it is done with it, and the pool gives its blocks to the backward's later buffers.
                # The replays return tensors at the outputs' places (_Place), which hold no blocks.
                places = [_Place(o) for o in outputs]
                outputs = []
                _free_unsaved(images)
            self.backward_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.backward_graph, pool=pool, capture_error_mode="thread_local"):
                # what the forward saved is freed as the backward goes, and the pool may give its blocks to
                # later buffers of the backward: what must outlive a replay (the gradients, and the outputs unless
                # the backward writes over them) is held, and a second backward for one forward is recomputed
                # (_ReplayedRasterization.backward)
                grads = torch.autograd.grad(images, targets, self.grad_outputs, allow_unused=True)
            self.input_gradients = list(grads[:len(wants)])
            self.means2d_gradient = grads[-1].detach() if self.means2d_output is not None else None
            self.input_gradient = [wants.index(i) if i in wants else None for i in self.present]
            del images, grads, targets
        if self.overwrites_outputs:
            self.outputs = [place.tensor((self.forward_graph, self.backward_graph)) for place in places]
        else:
            self.outputs = [o.detach() for o in outputs]
        self.bound = bound

    def _returned(self, colors: Tensor, alphas: Tensor, meta: dict) -> list[Tensor]:
        return [colors, alphas] + [meta[k] for k in self.names]

    def _count_holders(self) -> None:
        """How many tensors hold each buffer the graphs return (outputs, the gradients), right after a capture
        (its locals, and the captured autograd graph with them, gone): more later means a caller holds one."""
        gc.collect()
        gradients = [g for g in self.input_gradients + [self.means2d_gradient] if g is not None]
        self.output_storages = _holders(self.outputs)
        self.storages = self.output_storages + _holders(gradients)

    def outputs_held(self) -> bool:
        """Whether anything but the instance holds one of the outputs of its last forward replay."""
        return any(_storage_use_count(cdata) > held for cdata, held in self.output_storages)

    def busy(self) -> bool:
        if self.pending:
            return True
        for cdata, held in self.storages:
            if _storage_use_count(cdata) > held:
                return True
        return False

    def replay(self, tensors: Sequence[Tensor | None]):
        present = [tensors[i] for i in self.present]
        moved = self.static is None and any(t.data_ptr() != a for t, a in zip(present, self.addresses))
        if moved:
            self.static = [t.detach().clone() for t in present]  # (the graphs read the caller's tensors no more)
        if moved or (tuple(self.habits.one_value), self.habits.outputs_dropped) != (
                self.captured_one_value, self.captured_outputs_dropped):  # (or a backward showed otherwise)
            self._capture(tensors, self.bound)
            self._count_holders()
        if self.static is not None:
            with torch.no_grad():  # (a copy from a tensor that needs a gradient would be recorded)
                torch._foreach_copy_(self.static, present)
        self.forward_graph.replay()
        self.generation += 1
        # the host's work for the outputs while the device works; then wait for the count only
        outputs = [o.detach() for o in self.outputs]
        if self.needs_grad:  # the differentiable outputs come from autograd's node for the replay
            replayed = _ReplayedRasterization.apply(self, *present)
            for i, o in zip(self.differentiable, (replayed,) if isinstance(replayed, Tensor) else replayed):
                outputs[i] = o
            del replayed
        self.counted.synchronize()
        needed = self.count_host.item()
        if needed > self.bound:  # buffers too small (the images are NaN): capture again with room
            del outputs
            self._capture(tensors, math.ceil(needed * self.headroom))
            self._count_holders()
            return self.replay(tensors)
        meta = dict(self.meta)
        for name, value in zip(self.names, outputs[2:]):
            # the eager path's (tile, Gaussian) arrays hold exactly the intersections
            meta[name] = value[:needed] if name in ("isect_ids", "flatten_ids") else value
        return outputs[0], outputs[1], meta

    def recompute(self, inputs: Sequence[Tensor], grads: Sequence[Tensor | None]):
        """``backward``'s results by running the call again eagerly on its inputs: for a backward that the
        backward graph cannot serve (``replays``) or the buffers no longer can. A backward replay frees what the
        forward saved into the pool as it goes (less memory held), so only the first backward after a forward
        replay can be replayed."""
        tensors: list[Tensor | None] = [None] * self.n_tensors
        for i, t in zip(self.present, inputs):
            tensors[i] = t.detach().requires_grad_(t.requires_grad)
        with torch.enable_grad():
            colors, alphas, meta = self.run(*tensors, max_intersections=None)
            outputs = self._returned(colors, alphas, meta)
            pairs = [(outputs[i], g) for i, g in zip(self.differentiable, grads)
                     if g is not None and outputs[i].requires_grad]
            wanted = [t for t in tensors if t is not None and t.requires_grad]
            targets = wanted + ([meta["means2d"]] if self.means2d_output is not None else [])
            if not pairs:
                return [None] * len(self.present), None
            got = list(torch.autograd.grad([o for o, _ in pairs], targets, [g for _, g in pairs],
                                           allow_unused=True))
        means2d = got.pop() if self.means2d_output is not None else None
        got = iter(got)
        present = [tensors[i] for i in self.present]
        return [next(got) if t.requires_grad else None for t in present], means2d

    def note(self, grads: Sequence[Tensor | None]) -> None:
        """What a backward shows, for good: an image whose gradient is not one value; outputs held."""
        for k in self.replayable:
            if grads[k] is not None and not is_one_value(grads[k]):
                self.habits.one_value[self.differentiable[k]] = False
        if self.overwrites_outputs and self.outputs_held():
            self.habits.outputs_dropped = False

    def replays(self, grads: Sequence[Tensor | None]) -> bool:
        """Whether the backward graph serves these gradients of the differentiable outputs: the images' alone,
        each one value where its buffer holds one value, and no output held where the backward writes over them."""
        if self.backward_graph is None or any(g is not None for k, g in enumerate(grads) if k not in self.replayable):
            return False
        if self.overwrites_outputs and self.outputs_held():
            return False
        return all(grads[k] is None or t.dim() > 0 or is_one_value(grads[k])
                   for k, t in zip(self.replayable, self.grad_targets))

    def backward(self, grads: Sequence[Tensor | None]) -> tuple[list[Tensor | None], Tensor | None]:
        """The gradients of the call's inputs, and of means2d, from those of its differentiable outputs
        (``replays(grads)``)."""
        for i, k in enumerate(self.replayable):
            g, target = grads[k], self.grad_targets[i]
            if g is not None:
                target.copy_(g if target.dim() else g.as_strided((), ()))
                self.zeroed[i] = False
            elif not self.zeroed[i]:
                target.zero_()
                self.zeroed[i] = True
        self.backward_graph.replay()
        # the buffers themselves, as new tensors: one a caller keeps (a leaf's .grad that was None, what
        # torch.autograd.grad returns) holds its storage, and busy() sees it
        grads = [None if g is None else g.detach() for g in self.input_gradients]
        return [None if k is None else grads[k] for k in self.input_gradient], self.means2d_gradient


def _holders(tensors: Sequence[Tensor]) -> list[tuple[int, int]]:
    """(storage, how many tensors hold it) for the storages of ``tensors``."""
    return [(cdata, _storage_use_count(cdata)) for cdata in {t.untyped_storage()._cdata for t in tensors}]


def _free_unsaved(images: Sequence[Tensor]) -> None:
    """Free the memory of each image that nothing but ``images`` holds (the colours; autograd saved the alphas):
    as roots of a backward, the images count by their shapes alone."""
    probe = torch.empty(1)  # (one tensor's count: torch may add one of its own)
    sole = _storage_use_count(probe.untyped_storage()._cdata)
    for image in images:
        if _storage_use_count(image.untyped_storage()._cdata) == sole:
            image.untyped_storage().resize_(0)


def _gradient_buffer(image: Tensor, one: bool) -> Tensor:
    """A zero gradient buffer for ``image``: the image's shape, or one value (0 dims) when ``one``."""
    return image.new_zeros(()) if one else torch.zeros_like(image)


class _Reservation:
    """Kept by the autograd context of a replayed forward: the instance stays busy until that
    backward ran, or until nothing can call it any more."""

    def __init__(self, call: _CapturedCall):
        call.pending += 1
        self.call: _CapturedCall | None = call

    def release(self) -> None:
        if self.call is not None:
            self.call.pending -= 1
            self.call = None

    def __del__(self):
        self.release()


class _ReplayedRasterization(torch.autograd.Function):
    """Autograd's view of a replay: the call's inputs in, its outputs (the graph's buffers) out."""

    @staticmethod
    def forward(ctx, call: _CapturedCall, *inputs: Tensor):
        ctx.call, ctx.generation = call, call.generation
        ctx.reservation = _Reservation(call)
        outputs = tuple(call.outputs[i].detach() for i in call.differentiable)
        # an input, or an output the backward reads (alphas, means2d, the intersections...; every alias of
        # the graph's buffer shares its version counter), changed in place before the backward raises
        # there, as on the eager path
        ctx.save_for_backward(*inputs, *call.outputs)
        ctx.set_materialize_grads(False)
        if call.means2d_output is None:
            ctx.means2d = None
        else:
            ctx.means2d = weakref.ref(outputs[call.differentiable.index(call.means2d_output)])
        return outputs

    @staticmethod
    def backward(ctx, *grads: Tensor | None):
        call = ctx.call
        inputs = ctx.saved_tensors[:len(call.present)]  # (unpacking checks what was changed in place)
        call.note(grads)
        if (ctx.generation == call.generation and call.backward_generation != ctx.generation
                and call.replays(grads)):
            call.backward_generation = ctx.generation
            grads_in, means2d_grad = call.backward(grads)
        else:  # the buffers no longer hold this forward's state (a second backward, or a later replay), or a
            # gradient of meta's tensors
            grads_in, means2d_grad = call.recompute(inputs, grads)
        ctx.reservation.release()
        means2d = ctx.means2d() if ctx.means2d is not None else None
        if means2d is not None and means2d.retains_grad:  # its whole gradient, as on the eager path
            means2d.grad = means2d_grad
        return (None, *grads_in)


RASTERIZATION_GRAPHS = RasterizationGraphs()
