"""GPU: rasterization() calls replayed from CUDA graphs (instant4d.graphs.RasterizationGraphs) against
the eager path (``cuda_graphs=False``) in one process: outputs and gradients for several call kinds,
the rules that keep replays correct (outputs still held, inputs changed in place, buffers outgrown,
retain_grad on means2d, gradient accumulation, a second backward after another call), and host and
do_bench times. Prints a report and writes it to $OUT/graphs.md.

    PYTHONPATH=.:scripts python scripts/gpu_graphs.py [equivalence] [rules] [timing] [memory]
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import threading
import time
from typing import Callable

import torch

import instant4d
from instant4d import graphs
from instant4d.gaussians import head_like_scene, random_scene
from gpu_compare import bench_ms
from gpu_host import host_us

OUT = os.environ.get("OUT", "gpu-results")
LINES: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def scene_tensors(kind="head", n=100_000, px=512, cameras=1, seed=0):
    make = head_like_scene if kind == "head" else random_scene
    s = make(n, px, px, n_cameras=cameras, seed=seed).to("cuda")
    return [s.means, s.quats, s.scales, s.opacities, s.colors, s.viewmats, s.Ks], px


def leaves_of(tensors, grads=True):
    return [t.detach().clone().requires_grad_(grads and i < 5) for i, t in enumerate(tensors)]


def call(tensors, px, graphs_on, **kwargs):
    return instant4d.rasterization(*tensors[:7], px, px, packed=False, cuda_graphs=graphs_on, **kwargs)


def max_abs(a, b) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def grads_of(tensors, px, graphs_on, weights, **kwargs):
    for t in tensors:
        t.grad = None
    colors, alphas, meta = call(tensors, px, graphs_on, **kwargs)
    meta["means2d"].retain_grad()
    loss = (colors * weights[0][..., :colors.shape[-1]]).sum() + (alphas * weights[1]).sum()
    loss.backward()
    return colors.detach().clone(), [t.grad.clone() for t in tensors[:5]] + [meta["means2d"].grad.clone()]


def dropped_grads_of(tensors, px, weights, **kwargs):
    """grads_of's loss with the outputs dropped before the backward (the backward graph may write over them)."""
    for t in tensors:
        t.grad = None
    colors, alphas, meta = call(tensors, px, True, **kwargs)
    loss = (colors * weights[0][..., :colors.shape[-1]]).sum() + (alphas * weights[1]).sum()
    del colors, alphas, meta
    loss.backward()
    return [t.grad.clone() for t in tensors[:5]]


def equivalence() -> None:
    say("## Graph replay against the eager path (third call replays; forward exact, gradients within the "
        "run-to-run spread of the float atomics: eager against eager in the last column)\n")
    say("| call | images max abs | meta tensors identical | gradients max rel (graph vs eager) | the same, outputs "
        "dropped before the backward (graph writing over them) | eager vs eager |")
    say("| --- | --- | --- | --- | --- | --- |")
    cases = [
        ("RGB, 100k, 512², 1 camera", dict(), ("head", 100_000, 512, 1)),
        ("RGB, 20k, 256², 8 cameras", dict(), ("head", 20_000, 256, 8)),
        ("RGB+ED, backgrounds, antialiased", dict(render_mode="RGB+ED", rasterize_mode="antialiased",
                                                  backgrounds=True), ("head", 50_000, 256, 2)),
        ("SH degree 3", dict(sh_degree=3), ("head", 50_000, 256, 1)),
        ("40 channels (two chunks)", dict(channels=40), ("uniform", 30_000, 256, 1)),
    ]
    for name, opts, scene in cases:
        tensors, px = scene_tensors(*scene)
        kwargs = {}
        if opts.get("sh_degree"):
            g = torch.Generator(device="cuda").manual_seed(1)
            tensors[4] = 0.3 * torch.randn(tensors[0].shape[0], 16, 3, device="cuda", generator=g)
            kwargs["sh_degree"] = 3
        if opts.get("channels"):
            g = torch.Generator(device="cuda").manual_seed(1)
            tensors[4] = torch.rand(tensors[0].shape[0], opts["channels"], device="cuda", generator=g)
        if opts.get("backgrounds"):
            kwargs["backgrounds"] = torch.full((tensors[5].shape[0], 3), 0.25, device="cuda")
        for k in ("render_mode", "rasterize_mode"):
            if k in opts:
                kwargs[k] = opts[k]
        # forward, no grad: compare images and every meta tensor
        eager = call(tensors, px, False, **kwargs)
        graphs.RASTERIZATION_GRAPHS.clear()
        for _ in range(3):
            replayed = call(tensors, px, True, **kwargs)
        image_err = max(max_abs(eager[0], replayed[0]), max_abs(eager[1], replayed[1]))
        same_meta = all(
            (eager[2][k] is None and replayed[2][k] is None)
            or (isinstance(eager[2][k], torch.Tensor) and eager[2][k].shape == replayed[2][k].shape
                and bool((eager[2][k] == replayed[2][k]).all()))
            or eager[2][k] == replayed[2][k]
            for k in eager[2])
        # forward+backward
        leaves = leaves_of(tensors)
        g = torch.Generator(device="cuda").manual_seed(2)
        weights = (torch.rand(eager[0].shape, device="cuda", generator=g),
                   torch.rand(eager[1].shape, device="cuda", generator=g))
        _, ref = grads_of(leaves, px, False, weights, **kwargs)
        _, ref2 = grads_of(leaves, px, False, weights, **kwargs)
        for _ in range(3):
            _, got = grads_of(leaves, px, True, weights, **kwargs)

        def rel(a, b):
            return max(max_abs(x, y) / max(float(y.abs().max()), 1e-30) for x, y in zip(a, b))

        graphs.RASTERIZATION_GRAPHS.clear()
        for _ in range(4):
            dropped = dropped_grads_of(leaves, px, weights, **kwargs)
        writing = [c.overwrites_outputs for c in next(reversed(graphs.RASTERIZATION_GRAPHS._entries.values()))]
        say(f"| {name} | {image_err:.1e} | {same_meta} | {rel(got, ref):.1e} | {rel(dropped, ref[:5]):.1e} "
            f"{writing} | {rel(ref2, ref):.1e} |")
        del eager, replayed


def counting_backwards() -> tuple[dict, Callable[[], None]]:
    """Counts of replayed and recomputed backwards (the _CapturedCall methods wrapped), and what unwraps them."""
    counts = {"replayed": 0, "recomputed": 0}
    originals = graphs._CapturedCall.backward, graphs._CapturedCall.recompute

    def backward(self, grads):
        counts["replayed"] += 1
        return originals[0](self, grads)

    def recompute(self, inputs, grads):
        counts["recomputed"] += 1
        return originals[1](self, inputs, grads)

    def restore():
        graphs._CapturedCall.backward, graphs._CapturedCall.recompute = originals

    graphs._CapturedCall.backward, graphs._CapturedCall.recompute = backward, recompute
    return counts, restore


def rules() -> None:
    say("\n## Rules\n")
    tensors, px = scene_tensors("head", 100_000, 512, 1)
    graphs.RASTERIZATION_GRAPHS.clear()
    entries = graphs.RASTERIZATION_GRAPHS._entries

    # outputs dropped before each backward (the loss kept alone): the backward graph writes over them; then a
    # caller that holds them through the backward: recomputed once, then captured with outputs of their own
    leaves = leaves_of(tensors)
    counts, restore_backwards = counting_backwards()
    images, steps = [], []
    for _ in range(4):
        for t in leaves:
            t.grad = None
        c = call(leaves, px, True)[0]
        images.append(c.detach().clone())
        loss = c.sum()
        del c
        loss.backward()
        del loss
        steps.append([t.grad.clone() for t in leaves[:5]])
    key = next(reversed(entries))
    overwrote = [c.overwrites_outputs for c in entries[key]]
    dropped = dict(replayed=counts["replayed"], recomputed=counts["recomputed"])
    for t in leaves:
        t.grad = None
    c, a, m = call(leaves, px, False)
    c.sum().backward()
    eager_image, eager_grads = c.detach().clone(), [t.grad.clone() for t in leaves[:5]]
    del c, a, m
    worst = max(max_abs(g, e) / float(e.abs().max()) for step in steps[1:] for g, e in zip(step, eager_grads))
    say(f"- outputs dropped before the backward: instances writing over them {overwrote}; backwards of calls 2-4 "
        f"{dropped}; images against eager max abs {max(max_abs(i, eager_image) for i in images):.1e}; "
        f"gradients of calls 2-4 against eager, max rel {worst:.1e}")
    counts["replayed"] = counts["recomputed"] = 0
    held_steps = []
    for _ in range(4):
        for t in leaves:
            t.grad = None
        c, a, m = call(leaves, px, True)
        c.sum().backward()
        held_steps.append(([t.grad.clone() for t in leaves[:5]], max_abs(c, eager_image)))
        del c, a, m
    overwrote = [c.overwrites_outputs for c in entries[key]]
    worst = max(max_abs(g, e) / float(e.abs().max()) for step, _ in held_steps for g, e in zip(step, eager_grads))
    held = dict(replayed=counts["replayed"], recomputed=counts["recomputed"])
    say(f"- then outputs held through the backward: backwards of 4 calls {held}; instances writing over them now "
        f"{overwrote}; gradients against eager, "
        f"max rel {worst:.1e}; images max abs {max(e for _, e in held_steps):.1e}")
    graphs.RASTERIZATION_GRAPHS.clear()
    counts["replayed"] = counts["recomputed"] = 0
    for _ in range(4):
        c, a, m = call(leaves, px, True)
        c.sum().backward()
        del c, a, m
    key = next(reversed(entries))
    held = dict(replayed=counts["replayed"], recomputed=counts["recomputed"])
    say(f"- outputs held through the backward from the first call: backwards of 4 calls {held}; instances writing "
        f"over them {[c.overwrites_outputs for c in entries[key]]}")
    restore_backwards()
    for t in leaves:
        t.grad = None
    graphs.RASTERIZATION_GRAPHS.clear()

    # held outputs: a second instance serves, the first call's image is intact
    first = call(tensors, px, True)
    second = call(tensors, px, True)  # captured now
    kept = second[0].clone()
    third = call(tensors, px, True)  # `second` still held: another instance
    key = next(reversed(entries))
    say(f"- outputs still held: instances for the key after 3 calls holding all outputs: {len(entries[key])}; "
        f"held image unchanged: {bool(torch.equal(kept, second[0]))}")
    fourth = call(tensors, px, True)  # both held: eager
    say(f"- both instances held: the call ran eagerly; max abs against the held image {max_abs(fourth[0], kept):.1e}")
    del first, second, third, fourth

    # inputs changed in place are read by the replay
    for _ in range(3):
        call(tensors, px, True)
    with torch.no_grad():
        tensors[0].add_(0.01)
    out = call(tensors, px, True)
    eager = call(tensors, px, False)
    say(f"- means changed in place: replay against eager on the new values, max abs {max_abs(out[0], eager[0]):.1e}; "
        f"against the image before the change {max_abs(out[0], kept):.1e}")
    del out, eager

    # outgrown buffers: larger splats, more intersections than the bound
    bound_before = max(c.bound for c in entries[key])
    with torch.no_grad():
        tensors[2].mul_(2.0)
    out = call(tensors, px, True)
    eager = call(tensors, px, False)
    say(f"- scales doubled in place: bound {bound_before} -> {max(c.bound for c in entries[key])} (count "
        f"{eager[2]['isect_ids'].numel()}), replay against eager max abs {max_abs(out[0], eager[0]):.1e}, "
        f"no NaN: {not bool(out[0].isnan().any())}")
    with torch.no_grad():
        tensors[2].div_(2.0)
        tensors[0].sub_(0.01)
    del out, eager

    # training pattern: fresh activated tensors each step, previous outputs held until rebound
    params = [t.detach().clone().requires_grad_() for t in tensors[:5]]
    raw_opacity = torch.logit(params[3].detach().clamp(1e-4, 1 - 1e-4)).requires_grad_()
    graphs.RASTERIZATION_GRAPHS.clear()
    replays = [0]
    original = graphs._CapturedCall.replay

    def counted(self, t):
        replays[0] += 1
        return original(self, t)

    graphs._CapturedCall.replay = counted
    info = None
    for step in range(20):
        opacities = torch.sigmoid(raw_opacity)
        colors, alphas, info = instant4d.rasterization(params[0], params[1], params[2], opacities, params[4],
                                                       tensors[5], tensors[6], px, px, packed=False)
        info["means2d"].retain_grad()
        colors.sum().backward()
        with torch.no_grad():
            for p in params:
                p.grad = None
            raw_opacity.grad = None
    trained = replays[0]
    copying = [[c.static is not None for c in v] for v in entries.values()]
    say(f"- training loop (sigmoid opacities made each step, outputs held until the next step): "
        f"{trained} of 20 steps replayed; keys {len(entries)}, instances {[len(v) for v in entries.values()]}, "
        f"reading copies of the inputs {copying}")
    # gradients accumulated over steps, never zeroed (the benchmarks' loop)
    graphs.RASTERIZATION_GRAPHS.clear()
    replays[0] = 0
    for step in range(20):
        colors, alphas, info = instant4d.rasterization(*params, tensors[5], tensors[6], px, px, packed=False)
        (colors.sum() + alphas.sum()).backward()
    graphs._CapturedCall.replay = original
    copying = [[c.static is not None for c in v] for v in entries.values()]
    say(f"- gradients accumulated over 20 steps, never zeroed: {replays[0]} replayed; instances reading copies "
        f"of the inputs {copying} (the same tensors each step: none)")
    for p in params:
        p.grad = None

    # an image gradient that is one value (a .sum() loss's) is kept as one value; a weighted loss with the same key
    # is then recomputed once, and the instance is captured again with image-sized gradient buffers
    leaves = leaves_of(tensors)
    graphs.RASTERIZATION_GRAPHS.clear()
    for _ in range(3):
        c, a, m = call(leaves, px, True)
        c.sum().backward()
    key = next(reversed(entries))
    summed = [tuple(t.shape) for t in entries[key][0].grad_targets]
    weights = torch.rand_like(c)
    del c, a, m
    steps = []
    for _ in range(3):
        for t in leaves:
            t.grad = None
        c, a, m = call(leaves, px, True)
        (c * weights).sum().backward()
        steps.append([t.grad.clone() for t in leaves[:5]])
        del c, a, m
    weighted = [tuple(t.shape) for t in entries[key][0].grad_targets]
    for t in leaves:
        t.grad = None
    c, a, m = call(leaves, px, False)
    (c * weights).sum().backward()
    worst = max(max_abs(g, t.grad) / float(t.grad.abs().max()) for step in steps for g, t in zip(step, leaves[:5]))
    say(f"- image gradient buffers: {summed} after .sum() losses, {weighted} after 3 weighted losses; the weighted "
        f"steps' gradients against eager, max rel {worst:.1e}")
    for t in leaves:
        t.grad = None
    del c, a, m

    # means2d.retain_grad and gradient accumulation
    for _ in range(3):
        for t in leaves:
            t.grad = None
        c, a, m = call(leaves, px, True)
        m["means2d"].retain_grad()
        c.sum().backward()
    means2d_grad = m["means2d"].grad.clone()
    single = [t.grad.clone() for t in leaves[:5]]
    c, a, m = call(leaves, px, True)  # accumulate on top
    c.sum().backward()
    doubled = max(max_abs(t.grad, 2 * s) / float(s.abs().max()) for t, s in zip(leaves[:5], single))
    for t in leaves:
        t.grad = None
    c, a, m = call(leaves, px, False)
    m["means2d"].retain_grad()
    c.sum().backward()
    eager_grad = m["means2d"].grad
    say(f"- means2d.grad after retain_grad: max rel vs eager "
        f"{max_abs(means2d_grad, eager_grad) / float(eager_grad.abs().max()):.1e}; "
        f"gradients accumulated over two replayed steps: max rel vs 2x one step {doubled:.1e}")

    # a loss of meta's tensors: the backward graph takes the images' gradients alone, so this backward runs the
    # call again eagerly
    for _ in range(3):
        for t in leaves:
            t.grad = None
        c, a, m = call(leaves, px, True)
        (c.sum() + m["depths"].sum() + m["conics"].sum()).backward()
    replayed = [t.grad.clone() for t in leaves[:5]]
    for t in leaves:
        t.grad = None
    c, a, m = call(leaves, px, False)
    (c.sum() + m["depths"].sum() + m["conics"].sum()).backward()
    worst = max(max_abs(r, t.grad) / float(t.grad.abs().max()) for r, t in zip(replayed, leaves[:5]))
    say(f"- a loss of the images and meta's depths and conics (recomputed eagerly): gradients against eager, "
        f"max rel {worst:.1e}")

    # .grad zeroed in place each step (kept across replays): the gradients stay right
    for t in leaves:
        t.grad = None
    for _ in range(4):
        c, a, m = call(leaves, px, True)
        c.sum().backward()
        stepped = [t.grad.clone() for t in leaves[:5]]
        for t in leaves[:5]:
            t.grad.zero_()
    for t in leaves:
        t.grad = None
    c, a, m = call(leaves, px, False)
    c.sum().backward()
    worst = max(max_abs(s, t.grad) / float(t.grad.abs().max()) for s, t in zip(stepped, leaves[:5]))
    say(f"- .grad zeroed in place between 4 steps: last step's gradients against eager, max rel {worst:.1e}")

    # a second backward (retain_graph) through a replay's outputs: the buffers no longer hold what the
    # forward saved (the backward replay freed it into the pool), so the call is run again eagerly
    for t in leaves:
        t.grad = None
    c, a, m = call(leaves, px, True)
    loss = c.sum()
    del c, a, m
    loss.backward(retain_graph=True)
    first = [t.grad.clone() for t in leaves[:5]]
    for _ in range(2):
        call(leaves, px, True)
    loss.backward()
    worst = max(max_abs(t.grad, 2 * f) / float(f.abs().max()) for t, f in zip(leaves[:5], first))
    say(f"- second backward (retain_graph) after two more calls: accumulated gradients against twice the "
        f"first, max rel {worst:.1e}")
    c, a, m = call(leaves, px, True)
    loss = c.sum()
    del c, a, m
    once = torch.autograd.grad((loss,), leaves[:5], retain_graph=True)  # handed over: busy while held
    once = [g.clone() for g in once]  # (the buffers themselves dropped: the instance is free)
    for _ in range(2):
        call(leaves, px, True)  # the same instance serves these
    again = torch.autograd.grad((loss,), leaves[:5])
    worst = max(max_abs(g, f) / float(f.abs().max()) for g, f in zip(again, once))
    say(f"- second backward after the instance served two more calls: gradients against the first, max rel {worst:.1e}")
    del loss

    # the inputs' gradients are the graph's buffers: one a caller keeps keeps its instance busy, and is intact
    # after other calls' backwards
    for _ in range(3):
        call(leaves, px, True)
    c, a, m = call(leaves, px, True)
    kept = torch.autograd.grad((c.sum(),), leaves[:5])
    snapshot = [g.clone() for g in kept]
    del c, a, m
    for scale in (2.0, 3.0):
        c, a, m = call(leaves, px, True)
        other = torch.autograd.grad((scale * c.sum(),), leaves[:5])
        del c, a, m
    intact = all(torch.equal(k, s) for k, s in zip(kept, snapshot))
    worst = max(max_abs(o, 3.0 * s) / float(3.0 * s.abs().max()) for o, s in zip(other, snapshot))
    say(f"- gradients kept from torch.autograd.grad: intact after two more calls' backwards {intact}; the last "
        f"call's (a 3x loss) against 3x the kept, max rel {worst:.1e}")
    for t in leaves:  # a .grad that was None takes the buffer itself: set to None, the instance is free again
        t.grad = None
    c, a, m = call(leaves, px, True)
    c.sum().backward()
    del c, a, m
    held = [t.grad.clone() for t in leaves[:5]]
    c, a, m = call(leaves, px, True)
    c.sum().backward()  # (another instance, or eagerly: the first one's buffers are the leaves' .grad)
    del c, a, m
    worst = max(max_abs(t.grad, 2 * h) / float(h.abs().max()) for t, h in zip(leaves[:5], held))
    say(f"- .grad taken from None, then a second step accumulated on top: against 2x the first, max rel {worst:.1e}")
    del kept, other, snapshot, held
    for t in leaves:
        t.grad = None

    # threads rendering the same call at once
    reference = call(tensors, px, False)[0]
    errors: list[float] = []

    def render_in_thread():
        for _ in range(5):
            errors.append(max_abs(call(tensors, px, True)[0], reference))

    workers = [threading.Thread(target=render_in_thread) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    say(f"- 3 threads x 5 calls at once: {len(errors)} images, largest max abs against eager {max(errors):.1e}")

    # an output the backward reads (the alphas) changed in place before the backward: refused, as eagerly
    for _ in range(3):
        c, a, m = call(leaves, px, True)
    with torch.no_grad():
        a.mul_(1.0)
    try:
        (c.sum() + a.sum()).backward()
        say("- alphas changed in place before backward: no error (WRONG)")
    except RuntimeError as error:
        say(f"- alphas changed in place before backward: RuntimeError ({str(error)[:60]}...)")
    del c, a, m

    # an input changed in place between forward and backward: refused, as eagerly
    c, a, m = call(leaves, px, True)
    with torch.no_grad():
        leaves[0].add_(0.0)
    try:
        c.sum().backward()
        say("- input changed in place before backward: no error (WRONG)")
    except RuntimeError as error:
        say(f"- input changed in place before backward: RuntimeError ({str(error)[:60]}...)")


def timing() -> None:
    say(f"\n## Times ({torch.cuda.get_device_name()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        "medians of 5 interleaved rounds of do_bench medians)\n")
    say("| scene | call | eager ms | graphs ms | eager / graphs | host us eager | host us graphs | held MB |")
    say("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, n, px, cams in [("head", 100_000, 512, 1), ("head", 20_000, 512, 1), ("uniform", 100_000, 512, 1),
                              ("head", 100_000, 1024, 1)]:
        tensors, px = scene_tensors(kind, n, px, cams)
        leaves = leaves_of(tensors)
        graphs.RASTERIZATION_GRAPHS.clear()
        fns = {}
        for label, on in (("eager", False), ("graphs", True)):
            fns[("forward", label)] = lambda on=on: call(tensors, px, on)
            fns[("forward+backward", label)] = lambda on=on: torch.autograd.grad(
                (call(leaves, px, on)[0].sum(),), leaves[:5])
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_reserved()
        for (what, label), fn in fns.items():
            if label == "graphs":
                for _ in range(3):
                    fn()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        held = (torch.cuda.memory_reserved() - base) / 2**20  # what the graphs keep between calls
        for fn in fns.values():
            for _ in range(3):
                fn()
        rounds = {k: [] for k in fns}
        hosts = {k: [] for k in fns}
        for _ in range(5):
            for k, fn in fns.items():
                rounds[k].append(bench_ms(fn, warmup=10, rep=40))
                hosts[k].append(host_us(fn, 15))
        for what in ("forward", "forward+backward"):
            e = statistics.median(rounds[(what, "eager")])
            g = statistics.median(rounds[(what, "graphs")])
            say(f"| {kind} {n // 1000}k {px}² {cams} | {what} | {e:.3f} | {g:.3f} | {e / g:.2f}x | "
                f"{statistics.median(hosts[(what, 'eager')]):.0f} | {statistics.median(hosts[(what, 'graphs')]):.0f} | "
                f"{held:.0f} |")


def call_peaks(fn, calls: int = 5) -> tuple[list[float], float]:
    """Each call's peak memory, MB above what was allocated before the first, from a clean start (no graphs and
    nothing cached), and the most the allocator reserved over the calls, MB above what it reserved at the start."""
    graphs.RASTERIZATION_GRAPHS.clear()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    peaks, reserved = [], 0.0
    for _ in range(calls):
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
        reserved = max(reserved, (torch.cuda.max_memory_reserved() - base_reserved) / 2**20)
    return peaks, reserved


def memory() -> None:
    """Forward+backward peak memory per call (from a clean start, .grad kept, as gpu_compare.peak_mb measures
    over three calls) with the outputs dropped before the backward (gpu_compare's loop) and held through it (a
    training step that keeps them), gsplat unpacked against ours; and what stays allocated and reserved."""
    from gpu_compare import render

    say("\n## Forward+backward memory, outputs dropped or held through the backward\n")
    say("| cell | pattern | gsplat peak MB, calls 1-5 | ours peak MB, calls 1-5 | most reserved MB, gsplat / ours | "
        "ours held after, MB | ours reserved after, MB |")
    say("| --- | --- | --- | --- | --- | --- | --- |")
    for n, px, cams in ((20_000, 512, 1), (100_000, 512, 1), (250_000, 512, 1), (100_000, 1024, 1),
                        (250_000, 1024, 1), (20_000, 512, 8)):
        scene = head_like_scene(n, px, px, n_cameras=cams, seed=0).to("cuda")
        leaves = [t.detach().clone().requires_grad_() for t in (scene.means, scene.quats, scene.scales,
                                                                scene.opacities, scene.colors)]
        s = type(scene)(*leaves, scene.viewmats, scene.Ks, scene.width, scene.height)
        for lib in ("gsplat", "instant4d"):
            render(lib, s, False)[0].sum().backward()  # (.grad kept, as in gpu_compare)

        def dropped(lib):
            render(lib, s, False)[0].sum().backward()

        def held(lib):
            colors, alphas, meta = render(lib, s, False)
            colors.sum().backward()

        for name, fn in (("dropped", dropped), ("held", held)):
            theirs, theirs_reserved = call_peaks(lambda: fn("gsplat"))
            torch.cuda.empty_cache()
            start_alloc, start_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
            ours, ours_reserved = call_peaks(lambda: fn("instant4d"))
            torch.cuda.empty_cache()
            held_after = (torch.cuda.memory_allocated() - start_alloc) / 2**20
            reserved_after = (torch.cuda.memory_reserved() - start_reserved) / 2**20
            say(f"| head {n // 1000}k / {px}² / {cams} | {name} | {' '.join(f'{p:.1f}' for p in theirs)} | "
                f"{' '.join(f'{p:.1f}' for p in ours)} | {theirs_reserved:.0f} / {ours_reserved:.0f} | "
                f"{held_after:.1f} | {reserved_after:.1f} |")
        del leaves, s, scene
        graphs.RASTERIZATION_GRAPHS.clear()


def main():
    now = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    say(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, {now}\n")
    parts = sys.argv[1:] or ["equivalence", "rules", "timing"]
    for part in parts:
        {"equivalence": equivalence, "rules": rules, "timing": timing, "memory": memory}[part]()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "graphs.md"), "w") as f:
        f.write("\n".join(LINES) + "\n")


if __name__ == "__main__":
    main()
