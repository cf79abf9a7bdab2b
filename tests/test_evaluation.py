"""``raft eval`` and its metrics: hand-made flows with known errors, tiny fake Sintel and KITTI
trees (layout detection, GT-exact and GT+(3, 4) methods), the CLI's outputs, and agreement with
an independent numpy computation on the real data in ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner, Result

from rafttool import baselines
from rafttool.cli.main import app
from rafttool.data.datasets import FlowSample, detect_datasets
from rafttool.evaluate import FamilyResult, evaluate_methods, pair_errors, scored_pixels
from rafttool.io.flo import write_flo
from rafttool.io.kitti import write_kitti_flow

H, W = 128, 160
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
runner = CliRunner()


def raft(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def records(result: Result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


# --------------------------------------------------------------------------- metrics


def test_constant_offset_gives_epe_5_and_outlier_rates() -> None:
    gt = np.random.default_rng(0).integers(-20, 20, (8, 10, 2)).astype(np.float32)  # exact in float32
    errors = pair_errors("p", gt + np.float32([3, 4]), gt, np.ones((8, 10), bool))
    row = errors.as_dict()
    assert row["epe"] == pytest.approx(5.0, abs=1e-5)
    assert (row["1px"], row["3px"], row["5px"]) == (1.0, 1.0, 0.0)  # 5 > 1, 5 > 3, 5 is not > 5


def test_fl_needs_both_3px_and_5_percent_of_the_true_motion() -> None:
    gt = np.zeros((1, 4, 2), np.float32)
    gt[0, :, 0] = [100, 100, 10, 10]  # |GT| 100 -> 5% is 5 px; |GT| 10 -> 5% is 0.5 px
    error = np.float32([4.0, 6.0, 3.5, 2.9])
    prediction = gt.copy()
    prediction[0, :, 1] = error
    errors = pair_errors("p", prediction, gt, np.ones((1, 4), bool))
    assert errors.fl == 2  # only 6 px on 100 px (> 5 px) and 3.5 px on 10 px (> 3 px, > 0.5 px)
    assert errors.over3 == 3


def test_sparse_families_average_per_image_dense_ones_per_pixel() -> None:
    def pair(pixels: int, error: float) -> object:
        gt = np.zeros((1, 100, 2), np.float32)
        valid = np.zeros((1, 100), bool)
        valid[0, :pixels] = True
        return pair_errors("p", gt + np.float32([error, 0]), gt, valid)

    pairs = [pair(100, 1.0), pair(10, 10.0)]
    kitti = FamilyResult("kitti-2012", "kitti", pairs).summary()
    sintel = FamilyResult("sintel-clean", "sintel", pairs).summary()
    assert kitti["epe"] == pytest.approx((1.0 + 10.0) / 2)
    assert sintel["epe"] == pytest.approx((100 * 1.0 + 10 * 10.0) / 110)
    assert kitti["1px"] == sintel["1px"] == pytest.approx(10 / 110)  # outlier rates pool pixels in both


def test_matched_and_unmatched_epe_split_on_the_occlusion_mask() -> None:
    gt = np.zeros((4, 4, 2), np.float32)
    occluded = np.zeros((4, 4), bool)
    occluded[:, :1] = True
    prediction = gt.copy()
    prediction[..., 0] = np.where(occluded, 3.0, 1.0)
    summary = FamilyResult("s", "sintel", [pair_errors("p", prediction, gt, np.ones((4, 4), bool), occluded)]).summary()
    assert summary["matched_epe"] == pytest.approx(1.0)
    assert summary["unmatched_epe"] == pytest.approx(3.0)
    assert summary["epe"] == pytest.approx((12 * 1.0 + 4 * 3.0) / 16)


def test_speed_bands_split_pixels_on_gt_magnitude_and_pool_over_pairs() -> None:
    """Sintel's s0-10 / s10-40 / s40+: band edges go to the faster band, sums pool across pairs,
    an empty band is absent rather than 0."""
    slow = np.zeros((2, 2, 2), np.float32)
    slow[..., 0] = [[0.0, 9.99], [10.0, 39.0]]  # two slow pixels, two in 10-40
    fast = np.full((1, 2, 2), 50.0, np.float32)
    prediction_slow = slow + np.array([1.0, 0.0], np.float32)  # error 1 everywhere
    prediction_fast = fast + np.array([0.0, 4.0], np.float32)  # error 4
    first = pair_errors("a", prediction_slow, slow, np.ones((2, 2), bool))
    assert first.as_dict()["s0-10_epe"] == pytest.approx(1.0)
    assert "s40+_epe" not in first.as_dict()
    second = pair_errors("b", prediction_fast, fast, np.ones((1, 2), bool))
    summary = FamilyResult("s", "sintel", [first, second]).summary()
    assert first.speed_pixels == (2, 2, 0) and second.speed_pixels == (0, 0, 2)
    assert summary["s0-10_epe"] == pytest.approx(1.0)
    assert summary["s10-40_epe"] == pytest.approx(1.0)
    assert summary["s40+_epe"] == pytest.approx(4.0)
    assert summary["epe"] == pytest.approx((4 * 1.0 + 2 * 4.0) / 6)


def test_dense_benchmarks_score_all_pixels_sparse_ones_the_valid_flag() -> None:
    flow = np.zeros((2, 2, 2), np.float32)
    valid = np.array([[True, False], [True, True]])  # Sintel: outside the 'invalid' mask
    data = {"flow": flow, "valid": valid}
    sintel = FlowSample(Path("a"), Path("b"), Path("f"), "sintel", "sintel-clean", "s")
    kitti = FlowSample(Path("a"), Path("b"), Path("f"), "kitti", "kitti-2012", "s")
    assert scored_pixels(sintel, data).all()
    assert (scored_pixels(kitti, data) == valid).all()


# --------------------------------------------------------------------------- fake datasets


def _texture(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 0)


def _gt(seed: int) -> np.ndarray:
    """Quarter-pixel flow: adding (3, 4) stays exact in float32, so EPE is exactly 5, not 5 + 1e-7."""
    return (np.round(np.random.default_rng(seed).uniform(-4, 4, (H, W, 2)) * 4) / 4).astype(np.float32)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[bytes, np.ndarray]]:
    """Sintel (2 sequences, both passes, occlusions) and KITTI 2012 + 2015 trees with known GT.

    Also returns GT by the RGB bytes of each pair's first image, which is what a method sees.
    """
    root = tmp_path_factory.mktemp("datasets")
    truth: dict[bytes, np.ndarray] = {}

    def frame(path: Path, seed: int) -> np.ndarray:
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = _texture(seed)
        assert cv2.imwrite(str(path), pixels)
        return pixels[..., ::-1]

    sintel = root / "MPI-Sintel" / "training"
    for s, sequence in enumerate(("alley_1", "cave_2")):
        gt = _gt(s)
        (sintel / "flow" / sequence).mkdir(parents=True)
        write_flo(sintel / "flow" / sequence / "frame_0001.flo", gt)
        (sintel / "occlusions" / sequence).mkdir(parents=True)
        cv2.imwrite(str(sintel / "occlusions" / sequence / "frame_0001.png"), np.where(np.arange(W) < 20, 255, 0).astype(np.uint8)[None].repeat(H, 0))
        for p, pass_name in enumerate(("clean", "final")):
            first = frame(sintel / pass_name / sequence / "frame_0001.png", 10 * s + p)
            frame(sintel / pass_name / sequence / "frame_0002.png", 10 * s + p + 5)
            truth[first.tobytes()] = gt
    for year, folder in (("2012", "colored_0"), ("2015", "image_2")):
        training = root / f"KITTI{year}" / "training"
        for n in range(2):
            gt, valid = _gt(100 + n), np.random.default_rng(n).random((H, W)) < 0.3
            (training / "flow_occ").mkdir(parents=True, exist_ok=True)
            write_kitti_flow(training / "flow_occ" / f"00000{n}_10.png", gt, valid)
            first = frame(training / folder / f"00000{n}_10.png", 200 + n + int(year))
            frame(training / folder / f"00000{n}_11.png", 300 + n + int(year))
            truth[first.tobytes()] = np.where(valid[..., None], gt, np.nan)
    return root, truth


def test_gt_method_scores_zero_and_gt_plus_3_4_scores_five(fake: tuple[Path, dict[bytes, np.ndarray]]) -> None:
    root, truth = fake
    splits = detect_datasets(root)
    assert {name: len(samples) for name, samples in splits.items()} == {
        "kitti-2012": 2,
        "kitti-2015": 2,
        "sintel-clean": 2,
        "sintel-final": 2,
    }

    def exact(image1: np.ndarray, image2: np.ndarray) -> np.ndarray:
        return np.nan_to_num(truth[image1.tobytes()]).astype(np.float32)

    results = evaluate_methods(splits, {"exact": exact, "shifted": lambda a, b: exact(a, b) + np.float32([3, 4])})
    for split, methods in results.items():
        exact_summary, shifted = methods["exact"].summary(), methods["shifted"].summary()
        assert exact_summary["epe"] == pytest.approx(0.0, abs=1e-5), split
        assert shifted["epe"] == pytest.approx(5.0, abs=1e-4), split
        assert shifted["3px"] == 1.0 and shifted["5px"] == 0.0
        if split.startswith("sintel"):
            assert shifted["matched_epe"] == pytest.approx(5.0, abs=1e-4)
            assert shifted["unmatched_epe"] == pytest.approx(5.0, abs=1e-4)


def test_eval_cli_detects_layouts_and_filters(fake: tuple[Path, dict[bytes, np.ndarray]]) -> None:
    root, _ = fake
    rows = records(raft("eval", root, "--method", "dis-ultrafast", "--method", "farneback", "--json", "--per-sequence"))
    summaries = [r for r in rows if r["sequence"] is None]
    assert {(r["split"], r["method"]) for r in summaries} == {
        (split, method) for split in ("sintel-clean", "sintel-final", "kitti-2012", "kitti-2015") for method in ("dis-ultrafast", "farneback")
    }
    assert all("fl" in r and r["pairs"] == 2 for r in summaries)
    assert {r["sequence"] for r in rows if r["split"] == "sintel-clean" and r["sequence"]} == {"alley_1", "cave_2"}
    assert all("matched_epe" in r for r in summaries if r["family"] == "sintel")

    rows = records(raft("eval", root, "-m", "dis", "--families", "sintel-final,kitti", "--max-pairs", "1", "--json"))
    assert sorted((r["split"], r["pairs"], r["method"]) for r in rows) == [
        ("kitti-2012", 1, "dis-medium"),
        ("kitti-2015", 1, "dis-medium"),
        ("sintel-final", 1, "dis-medium"),
    ]


def test_eval_cli_tables_markdown_and_error_maps(fake: tuple[Path, dict[bytes, np.ndarray]], tmp_path: Path) -> None:
    root, _ = fake
    result = raft("eval", root, "-m", "dis-ultrafast", "--families", "sintel-clean,kitti-2012", "--markdown", "--save-errors", tmp_path)
    assert result.exit_code == 0, result.output
    assert "| method | EPE | 1px | 3px | 5px | matched | unmatched | s/pair |" in result.stdout
    assert "| method | EPE | 1px | 3px | 5px | Fl-all | s/pair |" in result.stdout
    assert "| dis-ultrafast |" in result.stdout
    mosaics = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert mosaics == [
        "kitti-2012/dis-ultrafast/000000_10.png",
        "kitti-2012/dis-ultrafast/000001_10.png",
        "sintel-clean/dis-ultrafast/alley_1_frame_0001.png",
        "sintel-clean/dis-ultrafast/cave_2_frame_0001.png",
    ]
    assert cv2.imread(str(tmp_path / mosaics[0])).shape == (2 * H, 2 * W, 3)

    table = raft("eval", root, "-m", "dis-ultrafast", "--families", "kitti-2015", "--per-sequence")
    assert table.exit_code == 0 and "kitti-2015: 2 pairs, per sequence" in table.stdout

    by_speed = raft("eval", root, "-m", "dis-ultrafast", "--families", "kitti-2012", "--markdown", "--by-speed")
    assert by_speed.exit_code == 0, by_speed.output
    assert "| method | EPE | 1px | 3px | 5px | Fl-all | s0-10 | s10-40 | s40+ | s/pair |" in by_speed.stdout


def test_eval_cli_errors_and_missing_contrib(fake: tuple[Path, dict[bytes, np.ndarray]], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = fake
    unknown = raft("eval", root, "-m", "lucas-kanade")
    assert unknown.exit_code == 2 and "unknown method 'lucas-kanade'" in unknown.stderr
    bad_family = raft("eval", root, "-m", "dis", "--families", "chairs")
    assert bad_family.exit_code == 2 and "found sintel-clean" in bad_family.stderr
    empty = raft("eval", root / "MPI-Sintel" / "training" / "flow", "-m", "dis")
    assert empty.exit_code == 1 and "no optical-flow dataset found" in empty.stderr

    monkeypatch.setattr(baselines, "contrib_available", lambda: False)
    rows = records(raft("eval", root, "-m", "tvl1", "-m", "dis-ultrafast", "--families", "kitti-2012", "--json"))
    assert rows[0] == {"method": "tvl1", "skipped": f"tvl1 skipped: {baselines.CONTRIB_HINT}"}
    assert [r["method"] for r in rows[1:]] == ["dis-ultrafast"]
    only = raft("eval", root, "-m", "tvl1")
    assert only.exit_code == 1 and "tvl1 skipped" in only.stderr and "none of the requested methods" in only.stderr


# --------------------------------------------------------------------------- the real data


def _reference_gray(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)


def _reference_flo(path: Path) -> np.ndarray:
    header = np.fromfile(path, np.int32, count=3)
    return np.fromfile(path, np.float32, offset=12).reshape(header[2], header[1], 2)


def _reference_kitti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64)
    return (bgr[..., 2:0:-1] - 2**15) / 64, bgr[..., 0] > 0


def _reference_pairs(root: Path) -> dict[str, list[tuple[Path, Path, np.ndarray, np.ndarray, np.ndarray | None]]]:
    """(image1, image2, gt, scored, occluded) per split, found with plain globs."""
    pairs: dict[str, list] = {}
    sintel = root / "sintel" / "training"
    for flo in sorted(sintel.glob("flow/*/frame_*.flo")):
        number = int(flo.stem.split("_")[1])
        occluded = cv2.imread(str(sintel / "occlusions" / flo.parent.name / f"{flo.stem}.png"), cv2.IMREAD_GRAYSCALE) > 127
        for pass_name in ("clean", "final"):
            first = sintel / pass_name / flo.parent.name / f"frame_{number:04d}.png"
            second = first.with_name(f"frame_{number + 1:04d}.png")
            if first.is_file() and second.is_file():
                gt = _reference_flo(flo)
                pairs.setdefault(f"sintel-{pass_name}", []).append((first, second, gt, np.ones(gt.shape[:2], bool), occluded))
    kitti = root / "kitti2012" / "training"
    for frame in sorted({p.name for p in kitti.glob("flow_*/*_10.png")}):
        gt_path = kitti / "flow_occ" / frame if (kitti / "flow_occ" / frame).is_file() else kitti / "flow_noc" / frame
        folder = kitti / "colored_0" if (kitti / "colored_0" / frame).is_file() else kitti / "image_0"
        gt, valid = _reference_kitti(gt_path)
        pairs.setdefault("kitti-2012", []).append((folder / frame, folder / frame.replace("_10", "_11"), gt, valid, None))
    for flo in sorted((root / "flyingchairs" / "examples").glob("*-gt.flo")):
        stem = flo.name[: -len("-gt.flo")]
        gt = _reference_flo(flo)
        pairs.setdefault("chairs", []).append((flo.with_name(f"{stem}-img0.ppm"), flo.with_name(f"{stem}-img1.ppm"), gt, np.ones(gt.shape[:2], bool), None))
    return pairs


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real evaluation data (../shared/data) is absent")
def test_eval_on_real_data_matches_an_independent_numpy_computation() -> None:
    ours = {r["split"]: r for r in records(raft("eval", SHARED_DATA, "--method", "dis-ultrafast", "--json"))}
    reference = _reference_pairs(SHARED_DATA)
    assert set(ours) == set(reference) == {"sintel-clean", "sintel-final", "kitti-2012", "chairs"}
    for split, pairs in reference.items():
        errors, per_image, magnitudes, matched, unmatched = [], [], [], [], []
        for first, second, gt, scored, occluded in pairs:
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
            flow = dis.calc(_reference_gray(first), _reference_gray(second), None)
            epe = np.sqrt(((flow - gt) ** 2).sum(axis=2))
            errors.append(epe[scored])
            per_image.append(epe[scored].mean())
            magnitudes.append(np.sqrt((gt**2).sum(axis=2))[scored])
            if occluded is not None:
                matched.append(epe[~occluded])
                unmatched.append(epe[occluded])
        e, m = np.concatenate(errors), np.concatenate(magnitudes)
        row = ours[split]
        assert row["pairs"] == len(pairs)
        assert row["epe"] == pytest.approx(np.mean(per_image) if split == "kitti-2012" else e.mean(), rel=1e-5), split
        for threshold in (1, 3, 5):
            assert row[f"{threshold}px"] == pytest.approx((e > threshold).mean(), abs=1e-7), split
        assert row["fl"] == pytest.approx(((e > 3) & (e > 0.05 * m)).mean(), abs=1e-7), split
        if matched:
            assert row["matched_epe"] == pytest.approx(np.concatenate(matched).mean(), rel=1e-5)
            assert row["unmatched_epe"] == pytest.approx(np.concatenate(unmatched).mean(), rel=1e-5)
