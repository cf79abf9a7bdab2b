"""Dataset finders in the official layouts (tiny fakes in tmp_path), the augmentor, and the real data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rafttool.data import (
    DatasetError,
    FlowAugmentor,
    TrainingPairs,
    detect_datasets,
    find_chairs,
    find_hd1k,
    find_kitti,
    find_list,
    find_middlebury,
    find_sintel,
    find_things,
    resize_sparse_flow,
)
from rafttool.io.flo import write_flo
from rafttool.io.kitti import write_kitti_flow

H, W = 24, 32
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def image(path: Path, seed: int = 0, gray: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W) if gray else (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def flow_field(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-5, 5, (H, W, 2)).astype(np.float32)


def flo(path: Path, flow: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_flo(path, flow_field() if flow is None else flow)
    return path


def kitti_png(path: Path, flow: np.ndarray | None = None, valid: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_kitti_flow(path, flow_field() if flow is None else flow, valid)
    return path


def mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), values.astype(np.uint8) * 255)
    return path


def pfm(path: Path, flow: np.ndarray) -> Path:
    """FlyingThings3D stores flow as 3-channel little-endian PFM, rows bottom to top."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.dstack([flow, np.zeros(flow.shape[:2], np.float32)])[::-1].astype("<f4")
    path.write_bytes(f"PF\n{flow.shape[1]} {flow.shape[0]}\n-1.0\n".encode() + data.tobytes())
    return path


def make_sintel(root: Path) -> Path:
    """alley_1 in both passes (GT for 2 and 4, frame 5 missing), ambush_2 only in final."""
    training = root / "training"
    for pass_name in ("clean", "final"):
        for frame in range(1, 5):
            image(training / pass_name / "alley_1" / f"frame_{frame:04d}.png", frame)
    for frame in (20, 21):
        image(training / "final" / "ambush_2" / f"frame_{frame:04d}.png", frame)
    nan_flow = flow_field()
    nan_flow[0, 0] = np.nan
    flo(training / "flow" / "alley_1" / "frame_0002.flo", nan_flow)
    flo(training / "flow" / "alley_1" / "frame_0004.flo")  # next frame missing
    flo(training / "flow" / "ambush_2" / "frame_0020.flo")
    invalid = np.zeros((H, W), bool)
    invalid[5, 6] = True
    mask(training / "invalid" / "alley_1" / "frame_0002.png", invalid)
    occluded = np.zeros((H, W), bool)
    occluded[:, :4] = True
    mask(training / "occlusions" / "alley_1" / "frame_0002.png", occluded)
    return training


def make_kitti2012(root: Path) -> Path:
    """000000 gray+occ+noc, 000001 colour with noc only, 000002 without GT, 000003 without frame _11."""
    training = root / "training"
    for frame in ("000000", "000002", "000003"):
        image(training / "image_0" / f"{frame}_10.png", gray=True)
        if frame != "000003":
            image(training / "image_0" / f"{frame}_11.png", 1, gray=True)
    image(training / "colored_0" / "000001_10.png")
    image(training / "colored_0" / "000001_11.png", 1)
    valid = np.zeros((H, W), bool)
    valid[::2] = True
    noc = valid.copy()
    noc[:, :8] = False
    for frame in ("000000", "000003"):
        kitti_png(training / "flow_occ" / f"{frame}_10.png", valid=valid)
        kitti_png(training / "flow_noc" / f"{frame}_10.png", valid=noc)
    kitti_png(training / "flow_noc" / "000001_10.png", valid=noc)
    return training


def make_kitti2015(root: Path) -> Path:
    training = root / "training"
    image(training / "image_2" / "000005_10.png")
    image(training / "image_2" / "000005_11.png", 1)
    kitti_png(training / "flow_occ" / "000005_10.png")
    return training


# --------------------------------------------------------------------------- finders


def test_sintel_pairs_need_gt_and_next_frame_in_that_pass(tmp_path: Path) -> None:
    training = make_sintel(tmp_path / "sintel")
    samples = find_sintel(tmp_path / "sintel")
    assert [(s.split_name, s.sequence, s.image1_path.name, s.image2_path.name) for s in samples] == [
        ("sintel-clean", "alley_1", "frame_0002.png", "frame_0003.png"),
        ("sintel-final", "alley_1", "frame_0002.png", "frame_0003.png"),
        ("sintel-final", "ambush_2", "frame_0020.png", "frame_0021.png"),
    ]
    clean = samples[0]
    assert clean.image1_path == training / "clean" / "alley_1" / "frame_0002.png"
    assert clean.flow_path == training / "flow" / "alley_1" / "frame_0002.flo"
    assert clean.occlusion_path == training / "occlusions" / "alley_1" / "frame_0002.png"
    assert clean.invalid_path == training / "invalid" / "alley_1" / "frame_0002.png"
    assert samples[2].occlusion_path is None and samples[2].invalid_path is None
    assert {s.family for s in samples} == {"sintel"}
    # The root may be the training folder, the dataset folder, or a folder that holds it.
    assert find_sintel(training) == samples
    assert find_sintel(tmp_path) == samples


def test_sintel_load_masks(tmp_path: Path) -> None:
    make_sintel(tmp_path)
    data = find_sintel(tmp_path)[0].load()
    assert data["image1"].shape == (H, W, 3) and data["image1"].dtype == np.uint8
    assert data["flow"].shape == (H, W, 2) and data["flow"].dtype == np.float32
    assert np.isnan(data["flow"][0, 0]).all()
    expected_valid = np.ones((H, W), bool)
    expected_valid[0, 0] = False  # unknown GT
    expected_valid[5, 6] = False  # Sintel invalid mask
    np.testing.assert_array_equal(data["valid"], expected_valid)
    assert data["occluded"][:, :4].all() and not data["occluded"][:, 4:].any()
    assert "noc_valid" not in data


def test_kitti_2012_vs_2015_and_gt_rules(tmp_path: Path) -> None:
    make_kitti2012(tmp_path / "kitti2012")
    make_kitti2015(tmp_path / "kitti2015")
    samples = find_kitti(tmp_path)
    assert [(s.split_name, s.sequence) for s in samples] == [
        ("kitti-2012", "000000"),
        ("kitti-2012", "000001"),
        ("kitti-2015", "000005"),
    ]
    gray, color, k15 = samples
    assert gray.image1_path.parent.name == "image_0" and color.image1_path.parent.name == "colored_0"
    assert gray.flow_path.parent.name == "flow_occ" and gray.noc_flow_path.parent.name == "flow_noc"
    assert color.flow_path.parent.name == "flow_noc"  # only noc GT exists for this frame
    assert k15.image1_path.parent.name == "image_2" and k15.noc_flow_path is None
    assert all(s.family == "kitti" and s.sparse for s in samples)

    data = gray.load()
    assert data["image1"].shape == (H, W, 3)
    assert (data["image1"][..., 0] == data["image1"][..., 2]).all()  # grayscale replicated to RGB
    assert data["valid"][::2].all() and not data["valid"][1::2].any()
    assert np.isnan(data["flow"][1::2]).all() and np.isfinite(data["flow"][::2]).all()
    assert (data["noc_valid"] <= data["valid"]).all() and not data["noc_valid"][:, :8].any()


def test_chairs_official_and_examples_layouts(tmp_path: Path) -> None:
    data = tmp_path / "FlyingChairs_release" / "data"
    for stem in ("00001", "00002"):
        image(data / f"{stem}_img1.ppm")
        flo(data / f"{stem}_flow.flo")
    image(data / "00001_img2.ppm", 1)  # 00002 has no second frame
    examples = tmp_path / "flyingchairs" / "examples"
    image(examples / "0000000-img0.ppm")
    image(examples / "0000000-img1.ppm", 1)
    flo(examples / "0000000-gt.flo")
    samples = find_chairs(tmp_path)
    assert sorted((s.sequence, s.image2_path.name, s.flow_path.name) for s in samples) == [
        ("0000000", "0000000-img1.ppm", "0000000-gt.flo"),
        ("00001", "00001_img2.ppm", "00001_flow.flo"),
    ]
    assert {s.split_name for s in samples} == {"chairs"}
    assert samples[0].load()["valid"].all()


def test_things_forward_pairs(tmp_path: Path) -> None:
    root = tmp_path / "FlyingThings3D"
    for pass_name in ("cleanpass", "finalpass"):
        for frame in (6, 7):
            image(root / f"frames_{pass_name}" / "TRAIN" / "A" / "0000" / "left" / f"{frame:04d}.png", frame)
    flow_dir = root / "optical_flow" / "TRAIN" / "A" / "0000" / "into_future" / "left"
    flow = flow_field()
    pfm(flow_dir / "OpticalFlowIntoFuture_0006_L.pfm", flow)
    pfm(flow_dir / "OpticalFlowIntoFuture_0007_L.pfm", flow)  # frame 0008 missing
    samples = find_things(tmp_path)
    assert [(s.split_name, s.sequence, s.image1_path.name, s.image2_path.name) for s in samples] == [
        ("things-clean", "TRAIN/A/0000", "0006.png", "0007.png"),
        ("things-final", "TRAIN/A/0000", "0006.png", "0007.png"),
    ]
    np.testing.assert_allclose(samples[0].load()["flow"], flow)


def test_hd1k_pairs_stay_within_sequence(tmp_path: Path) -> None:
    root = tmp_path / "hd1k"
    for name in ("000000_0000", "000000_0001", "000001_0000"):
        image(root / "hd1k_input" / "image_2" / f"{name}.png")
    kitti_png(root / "hd1k_flow_gt" / "flow_occ" / "000000_0000.png")
    kitti_png(root / "hd1k_flow_gt" / "flow_occ" / "000000_0001.png")  # 000000_0002 missing
    samples = find_hd1k(tmp_path)
    assert [(s.sequence, s.image1_path.name, s.image2_path.name) for s in samples] == [
        ("000000", "000000_0000.png", "000000_0001.png")
    ]
    assert samples[0].split_name == "hd1k" and samples[0].sparse


def test_middlebury(tmp_path: Path) -> None:
    root = tmp_path / "middlebury"
    for seq in ("Dimetrodon", "Venus"):
        image(root / "other-data" / seq / "frame10.png")
        image(root / "other-data" / seq / "frame11.png", 1)
    flo(root / "other-gt-flow" / "Venus" / "flow10.flo")
    samples = find_middlebury(root)
    assert [(s.sequence, s.image1_path.name, s.image2_path.name) for s in samples] == [
        ("Venus", "frame10.png", "frame11.png")
    ]
    assert samples[0].split_name == "middlebury"


def test_list_file(tmp_path: Path) -> None:
    image(tmp_path / "seq" / "a.png")
    image(tmp_path / "seq" / "b.png", 1)
    flo(tmp_path / "gt" / "ab.flo")
    listing = tmp_path / "pairs.txt"
    listing.write_text("# img1 img2 gt\n\nseq/a.png seq/b.png gt/ab.flo  # with GT\n  seq/b.png seq/a.png\n")
    samples = find_list(listing)
    assert [(s.image1_path, s.image2_path, s.flow_path) for s in samples] == [
        (tmp_path / "seq" / "a.png", tmp_path / "seq" / "b.png", tmp_path / "gt" / "ab.flo"),
        (tmp_path / "seq" / "b.png", tmp_path / "seq" / "a.png", None),
    ]
    assert samples[0].family == "list" and samples[0].sequence == "seq"
    assert detect_datasets(listing) == {"list": samples}
    no_gt = samples[1].load()
    assert np.isnan(no_gt["flow"]).all() and not no_gt["valid"].any()

    listing.write_text("seq/a.png\n")
    with pytest.raises(DatasetError, match=r"pairs.txt:1: expected 'img1 img2 \[gt\]'"):
        find_list(listing)
    listing.write_text("seq/a.png seq/missing.png\n")
    with pytest.raises(DatasetError, match="pairs.txt:1: 'seq/missing.png' not found"):
        find_list(listing)


def test_detect_several_datasets_and_error(tmp_path: Path) -> None:
    make_sintel(tmp_path / "datasets" / "Sintel")
    make_kitti2012(tmp_path / "datasets" / "KITTI2012")  # training/ is 3 levels down
    splits = detect_datasets(tmp_path)
    assert list(splits) == ["sintel-clean", "sintel-final", "kitti-2012"]
    assert [len(v) for v in splits.values()] == [1, 2, 2]

    (tmp_path / "empty" / "videos").mkdir(parents=True)
    with pytest.raises(DatasetError) as error:
        detect_datasets(tmp_path / "empty")
    message = str(error.value)
    assert message.startswith(f"no optical-flow dataset found in {tmp_path / 'empty'}: expected MPI-Sintel")
    assert "KITTI training/" in message and "_flow.flo" in message and "\n" not in message
    with pytest.raises(DatasetError, match="no such file or directory"):
        detect_datasets(tmp_path / "nowhere")


def test_load_rejects_mismatched_sizes(tmp_path: Path) -> None:
    training = make_sintel(tmp_path)
    write_flo(training / "flow" / "alley_1" / "frame_0002.flo", np.zeros((H, W + 1, 2), np.float32))
    with pytest.raises(DatasetError, match="frame_0002.flo' is 33x24 but its images are 32x24"):
        find_sintel(tmp_path)[0].load()


# --------------------------------------------------------------------------- augmentation


def texture(height: int, width: int, seed: int = 0, blur: float = 3.0) -> np.ndarray:
    """A smooth random RGB texture, so bilinear sampling is accurate."""
    noise = np.random.default_rng(seed).uniform(0, 255, (height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    return np.rint(smooth).astype(np.uint8)


def translated_pair(u: int, v: int, height: int = 48, width: int = 64) -> tuple[np.ndarray, ...]:
    """Frames where every pixel of frame 1 moves by (u, v), with the matching constant flow."""
    tex = texture(height + 20, width + 20)
    y0 = x0 = 10
    image1 = tex[y0 : y0 + height, x0 : x0 + width]
    image2 = tex[y0 - v : y0 - v + height, x0 - u : x0 - u + width]
    flow = np.broadcast_to(np.float32([u, v]), (height, width, 2)).copy()
    return image1.copy(), image2.copy(), flow, np.ones((height, width), bool)


def warp_error(image1: np.ndarray, image2: np.ndarray, flow: np.ndarray, margin: int) -> float:
    """Mean |image2(x + flow) - image1(x)| away from the borders."""
    ys, xs = np.mgrid[: flow.shape[0], : flow.shape[1]].astype(np.float32)
    warped = cv2.remap(image2, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
    inner = (slice(margin, -margin), slice(margin, -margin))
    return float(np.abs(warped[inner].astype(np.float32) - image1[inner].astype(np.float32)).mean())


def geometric_only(crop: tuple[int, int], **kwargs: float) -> FlowAugmentor:
    options = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, eraser_prob=0.0, spatial_prob=0.0)
    options.update(h_flip_prob=0.0, v_flip_prob=0.0)
    options.update(kwargs)
    return FlowAugmentor(crop_size=crop, **options)


@pytest.mark.parametrize(("flip", "sign"), [("h_flip_prob", (-1, 1)), ("v_flip_prob", (1, -1))])
def test_flip_negates_matching_component_and_keeps_warp(flip: str, sign: tuple[int, int]) -> None:
    image1, image2, flow, valid = translated_pair(3, -2)
    assert warp_error(image1, image2, flow, margin=4) == 0.0
    augment = geometric_only((48, 64), **{flip: 1.0})
    out1, out2, out_flow, out_valid = augment(image1, image2, flow, valid, np.random.default_rng(0))
    np.testing.assert_array_equal(out_flow[..., 0], 3 * sign[0])
    np.testing.assert_array_equal(out_flow[..., 1], -2 * sign[1])
    assert out_valid.all()
    assert not np.array_equal(out1, image1)  # it really flipped
    assert warp_error(out1, out2, out_flow, margin=4) == 0.0


def test_scale_and_stretch_keep_warp_consistent() -> None:
    image1, image2, flow, valid = translated_pair(3, -2)
    augment = geometric_only((40, 56), spatial_prob=1.0, stretch_prob=1.0, min_scale=0.3, max_scale=0.3)
    out1, out2, out_flow, out_valid = augment(image1, image2, flow, valid, np.random.default_rng(1))
    assert out1.shape == (40, 56, 3) and out_flow.shape == (40, 56, 2) and out_valid.all()
    scale_x, scale_y = out_flow[0, 0] / np.float32([3, -2])
    assert scale_x != pytest.approx(scale_y)  # stretched
    np.testing.assert_allclose(out_flow, np.broadcast_to(out_flow[0, 0], out_flow.shape), atol=1e-5)
    assert warp_error(out1, out2, out_flow, margin=6) < 2.0
    assert warp_error(out1, out2, np.zeros_like(out_flow), margin=6) > 10.0


def test_resize_sparse_flow_moves_and_scales_vectors() -> None:
    flow = np.full((H, W, 2), 1000.0, np.float32)  # garbage where invalid: must never leak
    valid = np.zeros((H, W), bool)
    valid[::4, ::4] = True
    flow[valid] = np.random.default_rng(0).uniform(-3, 3, (valid.sum(), 2))

    up, up_valid = resize_sparse_flow(flow, valid, (2 * H, 2 * W))
    assert up_valid.sum() == valid.sum()
    ys, xs = np.nonzero(valid)
    np.testing.assert_allclose(up[2 * ys, 2 * xs], flow[ys, xs] * 2)  # centre of (x, y) -> 2x + 0.5, rounded
    assert np.abs(up[up_valid]).max() < 10 and not up[~up_valid].any()

    down, down_valid = resize_sparse_flow(flow, valid, (H // 2, W // 4))
    assert down_valid.sum() == valid.sum()  # one point per 4 px: no collisions
    np.testing.assert_allclose(down[down_valid], flow[valid] * np.float32([0.25, 0.5]))


def test_sparse_augmentation_never_interpolates() -> None:
    image1, image2, _, _ = translated_pair(0, 0)
    flow = np.zeros((48, 64, 2), np.float32)
    valid = np.zeros((48, 64), bool)
    valid[::3, ::3] = True
    flow[valid] = (2.0, -1.0)
    augment = geometric_only((40, 56), spatial_prob=1.0, stretch_prob=0.0, min_scale=0.4, max_scale=0.4)
    _, _, out_flow, out_valid = augment(image1, image2, flow, valid, np.random.default_rng(0), sparse=True)
    expected = np.float32([2.0, -1.0]) * 2**0.4
    np.testing.assert_allclose(out_flow[out_valid], np.broadcast_to(expected, (out_valid.sum(), 2)), rtol=0.02)
    assert 0 < out_valid.mean() < 0.2 and not out_flow[~out_valid].any()


def test_crop_pads_small_frames_with_invalid_pixels() -> None:
    image1, image2, flow, valid = translated_pair(1, 1, height=H, width=W)
    out1, out2, out_flow, out_valid = geometric_only((30, 40))(image1, image2, flow, valid, np.random.default_rng(0))
    assert out1.shape == (30, 40, 3) and out1.dtype == np.uint8
    assert out_valid[:H, :W].all() and not out_valid[H:].any() and not out_valid[:, W:].any()
    assert not out_flow[H:].any() and not out1[H:].any()


def test_photometric_is_shared_unless_asymmetric() -> None:
    frame = texture(H, W)
    rng = np.random.default_rng(0)
    symmetric = FlowAugmentor(crop_size=(H, W), spatial_prob=0.0, h_flip_prob=0.0, v_flip_prob=0.0, eraser_prob=0.0)
    symmetric.asymmetric_color_prob = 0.0
    flow, valid = np.zeros((H, W, 2), np.float32), np.ones((H, W), bool)
    out1, out2, _, _ = symmetric(frame, frame, flow, valid, rng)
    assert np.array_equal(out1, out2) and not np.array_equal(out1, frame)
    symmetric.asymmetric_color_prob = 1.0
    out1, out2, _, _ = symmetric(frame, frame, flow, valid, rng)
    assert not np.array_equal(out1, out2)


def test_eraser_changes_only_frame2() -> None:
    image1, image2, flow, valid = translated_pair(0, 0)
    augment = geometric_only((48, 64), eraser_prob=1.0)
    augment.eraser_size = (10, 20)
    out1, out2, _, out_valid = augment(image1, image2, flow, valid, np.random.default_rng(0))
    assert np.array_equal(out1, image1) and out_valid.all()
    changed = (out2 != image2).any(axis=2)
    assert 0 < changed.mean() < 0.5


def test_training_pairs_items_match_synthetic_keys(tmp_path: Path) -> None:
    make_sintel(tmp_path / "sintel")
    make_kitti2012(tmp_path / "kitti")
    samples = [s for split in detect_datasets(tmp_path).values() for s in split]
    torch.manual_seed(0)
    pairs = TrainingPairs(samples, FlowAugmentor(crop_size=(16, 24), eraser_size=(4, 8)))
    assert len(pairs) == len(samples)
    for item in (pairs[i] for i in range(len(pairs))):
        assert set(item) == {"image1", "image2", "flow", "valid"}
        assert item["image1"].shape == (3, 16, 24) and item["image1"].dtype == torch.float32
        assert item["flow"].shape == (2, 16, 24) and torch.isfinite(item["flow"]).all()
        assert item["valid"].shape == (16, 24) and item["valid"].dtype == torch.float32
        assert float(item["image1"].max()) > 1.0  # 0..255, not normalised
    raw = TrainingPairs(samples[:1])[0]  # Sintel with a NaN GT pixel: zero flow, invalid
    assert raw["flow"][:, 0, 0].tolist() == [0.0, 0.0] and raw["valid"][0, 0] == 0.0
    batch = next(iter(torch.utils.data.DataLoader(pairs, batch_size=2)))
    assert batch["image1"].shape == (2, 3, 16, 24)

    frames = tmp_path / "sintel" / "training" / "clean" / "alley_1"
    (frames / "pairs.txt").write_text("frame_0001.png frame_0002.png\n")
    with pytest.raises(DatasetError, match="no ground-truth flow"):
        TrainingPairs(find_list(frames / "pairs.txt"))


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real evaluation data (../shared/data) is absent")
def test_real_evaluation_data() -> None:
    splits = detect_datasets(SHARED_DATA)
    counts = {name: len(samples) for name, samples in splits.items()}
    assert counts == {"sintel-clean": 3, "sintel-final": 4, "kitti-2012": 3, "chairs": 2}
    assert [s.sequence for s in splits["sintel-clean"]] == ["alley_1", "cave_2", "market_5"]
    assert [s.sequence for s in splits["sintel-final"]] == ["alley_1", "ambush_2", "cave_2", "market_5"]
    assert [s.sequence for s in splits["kitti-2012"]] == ["000027", "000138", "000157"]

    sintel = splits["sintel-final"][1].load()
    assert sintel["image1"].shape == (436, 1024, 3) and sintel["flow"].shape == (436, 1024, 2)
    assert 0.99 < sintel["valid"].mean() < 1.0 and 0 < sintel["occluded"].mean() < 0.5
    kitti = splits["kitti-2012"][0].load()
    assert kitti["image1"].shape[2] == 3 and 0.1 < kitti["valid"].mean() < 0.6
    assert (kitti["noc_valid"] <= kitti["valid"]).all() and kitti["noc_valid"].sum() < kitti["valid"].sum()
    assert np.isnan(kitti["flow"][~kitti["valid"]]).all()
