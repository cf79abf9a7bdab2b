"""Tests for the synthetic training-pair generator: exact flow, determinism, statistics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from rafttool.train.synthetic import (
    SyntheticFlowConfig,
    SyntheticFlowDataset,
    _limbed_shape,
    _shape,
    displacement_stats,
)
from rafttool.train.textures import PHOTO_FILES, TextureBank, load_photos

H, W = 64, 80


def _geometric(**overrides: object) -> SyntheticFlowConfig:
    """Frames that must agree exactly through the flow: no photometric change, no erasing."""
    return SyntheticFlowConfig(height=H, width=W, photometric=False, erase_prob=0.0, debug=True, **overrides)


def _visible(sample: dict[str, np.ndarray], band: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels whose match is inside frame 2, on the same layer there, and away from layer edges.

    Computed from the layer-id maps alone (not from the generator's internals):
    a frame-1 pixel is visible in frame 2 if the frame-2 pixel it lands on
    belongs to the same layer; edge bands are excluded because anti-aliased
    borders blend two layers that move differently.
    """
    ids1, ids2, flow = sample["layers1"], sample["layers2"], sample["flow"]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    x2, y2 = xs + flow[..., 0], ys + flow[..., 1]
    inside = (x2 >= 0) & (x2 <= W - 1) & (y2 >= 0) & (y2 <= H - 1)
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)

    def edges(ids: np.ndarray) -> np.ndarray:
        f = ids.astype(np.float32)
        return cv2.dilate(f, kernel) != cv2.erode(f, kernel)

    xi = np.clip(np.rint(x2), 0, W - 1).astype(int)
    yi = np.clip(np.rint(y2), 0, H - 1).astype(int)
    ok = inside & ~edges(ids1) & ~edges(ids2)[yi, xi] & (ids2[yi, xi] == ids1)
    return ok, x2, y2


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"driving_prob": 1.0},
        {"driving_prob": 1.0, "slow_ego_prob": 1.0},
        {"driving_prob": 0.0, "zoom_prob": 1.0},
        {"low_contrast_prob": 1.0},
        {"driving_prob": 1.0, "h_flip_prob": 1.0, "v_flip_prob": 1.0},
        {"limbed_prob": 1.0},
        {"parallax_prob": 1.0},
    ],
    ids=["default", "driving", "stopped-driving", "zoom", "low-contrast", "mirrored-driving", "limbed", "parallax"],
)
def test_warping_frame2_with_gt_flow_reproduces_frame1(overrides: dict[str, float]) -> None:
    ds = SyntheticFlowDataset(_geometric(**overrides), seed=1)
    mean_errors, exact_errors, visible = [], [], []
    for i in range(10):
        s = ds.generate(i)
        ok, x2, y2 = _visible(s)
        warped = cv2.remap(s["image2"], x2, y2, cv2.INTER_LINEAR)
        diff = np.abs(warped - s["image1"]).mean(-1)
        visible.append(ok.mean())
        if not ok.any():  # the whole view moved out of these tiny frames
            continue
        mean_errors.append(diff[ok].mean())
        # Where the match falls on a pixel centre the check needs no interpolation,
        # which otherwise blurs sharp textures by a few grey levels.
        on_grid = ok & (np.abs(x2 - np.rint(x2)) < 0.1) & (np.abs(y2 - np.rint(y2)) < 0.1)
        xi, yi = np.rint(x2[on_grid]).astype(int), np.rint(y2[on_grid]).astype(int)
        exact_errors.append(np.abs(s["image2"][yi, xi] - s["image1"][on_grid]).mean(-1))
    assert np.mean(visible) > 0.25
    assert np.mean(mean_errors) < 1.2
    exact = np.concatenate(exact_errors)
    assert exact.size > 100
    assert exact.mean() < 0.8


def _thin_fraction_and_attachment(shape_fn: object, seed: int) -> tuple[float, float]:
    """Mean share of coverage within 3 px of the outline; worst share held by the largest part."""
    rng = np.random.default_rng(seed)
    near, attached = [], []
    for _ in range(30):
        mask = np.pad((shape_fn(rng, 120.0) > 0.1).astype(np.uint8), 2)
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        near.append((dist[mask > 0] <= 3).mean())
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        attached.append(stats[1:, cv2.CC_STAT_AREA].max() / stats[1:, cv2.CC_STAT_AREA].sum())
    return float(np.mean(near)), float(np.min(attached))


def test_limbed_objects_are_thin_and_in_one_piece() -> None:
    limbed_thin, limbed_attached = _thin_fraction_and_attachment(_limbed_shape, seed=1)
    plain_thin, _ = _thin_fraction_and_attachment(_shape, seed=1)
    assert limbed_thin > 1.5 * plain_thin  # limbs put much of the object near its outline
    assert limbed_attached == 1.0  # every limb hangs on the body: objects move as one piece
    assert SyntheticFlowConfig().limbed_prob == 0.0  # older sample streams stay as they were


def test_a_stopped_camera_leaves_the_road_near_static() -> None:
    """slow_ego_prob: the ground plane's bottom rows barely move, unlike under forward motion."""

    def road_motion(slow: float) -> float:
        config = _geometric(driving_prob=1.0, slow_ego_prob=slow, min_layers=0, max_layers=0, scale_prob=0.0)
        flows = [SyntheticFlowDataset(config, seed=5).generate(i)["flow"][-4:] for i in range(8)]
        return float(np.median(np.linalg.norm(np.concatenate(flows), axis=-1)))

    stopped, driving = road_motion(1.0), road_motion(0.0)
    assert stopped < 0.3 * driving, (stopped, driving)


def test_parallax_scenes_slide_along_one_direction_nearer_layers_faster() -> None:
    """parallax_prob: one direction for the whole pair (horizontal for stereo), and a layer drawn in
    front of another moves more, as nearer surfaces do under camera translation."""
    ds = SyntheticFlowDataset(_geometric(parallax_prob=1.0), seed=6)
    horizontal, correlations = 0, []
    for i in range(12):
        s = ds.generate(i)
        flow, ids = s["flow"].reshape(-1, 2), s["layers1"].ravel()
        moving = np.linalg.norm(flow, axis=1) > 0.5
        direction = flow[moving].sum(0) / np.linalg.norm(flow[moving].sum(0))
        across = flow[moving] @ np.array([-direction[1], direction[0]])
        assert np.abs(across).max() < 1e-3 * np.abs(flow).max() + 1e-4  # every vector is parallel
        horizontal += bool(np.abs(flow[:, 1]).max() < 1e-4)
        speeds = [np.median(np.abs(flow[ids == k] @ direction)) for k in np.unique(ids)]
        correlations.append(np.corrcoef(np.arange(len(speeds)), speeds)[0, 1])
    assert 2 <= horizontal <= 10  # stereo pairs, and other sideways directions
    assert np.median(correlations) > 0.8
    assert SyntheticFlowConfig().parallax_prob == 0.0  # older sample streams stay as they were


@pytest.mark.parametrize("axis", [1, 0], ids=["left-right", "up-down"])
def test_mirroring_flips_the_scene_and_negates_that_flow_component(axis: int) -> None:
    key = "h_flip_prob" if axis == 1 else "v_flip_prob"
    plain = SyntheticFlowDataset(SyntheticFlowConfig(height=H, width=W, debug=True), seed=4).generate(2)
    mirrored = SyntheticFlowDataset(SyntheticFlowConfig(height=H, width=W, debug=True, **{key: 1.0}), seed=4).generate(2)
    for name in ("image1", "image2", "valid", "layers1", "layers2"):
        np.testing.assert_array_equal(mirrored[name], np.flip(plain[name], axis))
    expected = np.flip(plain["flow"], axis) * (np.array([-1.0, 1.0]) if axis == 1 else np.array([1.0, -1.0]))
    np.testing.assert_array_equal(mirrored["flow"], expected.astype(np.float32))
    assert np.abs(plain["flow"][..., 1 - axis]).max() > 0.1  # the sign change was tested on real motion


def test_layer_ids_move_with_the_flow() -> None:
    """A visible frame-1 pixel keeps its layer id where the flow sends it (occlusion bookkeeping)."""
    s = SyntheticFlowDataset(_geometric(), seed=3).generate(0)
    ok, _, _ = _visible(s, band=0)
    assert 0 < ok.mean() <= 1
    assert len(np.unique(s["layers1"])) >= 2


def test_same_index_is_identical_and_others_differ() -> None:
    cfg = SyntheticFlowConfig(height=H, width=W)
    a, b = SyntheticFlowDataset(cfg, seed=7), SyntheticFlowDataset(cfg, seed=7)
    s1, s2 = a.generate(5), b.generate(5)
    for key in s1:
        np.testing.assert_array_equal(s1[key], s2[key])
    assert not np.array_equal(a.generate(6)["image1"], s1["image1"])
    assert not np.array_equal(SyntheticFlowDataset(cfg, seed=8).generate(5)["image1"], s1["image1"])


def test_items_are_tensors_with_expected_shapes_and_ranges() -> None:
    ds = SyntheticFlowDataset(SyntheticFlowConfig(height=H, width=W))
    for i in range(4):
        item = ds[i]
        assert set(item) == {"image1", "image2", "flow", "valid"}
        for key in ("image1", "image2"):
            img = item[key]
            assert img.shape == (3, H, W) and img.dtype == torch.float32
            assert img.min() >= 0 and img.max() <= 255
            assert torch.equal(img, img.round())
        assert item["flow"].shape == (2, H, W) and item["flow"].dtype == torch.float32
        assert torch.isfinite(item["flow"]).all()
        assert item["valid"].shape == (H, W) and item["valid"].dtype == torch.float32
        assert set(item["valid"].unique().tolist()) <= {0.0, 1.0}


def test_all_photometric_effects_together_keep_valid_ranges() -> None:
    cfg = SyntheticFlowConfig(
        height=H,
        width=W,
        asymmetric_prob=1.0,
        illumination_prob=1.0,
        noise_prob=1.0,
        blur_prob=1.0,
        motion_blur_prob=1.0,
        haze_prob=1.0,
        jpeg_prob=1.0,
        erase_prob=1.0,
    )
    ds = SyntheticFlowDataset(cfg)
    for i in range(3):
        s = ds.generate(i)
        for key in ("image1", "image2"):
            assert np.isfinite(s[key]).all() and s[key].min() >= 0 and s[key].max() <= 255
        assert s["image1"].std() > 0


def test_displacements_have_a_heavy_tail() -> None:
    ds = SyntheticFlowDataset(SyntheticFlowConfig(height=96, width=128, photometric=False, erase_prob=0.0))
    stats = displacement_stats(ds, 50)
    assert stats["p50"] < 20.0
    assert stats["p99"] > 40.0
    assert 0.0 < stats["frac_gt_40"] < 0.5


def test_dataloader_workers_yield_distinct_reproducible_samples() -> None:
    ds = SyntheticFlowDataset(SyntheticFlowConfig(height=32, width=48, length=8))
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    images = torch.cat([b["image1"] for b in batches])
    assert images.shape == (8, 3, 32, 48)
    flat = images.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(8) for j in range(i + 1, 8))
    torch.testing.assert_close(images[3], ds[3]["image1"])


def test_texture_bank_kinds_and_forbidden_photos() -> None:
    assert not any(name.startswith("motorcycle") for name in PHOTO_FILES)
    assert len(load_photos()) >= 10
    rng = np.random.default_rng(0)
    procedural = TextureBank("procedural")
    for _ in range(8):
        tex = procedural.sample(rng, 20, 30)
        pix = tex.sample(np.eye(3), 30, 20)
        assert pix.shape == (20, 30, 3) and pix.dtype == np.float32
    assert TextureBank("photos").photo_fraction == 1.0
    with pytest.raises(ValueError):
        TextureBank("noise")


def test_low_contrast_textures_are_faint_and_off_by_default() -> None:
    assert SyntheticFlowConfig().low_contrast_prob == 0.0
    spreads = {}
    for prob in (0.0, 1.0):
        bank, rng = TextureBank("photos+procedural", low_contrast_prob=prob), np.random.default_rng(5)
        pixels = [bank.sample(rng, 64, 64).sample(np.eye(3), 64, 64) for _ in range(12)]
        spreads[prob] = (np.median([p.std() for p in pixels]), np.median([p.mean() for p in pixels]))
    (normal_std, _), (faint_std, faint_mean) = spreads[0.0], spreads[1.0]
    assert faint_std < 0.45 * normal_std
    assert 15.0 <= faint_mean <= 140.0
