"""End-to-end tests of the ``raft`` command line on tiny generated images, video and weights.

The network is a seeded random RAFT-small run for one iteration: these tests check plumbing
(files, formats, streams, exit codes, messages), not flow accuracy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from rafttool.api import FlowEngine
from rafttool.cli.main import app
from rafttool.engine import weights as weights_module
from rafttool.engine.model import build_model, raft_small
from rafttool.engine.weights import save_weights
from rafttool.io import decode_flo, encode_flo, read_flow, read_image, write_flow
from rafttool.viz import draw_wheel_legend, flow_to_color

HEIGHT, WIDTH = 128, 160
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The cores are shared with other jobs; a second intra-op thread only waits for them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 0)


def _shifted_frames(count: int, height: int = HEIGHT, width: int = WIDTH) -> list[np.ndarray]:
    """Views of one texture moving 2 px right and 1 px down per frame (BGR, for cv2 writers)."""
    scene = _texture(height + 2 * count, width + 4 * count)
    return [scene[count - i : count - i + height, 2 * count - 2 * i : 2 * count - 2 * i + width] for i in range(count)]


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(1234)
    save_weights(root / "tiny.pt", raft_small(), {"recipe": {"data": "synthetic", "steps": 10}, "synthetic_epe": 9.5})
    (root / "frames").mkdir()
    for name, frame in zip(("frame1.png", "frame2.png", "frame10.png"), _shifted_frames(3)):
        cv2.imwrite(str(root / "frames" / name), frame)
    cv2.imwrite(str(root / "wide.png"), _texture(144, 200, seed=1))
    cv2.imwrite(str(root / "tiny.png"), _texture(100, 100, seed=2))
    for name, count in (("clip.mp4", 6), ("one.mp4", 1)):
        writer = cv2.VideoWriter(str(root / name), cv2.VideoWriter_fourcc(*"mp4v"), 10, (WIDTH, HEIGHT))
        for frame in _shifted_frames(count):
            writer.write(frame)
        writer.release()
    (root / "garbage.mp4").write_bytes(b"this is not a video" * 20)
    return root


@pytest.fixture(scope="session")
def net(assets: Path) -> list[str]:
    return ["--weights", str(assets / "tiny.pt"), "--iters", "1"]


@pytest.fixture(scope="session")
def pair(assets: Path) -> list[str]:
    return [str(assets / "frames" / "frame1.png"), str(assets / "frames" / "frame2.png")]


def raft(*args: object, input: str | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def records(result: Result) -> list[dict]:
    """Every stdout line must be a JSON record: nothing else may reach stdout."""
    return [json.loads(line) for line in ok(result).stdout.splitlines()]


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, pair: list[str], net: list[str]) -> np.ndarray:
    out = tmp_path_factory.mktemp("ref") / "ref.flo"
    ok(raft("flow", *pair, "-o", out, *net))
    return read_flow(out)


# --- help and version -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["flow", "video", "viz", "warp", "info"])
def test_every_command_has_help_with_examples(command: str) -> None:
    result = ok(raft(command, "--help"))
    assert "Examples" in result.stdout and f"raft {command} " in result.stdout


def test_root_help_lists_commands_and_version_prints() -> None:
    listing = ok(raft("--help")).stdout
    assert all(name in listing for name in ("flow", "video", "viz", "warp", "info"))
    assert ok(raft("--version")).stdout.startswith("rafttool ")


# --- raft flow --------------------------------------------------------------------------------


def test_pair_with_every_extra_output(tmp_path: Path, pair: list[str], net: list[str], reference: np.ndarray) -> None:
    out = tmp_path / "out.flo"
    extras = ["--viz", tmp_path / "viz.png", "--warp", tmp_path / "warped.png", "--occlusion", tmp_path / "occ.png"]
    result = ok(raft("flow", *pair, "-o", out, "--backward", *extras, *net))
    assert result.stdout == ""
    np.testing.assert_array_equal(read_flow(out), reference)
    backward = read_flow(tmp_path / "out_backward.flo")
    assert backward.shape == (HEIGHT, WIDTH, 2) and np.isfinite(backward).all()
    for name in ("viz.png", "warped.png", "occ.png"):
        assert read_image(tmp_path / name).shape == (HEIGHT, WIDTH, 3)
    assert set(np.unique(read_image(tmp_path / "occ.png"))) <= {0, 255}
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("extension, tolerance", [(".flo", 0), (".png", 1 / 64), (".npy", 0), (".npz", 0)])
def test_output_format_follows_the_extension(
    tmp_path: Path, pair: list[str], net: list[str], reference: np.ndarray, extension: str, tolerance: float
) -> None:
    out = tmp_path / f"flow{extension}"
    (record,) = records(raft("flow", *pair, "-o", out, "--json", *net))
    assert record["output"] == str(out) and (record["width"], record["height"]) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(read_flow(out), reference, atol=tolerance + 1e-6)


def test_tolerance_option_stops_iterating_early_or_never(tmp_path: Path, pair: list[str], assets: Path) -> None:
    """--weights run fixed iterations unless --tolerance asks; 0 means fixed."""
    weights = ["--weights", str(assets / "tiny.pt"), "--iters", "4"]

    def iterations(*extra: str) -> int:
        (record,) = records(raft("flow", *pair, "-o", tmp_path / "f.flo", "--json", *weights, *extra))
        return record["iterations"]

    assert iterations() == 4
    assert iterations("--tolerance", "1000") == 1  # every update is below 1000 px
    assert iterations("--tolerance", "0") == 4


def test_stdout_carries_exactly_the_flo_bytes(pair: list[str], net: list[str], reference: np.ndarray) -> None:
    result = ok(raft("flow", *pair, "-o", "-", *net))
    assert result.stdout_bytes == encode_flo(reference)
    assert result.stderr == ""


def test_stdout_bytes_in_a_real_process(pair: list[str], net: list[str], reference: np.ndarray) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "rafttool.cli.main", "flow", *pair, "-o", "-", *net]
    done = subprocess.run(command, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert len(done.stdout) == 12 + 8 * HEIGHT * WIDTH
    np.testing.assert_allclose(decode_flo(done.stdout), reference, atol=1e-4)


def test_folder_gives_consecutive_pairs_in_natural_order_as_json(tmp_path: Path, assets: Path, net: list[str]) -> None:
    result = raft("flow", assets / "frames", "-o", tmp_path / "flows", "--batch", "2", "--json", *net)
    got = records(result)
    assert [(Path(r["image1"]).name, Path(r["image2"]).name) for r in got] == [
        ("frame1.png", "frame2.png"),
        ("frame2.png", "frame10.png"),
    ]
    assert sorted(p.name for p in (tmp_path / "flows").iterdir()) == ["frame1.flo", "frame2.flo"]
    assert all(r["seconds"] > 0 and r["max_magnitude"] >= r["mean_magnitude"] >= 0 for r in got)


def test_quoted_glob_and_explicit_files(tmp_path: Path, assets: Path, net: list[str]) -> None:
    frames = assets / "frames"
    globbed = records(raft("flow", str(frames / "frame*.png"), "-o", tmp_path / "g", "--format", "npy", "--json", *net))
    assert [Path(r["output"]).name for r in globbed] == ["frame1.npy", "frame2.npy"]
    explicit = [frames / "frame10.png", frames / "frame1.png", frames / "frame2.png"]
    listed = records(raft("flow", *explicit, "-o", tmp_path / "e", "--viz", tmp_path / "v", "--json", *net))
    assert [Path(r["image1"]).name for r in listed] == ["frame10.png", "frame1.png"]
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["frame1.png", "frame10.png"]


def test_pair_list_from_file_and_from_stdin(tmp_path: Path, assets: Path, net: list[str]) -> None:
    frames = assets / "frames"
    own = tmp_path / "own name.npz"
    listing = f'# comment\n{frames / "frame1.png"} {frames / "frame2.png"} "{own}"\n\n{frames / "frame2.png"} {frames / "frame10.png"}\n'
    (tmp_path / "pairs.txt").write_text(listing)
    got = records(raft("flow", "--pairs", tmp_path / "pairs.txt", "-o", tmp_path / "rest", "--json", *net))
    assert [r["output"] for r in got] == [str(own), str(tmp_path / "rest" / "frame2.flo")]
    assert read_flow(own).shape == (HEIGHT, WIDTH, 2)
    piped = records(raft("flow", "--pairs", "-", "-o", tmp_path / "piped", "--json", *net, input=listing))
    assert len(piped) == 2


def test_default_output_is_beside_the_first_image(tmp_path: Path, pair: list[str], net: list[str]) -> None:
    for image in pair:
        shutil.copy(image, tmp_path)
    ok(raft("flow", tmp_path / "frame1.png", tmp_path / "frame2.png", *net))
    assert read_flow(tmp_path / "frame1.flo").shape == (HEIGHT, WIDTH, 2)


def test_resize_scales_b_to_a(tmp_path: Path, pair: list[str], assets: Path, net: list[str]) -> None:
    ok(raft("flow", pair[0], assets / "wide.png", "--resize", "-o", tmp_path / "r.flo", *net))
    assert read_flow(tmp_path / "r.flo").shape == (HEIGHT, WIDTH, 2)


# --- errors -----------------------------------------------------------------------------------

ERROR_CASES: dict[str, tuple[Callable[[Path, Path], list[object]], int, tuple[str, ...]]] = {
    "sizes differ": (
        lambda a, t: ["flow", a / "frames/frame1.png", a / "wide.png", "-o", t / "x.flo"],
        1,
        ("images differ in size", "is 160x128", "is 200x144", "--resize"),
    ),
    "missing image": (lambda a, t: ["flow", a / "frames/frame1.png", t / "nope.png", "-o", t / "x.flo"], 1, ("not found",)),
    "unknown extension": (lambda a, t: ["flow", a / "frames/frame1.png", a / "frames/frame2.png", "-o", t / "x.jpg"], 2, (".jpg", ".flo")),
    "unwritable output": (
        lambda a, t: ["flow", a / "frames/frame1.png", a / "frames/frame2.png", "-o", t / "no/such/dir/x.flo"],
        1,
        ("does not exist",),
    ),
    "output inside a file": (lambda a, t: ["flow", a / "frames", "-o", a / "tiny.png" / "sub"], 1, ("cannot create folder",)),
    "device": (lambda a, t: ["flow", a / "frames/frame1.png", a / "frames/frame2.png", "-o", t / "x.flo", "--device", "cuda:7"], 1, ("not available", "cpu")),
    "input too small": (lambda a, t: ["flow", a / "tiny.png", a / "tiny.png", "-o", t / "x.flo"], 1, ("too small", "tiny.png")),
    "one image": (lambda a, t: ["flow", a / "tiny.png"], 2, ("not a pair",)),
    "stdout with many pairs": (lambda a, t: ["flow", a / "frames", "-o", "-"], 2, ("exactly one flow",)),
    "file for many pairs": (lambda a, t: ["flow", a / "frames", "-o", t / "x.flo"], 2, ("names one file",)),
    "video cannot be opened": (lambda a, t: ["video", a / "garbage.mp4", "-o", t / "o"], 1, ("cannot open video",)),
    "video missing": (lambda a, t: ["video", t / "nope.mp4"], 1, ("not found",)),
    "video of one frame": (lambda a, t: ["video", a / "one.mp4", "-o", t / "o"], 1, ("fewer than two frames",)),
    "video range too short": (lambda a, t: ["video", a / "clip.mp4", "-o", t / "o", "--start", "5"], 1, ("fewer than two frames",)),
    "video nothing to write": (lambda a, t: ["video", a / "clip.mp4", "--no-flo"], 2, ("nothing to write",)),
    "video unknown container": (lambda a, t: ["video", a / "clip.mp4", "--viz-video", t / "v.gif"], 2, (".gif",)),
    "viz of an image": (lambda a, t: ["viz", a / "wide.png", "-o", t / "v.png"], 1, ("not a KITTI flow PNG",)),
    "viz arrows with many flows": (lambda a, t: ["viz", t / "a.flo", t / "b.flo", "--arrows", a / "wide.png"], 2, ("single flow",)),
    "info of unknown": (lambda a, t: ["info", a / "garbage.mp4"], 1, ("cannot tell what",)),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line_with_the_right_exit_code(case: str, assets: Path, tmp_path: Path, net: list[str]) -> None:
    build, code, fragments = ERROR_CASES[case]
    args = build(assets, tmp_path)
    uses_network = args[0] in ("flow", "video")
    assert_one_line_error(raft(*args, *(net if uses_network else [])), code, *fragments)


def test_bad_weights_and_missing_bundled_weights(tmp_path: Path, pair: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    bad = raft("flow", *pair, "-o", tmp_path / "x.flo", "--weights", pair[0])
    assert_one_line_error(bad, 1, "cannot read weights")
    monkeypatch.setattr(weights_module, "weights_dirs", lambda: [tmp_path])
    assert_one_line_error(raft("flow", *pair, "-o", tmp_path / "x.flo"), 1, "no bundled weights", "--weights")


def test_malformed_pair_list_names_the_line(tmp_path: Path, net: list[str]) -> None:
    assert_one_line_error(raft("flow", "--pairs", "-", *net, input="a.png b.png c.flo d\n"), 1, "line 1", "A B [OUT]")


def test_debug_adds_the_traceback(tmp_path: Path, pair: list[str], net: list[str]) -> None:
    result = raft("flow", pair[0], tmp_path / "nope.png", "--debug", *net)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_unexpected_failures_are_still_one_line(
    tmp_path: Path, pair: list[str], net: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self, *args, **kwargs):
        raise RuntimeError("kernel exploded\nwith detail")

    monkeypatch.setattr(FlowEngine, "estimate_batch", broken)
    assert_one_line_error(raft("flow", *pair, "-o", tmp_path / "x.flo", *net), 1, "RuntimeError: kernel exploded with detail", "--debug")
    assert list(tmp_path.iterdir()) == []


# --- raft video -------------------------------------------------------------------------------


def _video_frames(path: Path) -> tuple[int, int, int]:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok_, frame = capture.read()
        if not ok_:
            break
        count += 1
        shape = frame.shape
    capture.release()
    return count, shape[1], shape[0]


def test_video_default_folder_viz_video_and_force(tmp_path: Path, assets: Path, net: list[str]) -> None:
    clip = Path(shutil.copy(assets / "clip.mp4", tmp_path))
    result = raft("video", clip, "--viz", "--viz-video", tmp_path / "side.mp4", "--warp", "--json", *net)
    got = records(result)
    assert [r["frame1"] for r in got] == [0, 1, 2, 3, 4]
    assert [r["warm_started"] for r in got] == [False, True, True, True, True]
    folder = tmp_path / "clip_flow"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:06d}{s}" for i in range(5) for s in (".flo", "_viz.png")]
    scale = got[0]["max_flow"]
    assert all(r["max_flow"] == scale for r in got)  # one colour scale for the whole clip
    for record in got:
        colours = draw_wheel_legend(flow_to_color(read_flow(record["flo"]), scale))
        np.testing.assert_array_equal(read_image(record["viz"]), colours)
    assert _video_frames(tmp_path / "side.mp4") == (5, 3 * WIDTH, HEIGHT)
    assert "colour scale" in result.stderr

    assert_one_line_error(raft("video", clip, *net), 1, "not empty", "--force")
    ok(raft("video", clip, "--force", "-q", *net))
    assert not list(tmp_path.rglob(".*tmp*"))


def test_video_range_step_and_batch_without_warm_start(tmp_path: Path, assets: Path, net: list[str]) -> None:
    args = ["--start", "1", "--step", "2", "--max-frames", "3", "--json", "--max-flow", "4", "--viz-video", tmp_path / "v.avi"]
    got = records(raft("video", assets / "clip.mp4", "-o", tmp_path / "o", "--no-warm-start", "--batch", "2", *args, *net))
    assert [(r["frame1"], r["frame2"]) for r in got] == [(1, 3), (3, 5)]
    assert not any(r["warm_started"] for r in got) and all(r["max_flow"] == 4 for r in got)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["000001.flo", "000003.flo"]
    assert _video_frames(tmp_path / "v.avi") == (2, 2 * WIDTH, HEIGHT)


def test_warm_start_with_batch_runs_one_pair_at_a_time(tmp_path: Path, assets: Path, net: list[str]) -> None:
    result = raft("video", assets / "clip.mp4", "-o", tmp_path / "o", "--batch", "3", "--max-frames", "3", "--json", *net)
    assert [r["warm_started"] for r in records(result)] == [False, True]
    assert "--batch 3 ignored" in result.stderr


def test_folder_of_images_as_video_with_scale(tmp_path: Path, assets: Path, net: list[str]) -> None:
    got = records(raft("video", assets / "frames", "-o", tmp_path / "o", "--no-flo", "--viz", "--scale", "1.25", "--json", *net))
    assert len(got) == 2 and (got[0]["width"], got[0]["height"]) == (200, 160)
    assert read_image(got[0]["viz"]).shape == (160, 200, 3)


def test_interrupted_video_leaves_no_partial_files(tmp_path: Path, assets: Path, net: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import rafttool.cli.video_cmd as video_cmd

    calls = []

    def interrupted_write(path, flow):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write_flow(path, flow)

    monkeypatch.setattr(video_cmd, "write_flow", interrupted_write)
    side = tmp_path / "side.mp4"
    result = raft("video", assets / "clip.mp4", "-o", tmp_path / "o", "--viz-video", side, "-q", *net)
    assert_one_line_error(result, 130, "interrupted")
    assert not side.exists()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["000000.flo"]
    assert read_flow(tmp_path / "o" / "000000.flo").shape == (HEIGHT, WIDTH, 2)


# --- raft viz and raft warp -------------------------------------------------------------------


def _constant_flow(u: float, v: float) -> np.ndarray:
    flow = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    flow[..., 0], flow[..., 1] = u, v
    return flow


def test_viz_shares_one_scale_over_all_files(tmp_path: Path) -> None:
    slow, fast = _constant_flow(1, 0), _constant_flow(0, -2)
    write_flow(tmp_path / "slow.flo", slow)
    write_flow(tmp_path / "fast.npy", fast)
    ok(raft("viz", tmp_path / "slow.flo", tmp_path / "fast.npy", "-o", tmp_path / "out", "--no-legend"))
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "slow.png"), flow_to_color(slow, 2.0))
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "fast.png"), flow_to_color(fast, 2.0))
    ok(raft("viz", tmp_path / "slow.flo", "--max-flow", "4"))
    np.testing.assert_array_equal(read_image(tmp_path / "slow_viz.png"), draw_wheel_legend(flow_to_color(slow, 4.0)))


def test_viz_arrows_over_the_first_image(tmp_path: Path, pair: list[str]) -> None:
    write_flow(tmp_path / "f.flo", _constant_flow(6, 3))
    ok(raft("viz", tmp_path / "f.flo", "--arrows", pair[0], "-o", tmp_path / "arrows.png"))
    drawn, image = read_image(tmp_path / "arrows.png"), read_image(pair[0])
    assert drawn.shape == image.shape and (drawn != image).any()


def test_warp_moves_the_image_and_writes_the_mask(tmp_path: Path, pair: list[str]) -> None:
    write_flow(tmp_path / "shift.flo", _constant_flow(3, 0))
    image = Path(shutil.copy(pair[1], tmp_path / "b.png"))
    ok(raft("warp", image, tmp_path / "shift.flo", "--mask", tmp_path / "mask.png"))
    warped, original = read_image(tmp_path / "b_warped.png"), read_image(image)
    np.testing.assert_array_equal(warped[:, : WIDTH - 3], original[:, 3:])
    mask = read_image(tmp_path / "mask.png")[..., 0]
    assert (mask[:, WIDTH - 3 :] == 255).all() and (mask[:, : WIDTH - 3] == 0).all()


def test_warp_with_a_flow_of_another_size(tmp_path: Path, assets: Path) -> None:
    write_flow(tmp_path / "f.flo", _constant_flow(1, 1))
    assert_one_line_error(raft("warp", assets / "wide.png", tmp_path / "f.flo", "-o", tmp_path / "w.png"), 1, "200x144", "160x128")


# --- raft info --------------------------------------------------------------------------------


def _write_pfm(path: Path, flow: np.ndarray) -> None:
    rgb = np.concatenate([flow, np.zeros_like(flow[..., :1])], axis=2)[::-1].astype("<f4")
    path.write_bytes(f"PF\n{flow.shape[1]} {flow.shape[0]}\n-1.0\n".encode() + rgb.tobytes())


@pytest.mark.parametrize("name", ["f.flo", "f.png", "f.npy", "f.npz", "f.pfm"])
def test_info_on_flow_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    flow = _constant_flow(3, 4)
    flow[0, 0] = np.nan
    _write_pfm(path, flow) if name.endswith(".pfm") else write_flow(path, flow)
    (record,) = records(raft("info", path, "--json"))
    assert record["kind"] == "flow" and (record["width"], record["height"]) == (WIDTH, HEIGHT)
    assert record["max_magnitude"] == pytest.approx(5.0) and record["unknown_pixels"] == 1
    assert "mean_magnitude: 5" in ok(raft("info", path)).stdout


def test_info_on_weights_video_folder_and_image(assets: Path) -> None:
    (weights,) = records(raft("info", assets / "tiny.pt", "--json"))
    assert (weights["kind"], weights["model"], weights["layout"]) == ("weights", "raft-small", "rafttool")
    assert weights["parameters"] == sum(p.numel() for p in raft_small().parameters())
    assert weights["metadata"]["recipe"] == {"data": "synthetic", "steps": 10}
    assert "metadata.recipe.steps: 10" in ok(raft("info", assets / "tiny.pt")).stdout

    (video,) = records(raft("info", assets / "clip.mp4", "--json"))
    assert (video["kind"], video["frames"], video["fps"], video["width"], video["height"]) == ("video", 6, 10.0, WIDTH, HEIGHT)
    assert video["duration"] == pytest.approx(0.6)
    (folder,) = records(raft("info", assets / "frames", "--json"))
    assert (folder["kind"], folder["frames"]) == ("frames", 3)
    (image,) = records(raft("info", assets / "wide.png", "--json"))
    assert (image["kind"], image["width"], image["height"], image["channels"]) == ("image", 200, 144, 3)


@pytest.mark.parametrize(("fast", "extra", "hinted"), [(True, [], True), (True, ["--half"], False), (False, [], False)])
def test_raft_large_in_fp32_on_a_fast_bf16_cpu_gets_a_hint_about_half(
    tmp_path: Path, pair: list[str], monkeypatch: pytest.MonkeyPatch, fast: bool, extra: list[str], hinted: bool
) -> None:
    torch.manual_seed(0)
    save_weights(tmp_path / "large.pt", build_model("large"))
    monkeypatch.setattr("rafttool.cli.common.fast_bf16", lambda: fast)
    result = ok(raft("flow", *pair, "-o", tmp_path / "out.flo", "--weights", tmp_path / "large.pt", "--iters", "1", *extra))
    note = " ".join(result.stderr.split())  # the console wraps long lines
    assert ("--half (bf16) runs RAFT-large faster (2x with AMX, 1.2x on an AMD EPYC)" in note) == hinted, result.stderr
    assert (tmp_path / "out.flo").exists() and result.stdout == ""
