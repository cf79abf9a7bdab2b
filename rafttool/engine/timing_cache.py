"""Timed choices kept on disk, so that each process does not time them again.

Which way a layer runs fastest (:func:`rafttool.engine.winograd._faster_route`) is settled by
timing it on its first call. One-pair ``raft flow`` runs are all first passes: on the 2-core
AMD EPYC, RAFT-large's first pass at 1024x436 takes 2.35-2.58 s when it times the routes and 2.04
s with them stored, its second pass 1.45-1.57 s (median of 4 processes each,
``benchmarks/first_pass.py``); RAFT-small, which takes the direct route throughout there, saves
less (0.85-0.94 s against 0.82 s). Keeping the choices also makes the routes, and so the last
bits of the flow, the same from run to run.

Choices are stored per machine and software: one JSON file per CPU model and flags, PyTorch
version and rafttool version, under ``$RAFTTOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/rafttool``,
else ``~/.cache/rafttool``; ``RAFTTOOL_CACHE_DIR=off`` keeps them in memory only. A file that
cannot be read or written is ignored: the cache only saves time, it never stops a run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

import rafttool
from rafttool.engine.cpu import cpu_flags, cpu_model
from rafttool.io.atomic import atomic_write

DIRECTORY_VARIABLE = "RAFTTOOL_CACHE_DIR"

Choice = bool | float

# Per cache file (None: memory only), what this process has read or stored in it.
_loaded: dict[Path | None, dict[str, Choice]] = {}


def _machine() -> dict[str, str]:
    """What a stored timing depends on besides the call's own shapes and thread count."""
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16]
    return {"cpu": cpu_model() or "unknown", "flags": flags, "torch": torch.__version__, "rafttool": rafttool.__version__}


def cache_file() -> Path | None:
    """This machine's file of stored choices, or None when the cache is switched off."""
    setting = os.environ.get(DIRECTORY_VARIABLE)
    if setting == "off":
        return None
    if setting:
        folder = Path(setting)
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rafttool"
    digest = hashlib.sha256(json.dumps(_machine(), sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"timings-{digest}.json"


def _read(path: Path | None) -> dict[str, Choice]:
    if path is None:
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        choices = stored["choices"] if stored.get("machine") == _machine() else {}
        return {str(name): value for name, value in choices.items() if isinstance(value, (bool, int, float))}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _choices(path: Path | None) -> dict[str, Choice]:
    if path not in _loaded:
        _loaded[path] = _read(path)
    return _loaded[path]


def recall(name: str) -> Choice | None:
    """The choice stored under ``name`` on this machine, or None if it was never timed."""
    return _choices(cache_file()).get(name)


def remember(name: str, choice: Choice) -> None:
    """Store ``choice`` under ``name``, merged with what other processes stored meanwhile."""
    path = cache_file()
    choices = _choices(path)
    choices[name] = choice
    if path is None:
        return
    merged = {**_read(path), **choices}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps({"machine": _machine(), "choices": merged}, indent=1, sort_keys=True), encoding="utf-8")
    except OSError:
        return
    choices.update(merged)
