"""What the CPU computes fast: flags settle what they can, timings the rest."""

from __future__ import annotations

import torch

from rafttool.engine import cpu


def test_bf16_is_fast_only_where_the_cpu_has_bf16_instructions_and_it_times_faster(monkeypatch):
    timed = []

    def speedup(threads: int) -> float:
        timed.append(threads)
        return measured

    monkeypatch.setattr(cpu, "_bf16_speedup", speedup)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    measured = 3.0
    assert not cpu.fast_bf16() and not timed  # no bf16 instructions: nothing to time
    for flag in ("avx512_bf16", "amx_bf16"):
        monkeypatch.setattr(cpu, "cpu_flags", lambda flag=flag: frozenset({"avx512f", flag}))
        measured = 2.0  # an AMD EPYC (AVX512-BF16): twice as fast as fp32
        assert cpu.fast_bf16()
        measured = 0.6  # an Intel Xeon with the same flag: slower than fp32
        assert not cpu.fast_bf16()
    assert timed == [torch.get_num_threads()] * 4


def test_bf16_speedup_is_a_ratio_of_two_timings_of_one_convolution():
    speedup = cpu._bf16_speedup.__wrapped__(1)
    assert 0.05 < speedup < 20.0


def test_best_time_is_the_fastest_timed_call():
    calls = []
    assert cpu.best_time(3, lambda: calls.append(1)) >= 0.0
    assert len(calls) == 4  # one untimed call first
