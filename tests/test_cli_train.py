"""`raft train` / `raft export` end to end, and parity with the original RAFT through `raft flow`."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import rafttool.train.trainer as trainer_module
from rafttool.cli.main import app
from rafttool.io import read_flow
from tests.fixtures.parity_weights import make_tv_state_dict, original_state_dict

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.usefixtures("single_thread")


def test_train_then_resume_then_export(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--run-dir", str(run), "--steps", "2", "--batch-size", "1", "--crop", "128x128", "--iters", "1", "--workers", "0", "-q"]
    first = runner.invoke(app, args + ["--synthetic", "max_layers=5", "--synthetic", "low-contrast-prob=0.5"])
    assert first.exit_code == 0, first.output
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 2 and config["synthetic"] == {"max_layers": 5, "low_contrast_prob": 0.5}
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 1

    again = runner.invoke(app, ["train", "--run-dir", str(run)])
    assert again.exit_code == 0 and "resuming" in again.output
    longer = runner.invoke(app, ["train", "--run-dir", str(run), "--steps", "3"])
    assert longer.exit_code == 0 and "from 2 to 3 steps" in longer.output
    assert json.loads((run / "config.json").read_text())["steps"] == 3

    exported = runner.invoke(app, ["export", str(run), str(tmp_path / "w.pt")])
    assert exported.exit_code == 0, exported.output
    info = runner.invoke(app, ["info", str(tmp_path / "w.pt"), "--json"])
    record = json.loads(info.stdout)
    assert "small" in json.dumps(record) and '"steps": 3' in json.dumps(record)


def test_sigterm_stops_training_with_a_checkpoint_of_the_last_step(tmp_path, monkeypatch):
    """`kill` (or a session ending) loses no steps: the checkpoint is written on the way out."""
    run = tmp_path / "run"
    step = trainer_module.Trainer.train_step

    def step_then_terminate(self, batch):
        metrics = step(self, batch)
        if self.step == 2:  # the third step: it completes, and the run stops after it
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    monkeypatch.setattr(trainer_module.Trainer, "train_step", step_then_terminate)
    args = ["train", "--run-dir", str(run), "--steps", "50", "--batch-size", "1", "--crop", "128x128", "--iters", "1"]
    result = runner.invoke(app, args + ["--workers", "0", "--checkpoint-minutes", "60", "-q"])
    assert result.exit_code == 143  # 128 + SIGTERM, as the shell reports a terminated command
    assert "terminated at step 3" in result.output and "rerun the same command to resume" in result.output
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored once training stops


def test_sigterm_to_the_data_workers_too_still_stops_training_cleanly(tmp_path, monkeypatch):
    """`pkill -f "raft train"` signals the data workers as well: they must outlive the step in
    progress, so the run ends with its checkpoint instead of failing on a lost worker."""
    run = tmp_path / "run"
    step = trainer_module.Trainer.train_step

    def step_then_terminate_all(self, batch):
        metrics = step(self, batch)
        if self.step == 1:
            workers = multiprocessing.active_children()
            assert workers, "the run should load data in a worker process"
            for process in [*workers, multiprocessing.current_process()]:
                os.kill(process.pid, signal.SIGTERM)
            time.sleep(0.5)  # a worker killed by the signal would be dead by now
        return metrics

    monkeypatch.setattr(trainer_module.Trainer, "train_step", step_then_terminate_all)
    args = ["train", "--run-dir", str(run), "--steps", "50", "--batch-size", "1", "--crop", "128x128", "--iters", "1"]
    result = runner.invoke(app, args + ["--workers", "1", "--checkpoint-minutes", "60", "-q"])
    assert result.exit_code == 143, result.output
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 2


@pytest.mark.parametrize("amx", [False, True], ids=["cpu-without-amx", "cpu-with-amx"])
def test_training_precision_defaults_to_bf16_only_where_it_is_faster(tmp_path, monkeypatch, amx):
    monkeypatch.setattr(trainer_module, "fast_bf16", lambda: amx)
    args = ["train", "--steps", "1", "--batch-size", "1", "--crop", "128x128", "--iters", "1", "--workers", "0", "--device", "cpu", "-q"]
    for run, choice in (("auto", []), ("fp32", ["--fp32"]), ("bf16", ["--bf16"])):
        result = runner.invoke(app, [*args, "--run-dir", str(tmp_path / run), *choice])
        assert result.exit_code == 0, result.output
    assert [json.loads((tmp_path / run / "config.json").read_text())["bf16"] for run in ("auto", "fp32", "bf16")] == [amx, False, True]


def test_bad_crop_and_missing_run_are_one_line_errors(tmp_path):
    bad = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "r"), "--crop", "100x100"])
    assert bad.exit_code == 2 and "multiples of 8" in bad.output and "Traceback" not in bad.output
    for setting, message in (("colour=red", "KEY one of"), ("max_layers=many", "not a valid value for max_layers")):
        bad = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "r"), "--synthetic", setting])
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output, bad.output
    nowhere = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "r"), "--device", "cuda:99"])
    assert nowhere.exit_code == 1 and "not available here" in nowhere.output and "Traceback" not in nowhere.output
    assert not (tmp_path / "r").exists()
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
