"""Training: the loss goes down, and a killed run resumes exactly where its checkpoint left it."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict

import pytest
import torch

from rafttool.train.loss import sequence_loss
from rafttool.train.synthetic import SyntheticFlowConfig, SyntheticFlowDataset
from rafttool.train.trainer import TrainConfig, Trainer

TINY = dict(model="small", batch_size=2, height=128, width=128, iters=2, workers=0, bf16=False, log_every=1)


def _dataset() -> SyntheticFlowDataset:
    return SyntheticFlowDataset(SyntheticFlowConfig(height=128, width=128, max_layers=4), seed=3)


def test_sequence_loss_weights_later_iterations_more():
    gt = torch.zeros(1, 2, 4, 4)
    valid = torch.ones(1, 4, 4)
    early_wrong = [torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)]
    late_wrong = [torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 4, 4)]
    loss_early, _ = sequence_loss(early_wrong, gt, valid, gamma=0.8)
    loss_late, metrics = sequence_loss(late_wrong, gt, valid, gamma=0.8)
    assert torch.isclose(loss_early, torch.tensor(0.8)) and torch.isclose(loss_late, torch.tensor(1.0))
    assert abs(metrics["epe"] - 2**0.5) < 1e-6


def test_sequence_loss_ignores_invalid_and_huge_gt():
    gt = torch.zeros(1, 2, 2, 2)
    gt[0, 0, 0, 0] = 1000.0
    valid = torch.ones(1, 2, 2)
    valid[0, 1, 1] = 0
    prediction = torch.zeros(1, 2, 2, 2)
    prediction[0, :, 1, 1] = 50.0
    loss, _ = sequence_loss([prediction], gt, valid)
    assert float(loss) == 0.0


def test_a_few_steps_on_one_batch_reduce_the_loss(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(TrainConfig(run_dir=str(tmp_path), steps=30, lr=2e-4, warmup_fraction=0.1, **TINY), _dataset())
    batch = {k: torch.stack([_dataset()[i][k] for i in range(2)]) for k in ("image1", "image2", "flow", "valid")}
    losses = [trainer.train_step(batch)["loss"] for _ in range(12)]
    assert min(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # the skipped update
def test_a_non_finite_loss_skips_the_update(tmp_path):
    trainer = Trainer(TrainConfig(run_dir=str(tmp_path), steps=3, **TINY), _dataset())
    batch = {k: torch.stack([_dataset()[i][k] for i in range(2)]) for k in ("image1", "image2", "flow", "valid")}
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    metrics = trainer.train_step(batch | {"image1": torch.full_like(batch["image1"], float("nan"))})
    assert not torch.isfinite(metrics["loss"])
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]) and torch.equal(trainer.ema[key], before[key]), key
    trainer.train_step(batch)  # and the next finite step does update
    key = "update_block.flow_head.conv2.weight"
    assert not torch.equal(trainer.model.state_dict()[key], before[key])


def test_the_metrics_log_says_how_long_each_step_waited_for_data(tmp_path):
    Trainer(TrainConfig(run_dir=str(tmp_path), steps=2, **TINY), _dataset()).run()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert {"loss", "epe", "1px", "3px", "5px", "grad_norm", "lr", "seconds", "data_seconds"} <= set(record)
        assert all(isinstance(value, (int, float)) for value in record.values())
        assert record["seconds"] > 0 and record["data_seconds"] >= 0


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from rafttool.train.trainer import TrainConfig, Trainer
    torch.set_num_threads(1)  # multi-threaded CPU backward passes do not always sum in one order
    from tests.test_training import TINY, _dataset
    def die_after_four(step, total, metrics):
        if step == 4:
            os.kill(os.getpid(), signal.SIGKILL)
    Trainer(TrainConfig(run_dir=sys.argv[1], steps=6, checkpoint_seconds=0.0, **TINY), _dataset(), progress=die_after_four).run()
    """
)


@pytest.mark.usefixtures("single_thread")  # bit-identical results need one summation order
def test_a_killed_run_resumes_with_identical_state(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path / "killed")], cwd=root, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]

    resumed = Trainer(TrainConfig(run_dir=str(tmp_path / "killed"), steps=6, **TINY), _dataset())
    # Step 4 is lost: the kill lands before its checkpoint, so the run resumes after step 3.
    assert resumed.step == 3
    resumed.run()

    straight = Trainer(TrainConfig(run_dir=str(tmp_path / "straight"), steps=6, **TINY), _dataset())
    straight.run()
    assert resumed.step == straight.step == 6
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    for a, b in zip(resumed.optimizer.state_dict()["state"].values(), straight.optimizer.state_dict()["state"].values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=0, atol=0)
    for key, value in straight.ema.items():
        torch.testing.assert_close(resumed.ema[key], value, rtol=0, atol=0)
    assert resumed.scheduler.state_dict()["last_epoch"] == straight.scheduler.state_dict()["last_epoch"]
    assert asdict(resumed.config) == asdict(straight.config) | {"run_dir": str(tmp_path / "killed")}
    # The log holds each step once: the killed run's record of step 4 was dropped and redone.
    logged = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]


def test_the_weight_average_follows_the_model_and_is_what_export_ships(tmp_path):
    from rafttool.engine.weights import read_weights
    from rafttool.train.trainer import export_checkpoint

    trainer = Trainer(TrainConfig(run_dir=str(tmp_path), steps=3, ema_decay=0.9, **TINY), _dataset())
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    key = "update_block.flow_head.conv2.weight"
    current, average = trainer.model.state_dict()[key], trainer.ema[key]
    # The average lies strictly between the start and the current weights (it lags the model).
    assert not torch.equal(average, current) and not torch.equal(average, start[key])
    assert (average - start[key]).norm() < (current - start[key]).norm()
    export_checkpoint(tmp_path, tmp_path / "out.pt")
    shipped = read_weights(tmp_path / "out.pt").state_dict
    torch.testing.assert_close(shipped[key], average, rtol=0, atol=0)


def test_a_resumed_run_given_a_new_length_replans_its_schedule(tmp_path):
    run_dir = str(tmp_path / "run")
    Trainer(TrainConfig(run_dir=run_dir, steps=3, checkpoint_seconds=0.0, **TINY), _dataset()).run()
    lengthened = Trainer(TrainConfig(run_dir=run_dir, steps=5, **TINY), _dataset())
    assert lengthened.step == 3 and TrainConfig.load(run_dir).steps == 5

    planned = Trainer(TrainConfig(run_dir=str(tmp_path / "planned"), steps=5, **TINY), _dataset())
    for _ in range(3):
        planned.optimizer.step()
        planned.scheduler.step()
    assert lengthened.scheduler.total_steps == planned.scheduler.total_steps
    assert lengthened.scheduler.get_last_lr() == planned.scheduler.get_last_lr()
    assert lengthened.optimizer.param_groups[0]["lr"] == planned.optimizer.param_groups[0]["lr"]
    lengthened.run()
    assert lengthened.step == 5


def simulated_clock(tick: float = 0.1):
    """A timer that advances ``tick`` seconds per reading: budgets behave alike on any machine."""
    readings = itertools.count()
    return lambda: next(readings) * tick


def test_a_time_budget_fits_the_schedule_to_the_measured_speed(tmp_path, monkeypatch):
    from rafttool.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "BUDGET_WARMUP_STEPS", 1)
    monkeypatch.setattr(trainer_module, "BUDGET_TIMED_STEPS", 3)
    monkeypatch.setattr(trainer_module, "clock", simulated_clock())
    trainer = Trainer(TrainConfig(run_dir=str(tmp_path), steps=10**6, checkpoint_seconds=1e9, **TINY), _dataset())
    trainer.run(time_budget=3.0)
    replanned = TrainConfig.load(tmp_path).steps
    # Re-planned to a length the budget allows, and stopped at it or at the budget's end.
    assert 4 < replanned < 10**6
    assert 4 <= trainer.step <= replanned
    assert trainer.scheduler.total_steps == replanned + 100
    # The schedule is positioned where the run stands: fully annealed only at its planned end.
    assert trainer.scheduler.last_epoch == trainer.step


def test_a_time_budget_is_refitted_at_every_checkpoint(tmp_path, monkeypatch):
    from rafttool.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "BUDGET_WARMUP_STEPS", 1)
    monkeypatch.setattr(trainer_module, "BUDGET_TIMED_STEPS", 2)
    monkeypatch.setattr(trainer_module, "clock", simulated_clock())
    trainer = Trainer(TrainConfig(run_dir=str(tmp_path), steps=10**6, checkpoint_seconds=0.0, **TINY), _dataset())
    lengths = []
    fit = trainer.fit_schedule_to
    monkeypatch.setattr(trainer, "fit_schedule_to", lambda *args: (fit(*args), lengths.append(trainer.config.steps)))
    trainer.run(time_budget=5.0)
    # A checkpoint after every step: the plan is refitted from then on, to a stable end.
    assert len(lengths) >= 2 and trainer.step <= lengths[-1]
