"""Tile intersection: Triton kernels vs the twin (integer outputs bit-exact), and analytic cases."""

import math

import pytest
import torch
from hypothesis import given, strategies as st

from instant4d.kernels import intersect, reference
from instant4d.kernels.intersect import intersect_tiles, isect_offset_encode, isect_tiles
from splats2d import random_splats


def packed_inputs(radii, fields, n_images):
    """The visible (image, Gaussian) entries of each [I, N, ...] field, and isect_tiles' packed keywords."""
    image_ids, gaussian_ids = (radii > 0).all(-1).nonzero(as_tuple=True)
    kwargs = dict(packed=True, n_images=n_images, image_ids=image_ids.int(), gaussian_ids=gaussian_ids.int())
    return [f[image_ids, gaussian_ids] for f in fields], kwargs


# FLAT_ABOVE settings: every block walks its rectangles lane by lane, or as one list of items, or by the rule
WALKS = st.sampled_from([1 << 20, 0, intersect.FLAT_ABOVE])


def assert_matches_twin(actual, expected, unbounded=None):
    """isect_tiles' outputs (tiles_per_gauss, isect_ids, flatten_ids) against the twin's: bit for bit, but
    where bounded buffers were too small (``unbounded``, the twin's outputs without the bound, has more
    intersections): then which of the real intersections fill the buffers is not specified (the count
    says it overflowed, rasterization makes NaN images of it), so each kept (key, flat id) must be one of
    the real ones, once, and the keys sorted."""
    assert actual[0].dtype == expected[0].dtype and torch.equal(actual[0], expected[0]), "tiles_per_gauss"
    for name, a, e in zip(("isect_ids", "flatten_ids"), actual[1:], expected[1:]):
        assert a.dtype == e.dtype and a.shape == e.shape, name
    if unbounded is None or unbounded[1].numel() <= actual[1].numel():
        for name, a, e in zip(("isect_ids", "flatten_ids"), actual[1:], expected[1:]):
            assert torch.equal(a, e), name
        return
    kept = set(zip(actual[1].tolist(), actual[2].tolist()))
    assert len(kept) == actual[1].numel(), "an intersection kept twice"
    assert kept <= set(zip(unbounded[1].tolist(), unbounded[2].tolist())), "not a real intersection"
    assert bool((actual[1][1:] >= actual[1][:-1]).all()), "keys not sorted"


@given(
    n_images=st.integers(1, 3),
    # around one and two of the kernels' blocks (intersect.BLOCK Gaussians a program)
    n=st.sampled_from([0, 1, 7, intersect.BLOCK - 1, intersect.BLOCK + 1, 2 * intersect.BLOCK - 1, 2 * intersect.BLOCK + 1]),
    width=st.integers(1, 70),
    height=st.integers(1, 50),
    tile_size=st.sampled_from([8, 16, 12]),
    packed=st.booleans(),
    walk=WALKS,
    seed=st.integers(0, 2**16),
)
def test_triton_matches_twin_exactly(interpret_triton, n_images, n, width, height, tile_size, packed, walk, seed):
    s = random_splats(n_images, n, width, height, 3, seed, tile_size)
    args = (s["tile_width"], s["tile_height"])
    means2d, radii, depths = s["means2d"].float(), s["radii"], s["depths"].float()
    kwargs = {}
    if packed:
        (means2d, radii, depths), kwargs = packed_inputs(radii, (means2d, radii, depths), n_images)
    expected = reference.isect_tiles(means2d, radii, depths, tile_size, *args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(intersect, "FLAT_ABOVE", walk)
        actual = isect_tiles(means2d, radii, depths, tile_size, *args, backend="triton", **kwargs)
    for name, a, e in zip(("tiles_per_gauss", "isect_ids", "flatten_ids"), actual, expected):
        assert a.dtype == e.dtype and torch.equal(a, e), name
    offsets = isect_offset_encode(actual[1], n_images, *args)
    assert offsets.shape == (n_images, s["tile_height"], s["tile_width"])


@given(
    n_images=st.integers(1, 2),
    n=st.sampled_from([0, 1, 7, 257]),
    width=st.integers(1, 160),  # 8 px tiles: rectangles past REACH_MAX_TILES too
    height=st.integers(1, 120),
    tile_size=st.sampled_from([8, 16, 12]),
    packed=st.booleans(),
    bound=st.sampled_from([None, 0, 40, 4000]),
    walk=WALKS,
    seed=st.integers(0, 2**16),
)
def test_reach_test_matches_twin_exactly(interpret_triton, n_images, n, width, height, tile_size, packed, bound,
                                         walk, seed):
    """With conics and opacities, kernels and twin keep the same tiles (integer outputs bit-exact)."""
    s = random_splats(n_images, n, width, height, 3, seed, tile_size)
    args = (s["tile_width"], s["tile_height"])
    fields = [s[k].float() for k in ("means2d", "depths", "conics", "opacities")] + [s["radii"]]
    kwargs = dict(max_intersections=bound) if bound is not None and not packed else {}
    if packed:
        fields, kwargs = packed_inputs(s["radii"], fields, n_images)
    means2d, depths, conics, opacities, radii = fields
    kwargs.update(conics=conics, opacities=opacities)
    expected = reference.isect_tiles(means2d, radii, depths, tile_size, *args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(intersect, "FLAT_ABOVE", walk)
        actual = isect_tiles(means2d, radii, depths, tile_size, *args, backend="triton", **kwargs)
    kwargs.pop("max_intersections", None)
    assert_matches_twin(actual, expected, reference.isect_tiles(means2d, radii, depths, tile_size, *args, **kwargs))


@given(
    n_images=st.integers(1, 2),
    n=st.sampled_from([1, 7, 257]),
    width=st.integers(1, 160),  # 8 px tiles: rectangles past REACH_MAX_TILES too
    height=st.integers(1, 120),
    reach=st.booleans(),
    walk=WALKS,
    seed=st.integers(0, 2**16),
)
def test_unsorted_intersections_match_twin_exactly(interpret_triton, n_images, n, width, height, reach, walk, seed):
    """sort=False: each Gaussian's intersections at its slots in rectangle order, as the twin writes them (the
    count kernel walks only the rectangles whose tiles it tests, in lockstep or as a list)."""
    s = random_splats(n_images, n, width, height, 3, seed, 8)
    args = (s["means2d"].float(), s["radii"], s["depths"].float(), 8, s["tile_width"], s["tile_height"])
    kwargs = dict(conics=s["conics"].float(), opacities=s["opacities"].float()) if reach else {}
    expected = reference.isect_tiles(*args, sort=False, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(intersect, "FLAT_ABOVE", walk)
        actual = isect_tiles(*args, sort=False, backend="triton", **kwargs)
    for name, a, e in zip(("tiles_per_gauss", "isect_ids", "flatten_ids"), actual, expected):
        assert a.dtype == e.dtype and torch.equal(a, e), name


@given(
    n=st.sampled_from([1, 7, 257]),
    guess=st.sampled_from([0, 0.5, 1.0, 3.0]),  # the last call's count, as a fraction of this one's
    seed=st.integers(0, 2**16),
)
def test_buffers_sized_from_the_last_call_match_twin_exactly(interpret_triton, n, guess, seed):
    """A call sized like the last one writes into buffers sized from the last count; too small, it runs the emit
    kernel and the sort again with the real count; too large, the outputs are cut to the real count."""
    s = random_splats(2, n, 90, 70, 3, seed, 16)
    args = (s["means2d"].float(), s["radii"], s["depths"].float(), 16, s["tile_width"], s["tile_height"])
    kwargs = dict(conics=s["conics"].float(), opacities=s["opacities"].float())
    expected = reference.isect_tiles(*args, **kwargs)
    key = (args[0].device, 2 * n, 2, s["tile_width"], s["tile_height"], False, True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(intersect, "_COUNT_GUESSES", {key: int(guess * expected[1].numel())})
        patch.setattr(intersect, "GUESS_MIN", 0)
        actual = intersect_tiles(*args, **kwargs, backend="triton")
        assert intersect._COUNT_GUESSES[key] >= expected[1].numel()  # the next call's guess: this count, or more
    for name, a, e in zip(("tiles_per_gauss", "isect_ids", "flatten_ids"), actual, expected):
        assert a.dtype == e.dtype and torch.equal(a, e), name
    assert int(actual.n_isects) == expected[1].numel()
    assert torch.equal(actual.isect_offsets, isect_offset_encode(expected[1], 2, s["tile_width"], s["tile_height"]))


@given(
    n=st.sampled_from([1, 40, 300]),
    run=st.sampled_from([16, 32, None]),  # None: the radix sort of all keys instead of buckets
    merge=st.sampled_from([16, intersect.SORT_MERGE]),  # keys a merge step
    packed=st.booleans(),
    spare=st.sampled_from([None, -7, 0, 50]),
    seed=st.integers(0, 2**16),
)
def test_bucket_sort_of_long_tiles_matches_twin_exactly(interpret_triton, n, run, merge, packed, spare, seed):
    """Tiles holding more than SORT_RUN intersections sort as runs merged pairwise (here up to 6
    runs of 16: three rounds, odd runs left over; SORT_MERGE keys a merge step), shorter ones ranked whole in blocks of
    SORT_BLOCK = 16, or all keys go through one radix sort (long tiles on average); depths with
    ties, -0.0 and negative values order by their raw bits within a tile, as the twin's 64-bit keys
    do; bounded buffers too small keep real intersections, sorted."""
    s = random_splats(2, n, 48, 40, 3, seed, 16)  # 3 x 3 tiles: long tiles
    depths = (s["depths"].float() * 4).round() / 4  # ties
    depths[..., : n // 5] = -0.0
    depths[..., n // 5 : n // 4] = -1.5
    fields = [s["means2d"].float(), s["radii"], depths, s["conics"].float(), s["opacities"].float()]
    args = (s["tile_width"], s["tile_height"])
    kwargs = {}
    if packed:
        fields, kwargs = packed_inputs(s["radii"], fields, 2)
    means2d, radii, depths, conics, opacities = fields
    kwargs.update(conics=conics, opacities=opacities)
    if spare is not None and not packed:
        total = int(reference.isect_tiles(means2d, radii, depths, 16, *args, **kwargs)[0].sum())
        kwargs["max_intersections"] = max(0, total + spare)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(intersect, "SORT_BLOCK", 16)
        patch.setattr(intersect, "SORT_RUN", run or 16)
        patch.setattr(intersect, "SORT_MERGE", merge)
        patch.setattr(intersect, "SORT_BUCKET_MAX_AVERAGE", 1 << 30 if run else 0)
        actual = isect_tiles(means2d, radii, depths, 16, *args, backend="triton", **kwargs)
    expected = reference.isect_tiles(means2d, radii, depths, 16, *args, **kwargs)
    kwargs.pop("max_intersections", None)
    assert_matches_twin(actual, expected, reference.isect_tiles(means2d, radii, depths, 16, *args, **kwargs))


@given(
    n=st.sampled_from([0, 1, 40, 300]),
    bucket=st.booleans(),
    spare=st.sampled_from([None, -7, 0, 50]),
    seed=st.integers(0, 2**16),
)
def test_intersect_tiles_offsets_and_count_match_the_stage_functions(interpret_triton, n, bucket, spare, seed):
    """intersect_tiles (what rasterization calls): its offsets, taken from the bucket sort's starts or
    from isect_offset_encode, equal isect_offset_encode of its keys, and its count the sum of
    tiles_per_gauss, for the kernels (both sorts) and the twin, bounded buffers too (too small ones:
    the count, which tells the overflow, and real intersections, sorted)."""
    s = random_splats(2, n, 48, 40, 3, seed, 16)
    args = (s["means2d"].float(), s["radii"], s["depths"].float(), 16, s["tile_width"], s["tile_height"])
    kwargs = dict(conics=s["conics"].float(), opacities=s["opacities"].float())
    unbounded = reference.isect_tiles(*args, **kwargs)
    if spare is not None:
        kwargs["max_intersections"] = max(0, int(unbounded[0].sum()) + spare)
    overflow = spare is not None and spare < 0 and int(unbounded[0].sum()) > 0
    for backend in ("triton", "torch"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(intersect, "SORT_BUCKET_MAX_AVERAGE", 1 << 30 if bucket else 0)
            out = intersect_tiles(*args, backend=backend, **kwargs)
        if not overflow:
            assert torch.equal(out.isect_offsets, isect_offset_encode(out.isect_ids, 2, *args[4:])), backend
        assert int(out.isect_offsets.max()) <= out.flatten_ids.numel(), backend  # the compositing reads between them
        assert out.n_isects.shape == (1,) and int(out.n_isects) == int(out.tiles_per_gauss.sum()), backend
        assert_matches_twin(out[:3], reference.isect_tiles(*args, **kwargs), unbounded)


@given(n=st.sampled_from([1, 50, 300]), tile_size=st.sampled_from([8, 16]), seed=st.integers(0, 2**16))
def test_reach_test_drops_only_tiles_the_gaussian_cannot_reach(n, tile_size, seed):
    """Every (Gaussian, tile) pair of the rectangle that the reach test drops has alpha < 1/255 at all
    of the tile's pixel centres (float64), and it drops some: the test is exact where it matters."""
    s = random_splats(1, n, 96, 80, 3, seed, tile_size)
    means2d, conics, opacities, radii = s["means2d"][0], s["conics"][0], s["opacities"][0], s["radii"][0]
    tile_min, tile_max = reference.tile_bounds(means2d, radii, tile_size, s["tile_width"], s["tile_height"])
    dropped = kept = 0
    for g in range(n):
        if not bool((radii[g] > 0).all()):
            continue
        xs, ys = torch.meshgrid(torch.arange(int(tile_min[g, 0]), int(tile_max[g, 0])),
                                torch.arange(int(tile_min[g, 1]), int(tile_max[g, 1])), indexing="xy")
        tx, ty = xs.reshape(-1), ys.reshape(-1)
        if tx.numel() == 0:
            continue
        k = tx.numel()
        reach = reference.tile_reachable(means2d[g].expand(k, 2), conics[g].expand(k, 3), opacities[g].expand(k),
                                         tx, ty, tile_size)
        kept += int(reach.sum())
        for x, y in zip(tx[~reach].tolist(), ty[~reach].tolist()):
            dropped += 1
            px = torch.arange(x * tile_size, (x + 1) * tile_size, dtype=torch.float64) + 0.5
            py = torch.arange(y * tile_size, (y + 1) * tile_size, dtype=torch.float64) + 0.5
            dx = means2d[g, 0] - px[None, :]
            dy = means2d[g, 1] - py[:, None]
            a, b, c = conics[g]
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            assert float((opacities[g] * torch.exp(-sigma)).max()) < 1 / 255
    if n == 300:  # random ellipses leave some corners of their rectangles out
        assert dropped > 0 and kept > 0


@given(n=st.sampled_from([1, 60, 257]), seed=st.integers(0, 2**16))
def test_reach_test_changes_no_image(n, seed):
    """Compositing the reached tiles only gives the rectangle's images and gradients (float64 twin:
    the walks differ only by Gaussians that contribute nothing, so the results agree to rounding)."""
    s = random_splats(2, n, 64, 48, 3, seed, 16)
    tiles = (16, s["tile_width"], s["tile_height"])
    outputs = []
    for kwargs in ({}, dict(conics=s["conics"], opacities=s["opacities"])):
        _, isect_ids, flatten_ids = reference.isect_tiles(s["means2d"], s["radii"], s["depths"], *tiles, **kwargs)
        offsets = reference.isect_offset_encode(isect_ids, 2, s["tile_width"], s["tile_height"])
        leaves = [s[k].clone().requires_grad_() for k in ("means2d", "conics", "colors", "opacities")]
        colors, alphas = reference.rasterize_to_pixels(*leaves, 64, 48, 16, offsets, flatten_ids,
                                                       backgrounds=s["backgrounds"])
        if colors.requires_grad:  # not when no Gaussian touches the image
            (colors.sum() + alphas.sum()).backward()
        grads = [torch.zeros_like(leaf) if leaf.grad is None else leaf.grad for leaf in leaves]
        outputs.append([colors, alphas] + grads + [flatten_ids.numel()])
    for full, reached in zip(outputs[0][:-1], outputs[1][:-1]):
        torch.testing.assert_close(reached, full, rtol=1e-12, atol=1e-12)
    assert outputs[1][-1] <= outputs[0][-1]


def test_reach_test_skips_rectangles_past_its_limit(interpret_triton):
    """A thin diagonal ellipse misses most of its rectangle; past REACH_MAX_TILES tiles the whole
    rectangle is kept (kernels and twin alike), at or under it only the tiles reached."""
    results = []
    for radius in (40, 200):  # 6 x 6 = 36 tiles of 16 px, then 26 x 26 = 676
        sigma_major, sigma_minor = radius / 3.0, 1.0
        cov = 0.5 * torch.tensor([[sigma_major**2 + sigma_minor**2, sigma_major**2 - sigma_minor**2],
                                  [sigma_major**2 - sigma_minor**2, sigma_major**2 + sigma_minor**2]])
        inverse = torch.linalg.inv(cov)
        conics = torch.stack([inverse[0, 0], inverse[0, 1], inverse[1, 1]])[None, None]
        means2d = torch.tensor([[[208.0, 208.0]]])
        radii = torch.full((1, 1, 2), radius, dtype=torch.int32)
        args = (means2d, radii, torch.ones(1, 1), 16, 26, 26)
        kwargs = dict(conics=conics, opacities=torch.ones(1, 1))
        rectangle = int(reference.isect_tiles(*args)[0])
        expected = reference.isect_tiles(*args, **kwargs)
        actual = isect_tiles(*args, backend="triton", **kwargs)
        for a, e in zip(actual, expected):
            assert torch.equal(a, e)
        results.append((rectangle, int(actual[0])))
    (small_rect, small_reached), (big_rect, big_reached) = results
    assert small_rect <= reference.REACH_MAX_TILES and small_reached < small_rect
    assert big_rect > reference.REACH_MAX_TILES and big_reached == big_rect


def test_reach_test_needs_both_conics_and_opacities():
    s = random_splats(1, 5, 32, 32, 3, 0, 16)
    args = (s["means2d"].float(), s["radii"], s["depths"].float(), 16, s["tile_width"], s["tile_height"])
    with pytest.raises(ValueError, match="conics and opacities"):
        isect_tiles(*args, conics=s["conics"].float())
    with pytest.raises(ValueError, match="conics"):
        isect_tiles(*args, conics=s["conics"][..., :2].float(), opacities=s["opacities"].float())


def test_single_gaussian_covers_its_tile_rectangle():
    # centre (40, 20), radii (10, 3), 16 px tiles: x spans [30, 50] -> tiles 1..3, y [17, 23] -> tile 1
    means2d = torch.tensor([[[40.0, 20.0]]])
    radii = torch.tensor([[[10, 3]]], dtype=torch.int32)
    depths = torch.tensor([[2.0]])
    tiles_per_gauss, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, 16, 4, 3)
    assert tiles_per_gauss.tolist() == [[3]]
    tile_bits = (4 * 3).bit_length()
    assert ((isect_ids >> 32) & ((1 << tile_bits) - 1)).tolist() == [5, 6, 7]
    depth_bits = torch.tensor([2.0]).view(torch.int32).item()
    assert ((isect_ids & 0xFFFFFFFF) == depth_bits).all()
    assert flatten_ids.tolist() == [0, 0, 0]


def test_keys_sort_by_image_then_tile_then_depth():
    means2d = torch.tensor([[[8.0, 8.0], [8.0, 8.0], [24.0, 8.0]], [[8.0, 8.0], [8.0, 8.0], [8.0, 8.0]]])
    radii = torch.full((2, 3, 2), 2, dtype=torch.int32)
    depths = torch.tensor([[3.0, 1.0, 2.0], [5.0, 4.0, 4.0]])
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, 16, 2, 1)
    # image 0: tile 0 holds gaussians 1 (z=1) then 0 (z=3); tile 1 holds 2; image 1: ties keep order 4, 5
    assert flatten_ids.tolist() == [1, 0, 2, 4, 5, 3]
    offsets = isect_offset_encode(isect_ids, 2, 2, 1)
    assert offsets.tolist() == [[[0, 2]], [[3, 6]]]


def test_culled_and_offscreen_gaussians_have_no_tiles():
    means2d = torch.tensor([[[8.0, 8.0], [-100.0, 8.0], [8.0, 8.0]]])
    radii = torch.tensor([[[0, 0], [3, 3], [4, 0]]], dtype=torch.int32)
    tiles_per_gauss, isect_ids, _ = isect_tiles(means2d, radii, torch.ones(1, 3), 16, 1, 1)
    assert tiles_per_gauss.tolist() == [[0, 0, 0]] and isect_ids.numel() == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tile_size=0), "tile_size"),
        (dict(radii=torch.ones(1, 4, 2)), "radii"),
        (dict(depths=torch.ones(1, 5)), "depths"),
        (dict(packed=True), "packed=True needs"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = dict(means2d=torch.rand(1, 4, 2), radii=torch.ones(1, 4, 2, dtype=torch.int32), depths=torch.ones(1, 4),
                tile_size=16, tile_width=2, tile_height=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        isect_tiles(**args)


def test_too_many_bucket_counters_take_the_radix_sort(interpret_triton):
    """The kernels index the buckets' counters in int32: a call that would need 2^31 of them (here by a
    patched SUB_BUCKETS) counts no buckets and sorts by radix, with the same outputs."""
    s = random_splats(2, 40, 48, 40, 3, 7, 16)
    args = (s["means2d"].float(), s["radii"], s["depths"].float(), 16, s["tile_width"], s["tile_height"])
    kwargs = dict(conics=s["conics"].float(), opacities=s["opacities"].float())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(intersect, "SUB_BUCKETS", 1 << 31)
        out = intersect_tiles(*args, backend="triton", **kwargs)
    expected = reference.isect_tiles(*args, **kwargs)
    assert_matches_twin(out[:3], expected)
    assert torch.equal(out.isect_offsets, isect_offset_encode(expected[1], 2, *args[4:]))
    assert int(out.n_isects) == expected[1].numel() > 0


def test_too_many_key_bits_is_an_error():
    with pytest.raises(ValueError, match="do not fit"):
        reference.isect_offset_encode(torch.zeros(0, dtype=torch.int64), 2**20, 2**7, 2**7)


@given(n=st.sampled_from([0, 1, 9, 257]), spare=st.sampled_from([-5, 0, 1, 300]), seed=st.integers(0, 2**16))
def test_bounded_buffers_match_twin_and_pad_after_the_real_intersections(interpret_triton, n, spare, seed):
    """max_intersections: same real intersections as the unbounded call, then padding; too small a
    bound keeps real intersections, sorted (which ones is not specified)."""
    s = random_splats(2, n, 40, 30, 3, seed, 16)
    args = (s["means2d"].float(), s["radii"], s["depths"].float(), 16, s["tile_width"], s["tile_height"])
    unbounded = reference.isect_tiles(*args)
    counts, full_ids, full_flat = unbounded
    bound = max(0, full_ids.numel() + spare)
    expected = reference.isect_tiles(*args, max_intersections=bound)
    actual = isect_tiles(*args, backend="triton", max_intersections=bound)
    assert_matches_twin(actual, expected, unbounded)
    real = min(bound, full_ids.numel())
    assert actual[1].numel() == bound
    assert bool((actual[1][real:] == torch.iinfo(torch.int64).max).all())
    if spare >= 0:
        assert torch.equal(actual[1][:real], full_ids) and torch.equal(actual[2][:real], full_flat)
        offsets = isect_offset_encode(actual[1], 2, s["tile_width"], s["tile_height"])
        assert torch.equal(offsets, isect_offset_encode(full_ids, 2, s["tile_width"], s["tile_height"]))


def test_bounded_buffers_reject_bad_bounds():
    s = random_splats(1, 5, 32, 32, 3, 0, 16)
    args = (s["means2d"].float(), s["radii"], s["depths"].float(), 16, s["tile_width"], s["tile_height"])
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="max_intersections"):
            isect_tiles(*args, max_intersections=bad)
