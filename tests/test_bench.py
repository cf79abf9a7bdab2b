"""``raft bench``: the configuration grid, memory accounting, and one real run of each kind
(random-weights RAFT-small and a DIS baseline) at a tiny size in fresh worker processes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
from typer.testing import CliRunner

from rafttool import benchmark
from rafttool.benchmark import BenchConfig, _CpuMemory, measure, synthetic_frames
from rafttool.cli import bench_cmd
from rafttool.cli.main import app
from rafttool.cli.tables import markdown_table
from rafttool.engine.int8 import int8_supported
from rafttool.engine.weights import NoBundledWeightsError

runner = CliRunner()


def test_sizes_parse_and_the_grid_covers_raft_but_not_baselines() -> None:
    assert bench_cmd.parse_size("1024x436") == (1024, 436)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        bench_cmd.parse_size("1024*436")
    configs = bench_cmd.plan(["raft", "dis-medium"], [(64, 48), (96, 64)], [1, 2], [4, 12], ["cpu"], half=True, repeats=3)
    raft = [c for c in configs if c.is_raft]
    assert len(raft) == 2 * 2 * 2 and {(c.batch, c.iters) for c in raft} == {(1, 4), (1, 12), (2, 4), (2, 12)}
    dis = [c for c in configs if not c.is_raft]
    assert [(c.width, c.batch, c.half, c.repeats) for c in dis] == [(64, 1, False, 3), (96, 1, False, 3)]


def test_synthetic_frames_are_textured_and_shifted() -> None:
    first, second = synthetic_frames(96, 64)
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8 and first.std() > 10
    assert np.array_equal(second[3:, 7:], first[:-3, :-7])


def test_rss_increase_counts_what_is_allocated_after_start() -> None:
    memory = _CpuMemory()
    memory.start()
    block = np.ones(64 * 1024 * 1024, np.uint8)  # 64 MiB, written so it is resident
    added = memory.stop()
    del block
    assert 56 <= added <= 256, added


def test_bench_runs_raft_and_a_baseline_in_fresh_processes() -> None:
    args = ["bench", "--size", "128x128", "--random-weights", "--model", "small", "--iters", "1", "--repeats", "2", "--warmup", "0", "--threads", "1"]
    result = runner.invoke(app, [*args, "-m", "raft", "-m", "dis-ultrafast", "--json"])
    assert result.exit_code == 0, result.output
    raft, dis = [json.loads(line) for line in result.stdout.splitlines()]
    assert (raft["model"], raft["weights"], raft["iters"], raft["device"]) == ("raft-small", "random", 1, "cpu")
    assert (dis["model"], dis["weights"], dis["iters"]) == ("dis-ultrafast", "-", None)
    assert (raft["iterations_run"], dis["iterations_run"]) == (1.0, None)
    for record in (raft, dis):
        assert (record["width"], record["height"], record["repeats"], record["threads"]) == (128, 128, 2, 1)
        assert len(record["latencies_s"]) == 2 and record["latency_min_s"] <= record["latency_median_s"] <= record["latency_max_s"]
        assert record["pairs_per_second"] > 0 and record["memory_mb"] >= 0
        assert record["host"]["cores"] >= 1
        assert set(record["host"]["fast_precisions"]) <= {"int8", "bf16"}
        assert ("int8" in record["host"]["fast_precisions"]) == int8_supported()
        assert record["host"]["convolutions"] in ("direct convolutions", "Winograd convolutions", "Winograd convolutions where timed faster")


def test_markdown_table_of_an_in_process_measurement() -> None:
    result = measure(BenchConfig("dis-ultrafast", 64, 48, repeats=2, warmup=0))
    header, rows = bench_cmd.table_rows([result])
    table = markdown_table(header, rows, labels=5)
    assert table.startswith("| method | weights | device | precision | size | batch | iters | median ms |")
    assert "| dis-ultrafast | - | cpu | - | 64x48 | 1 | - |" in table


def test_bench_without_weights_points_to_random_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(model: str) -> None:
        raise NoBundledWeightsError(f"no bundled weights for RAFT-{model} yet")

    monkeypatch.setattr(bench_cmd, "bundled_weights", missing)
    result = runner.invoke(app, ["bench", "--size", "64x48"])
    assert result.exit_code == 1 and "--random-weights" in result.stderr
    clash = runner.invoke(app, ["bench", "--random-weights", "--weights", "w.pt"])
    assert clash.exit_code == 2 and "not both" in clash.stderr


def test_a_too_small_size_fails_before_any_process_starts() -> None:
    result = runner.invoke(app, ["bench", "--size", "64x48", "--random-weights"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        "error: frames are 64x48 px, too small for RAFT: both sides must be at least 121 px; resize them up first"
    )


def test_a_worker_failure_reaches_the_caller_as_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The worker's JSON error line, produced in-process, then parsed by the parent side."""
    config = BenchConfig("dis-ultrafast", 64, 48, batch=2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(asdict(config))))
    assert benchmark._worker() == 1
    output = capsys.readouterr().out

    def fake_run(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(args, 1, stdout=output, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(benchmark.BenchError, match=r"^dis-ultrafast at 64x48: dis-ultrafast runs on the CPU one pair at a time"):
        benchmark.run_config(config)
