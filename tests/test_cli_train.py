"""`raft train` / `raft export` end to end, and parity with the original RAFT through `raft flow`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rafttool.cli.main import app
from rafttool.io import read_flow
from tests.fixtures.parity_weights import make_tv_state_dict, original_state_dict

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.usefixtures("single_thread")


def test_train_then_resume_then_export(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--run-dir", str(run), "--steps", "2", "--batch-size", "1", "--crop", "128x128", "--iters", "1", "--workers", "0", "-q"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads((run / "config.json").read_text())["steps"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 1

    again = runner.invoke(app, ["train", "--run-dir", str(run)])
    assert again.exit_code == 0 and "resuming" in again.output

    exported = runner.invoke(app, ["export", str(run), str(tmp_path / "w.pt")])
    assert exported.exit_code == 0, exported.output
    info = runner.invoke(app, ["info", str(tmp_path / "w.pt"), "--json"])
    record = json.loads(info.stdout)
    assert "small" in json.dumps(record) and '"steps": 2' in json.dumps(record)


def test_bad_crop_and_missing_run_are_one_line_errors(tmp_path):
    bad = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "r"), "--crop", "100x100"])
    assert bad.exit_code == 2 and "multiples of 8" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(app, ["export", str(tmp_path / "nothing"), str(tmp_path / "w.pt")])
    assert missing.exit_code == 1 and "no checkpoint" in missing.output
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("layout", ["original", "torchvision"])
@pytest.mark.parametrize("size", ["small", "large"])
def test_cli_flow_matches_the_original_implementation(tmp_path, size, layout):
    """`raft flow A B -o out.flo --weights CKPT --iters 12 --device cpu` reproduces the reference."""
    reference = np.load(FIXTURES / f"parity_{size}_131x157.npz")
    state = make_tv_state_dict(size)
    torch.save(original_state_dict(state, size) if layout == "original" else state, tmp_path / "ckpt.pth")
    for name in ("image1", "image2"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), reference[name][..., ::-1])
    out = tmp_path / "out.flo"
    args = ["flow", str(tmp_path / "image1.png"), str(tmp_path / "image2.png"), "-o", str(out)]
    result = runner.invoke(app, args + ["--weights", str(tmp_path / "ckpt.pth"), "--iters", "12", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    difference = np.abs(read_flow(out) - reference["flows"][-1])
    assert int(reference["iters_saved"][-1]) == 11
    assert difference.mean() < 1e-3 and difference.max() < 0.05, (difference.mean(), difference.max())
