"""``raft inspect``: the captured internals are the ones the engine computed, and the report opens.

Every check recomputes its quantity here, independently of ``rafttool.inspect``, from the
engine's own outputs: the flow of an untraced pass, the traced feature maps, a numpy bilinear
sampler. The network is a seeded random RAFT run for 3 iterations on frames of 132x164 px,
a size that needs padding, so the pixel -> 1/8-grid conversion is exercised too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rafttool.api import FlowEngine
from rafttool.cli.main import app
from rafttool.engine.model import raft_large, raft_small
from rafttool.engine.padding import STRIDE, Padding
from rafttool.engine.trace import Trace
from rafttool.engine.weights import save_weights
from rafttool.inspect import Capture, capture, write_report

HEIGHT, WIDTH = 132, 164
ITERS = 3
PIXELS = [(0, 0), (6, 7), (77, 50), (WIDTH - 1, HEIGHT - 1)]  # (6, 7) lies in cell (1, 1) only once padded
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("single_thread")


def _frames() -> tuple[np.ndarray, np.ndarray]:
    """A blurred-noise texture and the same texture moved 3 px right and 2 px down (RGB)."""
    noise = np.random.default_rng(0).integers(0, 256, (HEIGHT + 8, WIDTH + 8, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(noise, (7, 7), 0)
    return scene[4 : 4 + HEIGHT, 4 : 4 + WIDTH].copy(), scene[2 : 2 + HEIGHT, 1 : 1 + WIDTH].copy()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inspect")
    torch.manual_seed(7)
    save_weights(root / "small.pt", raft_small())
    save_weights(root / "large.pt", raft_large())
    image1, image2 = _frames()
    for name, rgb in (("a.png", image1), ("b.png", image2), ("wide.png", np.zeros((HEIGHT, WIDTH + 8, 3), np.uint8))):
        cv2.imwrite(str(root / name), rgb[..., ::-1])
    return {"small": root / "small.pt", "large": root / "large.pt", "a": root / "a.png", "b": root / "b.png", "wide": root / "wide.png"}


@pytest.fixture(scope="module", params=["small", "large"])
def run(request: pytest.FixtureRequest, files: dict[str, Path]) -> tuple[FlowEngine, Capture]:
    engine = FlowEngine(weights=files[request.param], device="cpu", iters=ITERS)
    image1, image2 = _frames()
    return engine, capture(engine, image1, image2, PIXELS)


def _cell(x: int, y: int) -> tuple[int, int]:
    padding = Padding.for_size(HEIGHT, WIDTH)
    return (x + padding.left) // STRIDE, (y + padding.top) // STRIDE


def _bilinear(image: np.ndarray, x: float, y: float) -> float:
    """Bilinear sample with pixel centres at integers; neighbours outside the map count as zero."""
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    total = 0.0
    for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
        for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            if 0 <= yi < image.shape[0] and 0 <= xi < image.shape[1]:
                total += wx * wy * float(image[yi, xi])
    return total


def test_traced_flow_is_the_engines_flow(run):
    engine, cap = run
    image1, image2 = _frames()
    assert Padding.for_size(HEIGHT, WIDTH) == cap.padding and cap.padding.left > 0 and cap.padding.top > 0
    np.testing.assert_allclose(cap.flow, engine.estimate(image1, image2), atol=1e-5, rtol=0)
    for pixel in cap.pixels:
        assert pixel.flow == (cap.flow[pixel.y, pixel.x, 0], cap.flow[pixel.y, pixel.x, 1])


def test_response_maps_are_feature_dot_products_pooled(run):
    _, cap = run
    channels = cap.fmap1.shape[0]
    for pixel in cap.pixels:
        cx, cy = _cell(pixel.x, pixel.y)
        assert pixel.cell == (cx, cy)
        expected = np.einsum("c,chw->hw", cap.fmap1[:, cy, cx].astype(np.float64), cap.fmap2.astype(np.float64)) / np.sqrt(channels)
        np.testing.assert_allclose(pixel.response[0], expected, atol=1e-4, rtol=1e-4)
        for finer, coarser in zip(pixel.response, pixel.response[1:]):
            h, w = coarser.shape
            pooled = finer[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
            np.testing.assert_allclose(coarser, pooled, atol=1e-4, rtol=1e-4)


def test_lookup_windows_are_bilinear_samples_of_the_response_maps(run):
    _, cap = run
    r = cap.radius
    fractional = False
    for pixel in cap.pixels:
        assert pixel.windows.shape == (ITERS, cap.num_levels, 2 * r + 1, 2 * r + 1)
        np.testing.assert_array_equal(pixel.coords[0], pixel.cell)  # the flow starts at zero
        for k in range(ITERS):
            x, y = pixel.coords[k]
            fractional |= not (float(x).is_integer() and float(y).is_integer())
            for level, response in enumerate(pixel.response):
                expected = np.array(
                    [[_bilinear(response, x / 2**level + dx, y / 2**level + dy) for dx in range(-r, r + 1)] for dy in range(-r, r + 1)]
                )
                np.testing.assert_allclose(pixel.windows[k, level], expected, atol=1e-4, rtol=1e-4)
    assert fractional, "no lookup fell between cells; the test would not see the interpolation"


def test_delta_curve_and_running_flow_match_the_iterations(run):
    engine, cap = run
    image1, image2 = _frames()
    trace = Trace()
    batch = [torch.from_numpy(rgb).permute(2, 0, 1)[None].float() for rgb in (image1, image2)]
    with torch.inference_mode():
        output = engine.model(*batch, iters=ITERS, trace=trace)
    deltas = trace.per_iteration["delta"]
    assert len(deltas) == ITERS == cap.iters
    expected = [STRIDE * float(torch.linalg.vector_norm(d[0], dim=0).mean()) for d in deltas]
    np.testing.assert_allclose(cap.mean_abs_delta, expected, rtol=1e-5)
    low_res = output.low_res_flow[0].numpy()
    np.testing.assert_allclose(cap.low_res_flow, low_res.transpose(1, 2, 0), atol=1e-5)
    for pixel in cap.pixels:
        cx, cy = pixel.cell
        np.testing.assert_allclose(pixel.deltas, [d[0, :, cy, cx].numpy() for d in deltas], atol=1e-5)
        np.testing.assert_allclose(pixel.flows, np.cumsum(pixel.deltas, axis=0), atol=1e-5)
        np.testing.assert_allclose(pixel.flows[-1], low_res[:, cy, cx], atol=1e-5)


def test_large_model_mask_weights_rebuild_the_pixel_flow(files):
    engine = FlowEngine(weights=files["large"], device="cpu", iters=ITERS)
    cap = capture(engine, *_frames(), PIXELS)
    coarse = np.pad(STRIDE * cap.low_res_flow, ((1, 1), (1, 1), (0, 0)))  # unfold pads the grid with zeros
    for pixel in cap.pixels:
        assert pixel.mask_weights is not None
        np.testing.assert_allclose(pixel.mask_weights.sum(axis=(2, 3)), 1.0, atol=1e-5)
        cx, cy = pixel.cell
        sx, sy = pixel.subpixel
        neighbours = coarse[cy : cy + 3, cx : cx + 3]  # (3, 3, 2) around the cell
        rebuilt = np.einsum("ij,ijc->c", pixel.mask_weights[sy, sx], neighbours)
        np.testing.assert_allclose(rebuilt, pixel.flow, atol=1e-4)


def test_report_is_one_self_contained_folder(run, tmp_path):
    _, cap = run
    index = write_report(cap, tmp_path / "report", {"weights": "random"})
    page = index.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all((index.parent / s).is_file() for s in sources)
    assert {f"p{i}_trajectory.gif" for i in range(1, len(PIXELS) + 1)} <= set(sources)
    assert ("p1_mask.png" in sources) == (cap.model_name == "large")
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)|<link|<script src|@import", page)
    for section in ("inputs", "features", "similarity", "updates", "motion", "upsampling"):
        assert f'id="{section}"' in page
    assert page.count("<circle") >= ITERS  # the convergence plot, one dot per iteration


def _invoke(files: dict[str, Path], *args: object):
    common = [files["a"], files["b"], "--weights", files["small"], "--iters", ITERS, "--device", "cpu"]
    return runner.invoke(app, ["inspect", *[str(a) for a in common], *[str(a) for a in args]])


def test_cli_writes_report_and_json_with_the_captured_numbers(files, tmp_path):
    result = _invoke(files, "-p", "77,50", "-p", "0,131", "-o", tmp_path / "report", "--json", "-")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "index.html").is_file()
    data = json.loads(result.stdout)
    assert data["iters"] == ITERS and len(data["mean_abs_delta_px"]) == ITERS
    first = data["pixels"][0]
    assert (first["x"], first["y"], first["cell"]) == (77, 50, list(_cell(77, 50)))
    steps = first["iterations"]
    np.testing.assert_allclose(np.cumsum([s["delta_px"] for s in steps], axis=0), [s["flow_px"] for s in steps], atol=1e-4)
    for step in steps:
        level0 = np.array(step["lookup_centre"][0])
        for level, centre in enumerate(step["lookup_centre"]):
            np.testing.assert_allclose(centre, level0 / 2**level)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-p", f"{WIDTH},10"], 2, f"pixel {WIDTH},10 is outside the {WIDTH}x{HEIGHT} image"),
        (["-p", "5,-1"], 2, "is outside the"),
        (["-p", "5;7"], 2, "expected two whole numbers X,Y"),
        ([], 2, "nothing to write"),
    ],
)
def test_cli_rejects_bad_pixels_with_one_line(files, tmp_path, args, code, message):
    output = [] if message == "nothing to write" else ["-o", tmp_path / "r"]
    result = _invoke(files, *(args or ["-p", "1,1"]), *output)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "r" / "index.html").exists()


def test_cli_rejects_frames_of_different_sizes(files, tmp_path):
    args = ["inspect", files["a"], files["wide"], "-p", "1,1", "--weights", files["small"], "-o", tmp_path / "r"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: images differ in size: {WIDTH}x{HEIGHT} vs {WIDTH + 8}x{HEIGHT}; resize them to match"


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium on PATH (apt-get install -y chromium; .ci/run installs it)"
)
def test_report_opens_in_a_headless_browser(run, tmp_path):
    _, cap = run
    index = write_report(cap, tmp_path / "report")
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr", "--v=0", "--dump-dom", index.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # The page's own script counts the pictures that decoded; console messages would show as CONSOLE lines.
    loaded = re.search(r'data-images-total="(\d+)" data-images-loaded="(\d+)"', done.stdout)
    assert loaded, done.stdout[:2000]
    total, ok = map(int, loaded.groups())
    assert total >= 15 and ok == total
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
