"""Loading and saving RAFT weights, recognised by content rather than by file name.

Three layouts are understood:

* the original RAFT checkpoints (``raft-things.pth`` etc.): a state dict saved from
  ``nn.DataParallel`` (keys prefixed ``module.``) with the paper code's module names;
* torchvision's ``raft_large`` / ``raft_small`` state dicts;
* our own file: our module names plus a metadata header (model size, training recipe, metrics).

Files are read with ``torch.load(weights_only=True)`` so a checkpoint can never run code.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rafttool.engine.model import RAFT, build_model
from rafttool.io.atomic import atomic_write

FORMAT_TAG = "rafttool-weights"
FORMAT_VERSION = 1

BUNDLED_FILES = {"small": "raft-small.pt", "large": "raft-large.pt"}
DEFAULT_MODEL = "large"
"""The network size used when none is asked for. The bundled RAFT-large has 22-58% less error
than the bundled RAFT-small on Sintel clean, KITTI, Chairs and the real motorcycle stereo pair
(the same on Sintel final) at about 2.8x its time per pair (weights/README.md);
``--model small`` is the fast choice."""


class WeightsError(ValueError):
    """A weights file that cannot be used, with a message saying why and what to do."""


@dataclass
class LoadedWeights:
    """A state dict in our module names, the model size it fits, where it came from."""

    model: str
    state_dict: dict[str, torch.Tensor]
    layout: str
    metadata: dict[str, Any] = field(default_factory=dict)


Rule = tuple[str, str | Callable[[re.Match[str]], str] | None]

# Original RAFT names -> ours, once ``module.`` is stripped and ``fnet``/``cnet`` are renamed to
# ``feature_encoder``/``context_encoder``.
_ORIGINAL_RULES: list[Rule] = [
    (r"(\w+_encoder)\.conv1\.(\w+)", r"\1.stem_conv.\2"),
    (r"(\w+_encoder)\.norm1\.(\w+)", r"\1.stem_norm.\2"),
    (r"(\w+_encoder)\.conv2\.(\w+)", r"\1.head.\2"),
    (r"(\w+_encoder)\.layer(\d)\.(\d)\.downsample\.(\d)\.(\w+)", r"\1.stage\2.\3.shortcut.\4.\5"),
    (r"(\w+_encoder)\.layer(\d)\.(\d)\.(conv\d|norm\d)\.(\w+)", r"\1.stage\2.\3.\4.\5"),
    (r"update_block\.encoder\.convc(\d)\.(\w+)", r"update_block.motion_encoder.corr_conv\1.\2"),
    (r"update_block\.encoder\.convf(\d)\.(\w+)", r"update_block.motion_encoder.flow_conv\1.\2"),
    (r"update_block\.encoder\.conv\.(\w+)", r"update_block.motion_encoder.fuse_conv.\1"),
    (r"update_block\.gru\.conv([zrq])(\d)\.(\w+)", lambda m: f"update_block.gru.cells.{int(m[2]) - 1}.conv{m[1]}.{m[3]}"),
    (r"update_block\.gru\.conv([zrq])\.(\w+)", r"update_block.gru.cells.0.conv\1.\2"),
    (r"update_block\.flow_head\.(conv\d\.\w+)", r"update_block.flow_head.\1"),
    (r"update_block\.mask\.0\.(\w+)", r"mask_head.conv1.\1"),
    (r"update_block\.mask\.2\.(\w+)", r"mask_head.conv2.\1"),
]

_TORCHVISION_RULES: list[Rule] = [
    (r"(\w+_encoder)\.convnormrelu\.0\.(\w+)", r"\1.stem_conv.\2"),
    (r"(\w+_encoder)\.convnormrelu\.1\.(\w+)", r"\1.stem_norm.\2"),
    (r"(\w+_encoder)\.conv\.(\w+)", r"\1.head.\2"),
    (r"(\w+_encoder)\.layer(\d)\.(\d)\.convnormrelu(\d)\.0\.(\w+)", r"\1.stage\2.\3.conv\4.\5"),
    (r"(\w+_encoder)\.layer(\d)\.(\d)\.convnormrelu(\d)\.1\.(\w+)", r"\1.stage\2.\3.norm\4.\5"),
    (r"(\w+_encoder)\.layer(\d)\.(\d)\.downsample\.(\d)\.(\w+)", r"\1.stage\2.\3.shortcut.\4.\5"),
    (r"update_block\.motion_encoder\.convcorr(\d)\.0\.(\w+)", r"update_block.motion_encoder.corr_conv\1.\2"),
    (r"update_block\.motion_encoder\.convflow(\d)\.0\.(\w+)", r"update_block.motion_encoder.flow_conv\1.\2"),
    (r"update_block\.motion_encoder\.conv\.0\.(\w+)", r"update_block.motion_encoder.fuse_conv.\1"),
    (
        r"update_block\.recurrent_block\.convgru(\d)\.(conv[zrq])\.(\w+)",
        lambda m: f"update_block.gru.cells.{int(m[1]) - 1}.{m[2]}.{m[3]}",
    ),
    (r"update_block\.flow_head\.(conv\d\.\w+)", r"update_block.flow_head.\1"),
    (r"mask_predictor\.convrelu\.0\.(\w+)", r"mask_head.conv1.\1"),
    (r"mask_predictor\.conv\.(\w+)", r"mask_head.conv2.\1"),
]


def _rename(state: Mapping[str, torch.Tensor], rules: list[Rule], source: str) -> dict[str, torch.Tensor]:
    """Rename every key by the first rule that matches it; a rule without replacement drops it."""
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for pattern, replacement in rules:
            match = re.fullmatch(pattern, key)
            if match:
                break
        else:
            raise WeightsError(f"unexpected parameter {key!r} in a {source} checkpoint: the file does not hold RAFT weights")
        if replacement is None:
            continue
        renamed[match.expand(replacement) if isinstance(replacement, str) else replacement(match)] = tensor
    return renamed


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _model_size_from_stem(state: Mapping[str, torch.Tensor], key: str) -> str:
    width = state[key].shape[0]
    for name, size in (("large", 64), ("small", 32)):
        if width == size:
            return name
    raise WeightsError(f"feature encoder stem has {width} channels; RAFT-large has 64 and RAFT-small 32")


def interpret_state(obj: Any, source: str = "checkpoint") -> LoadedWeights:
    """Recognise the layout of a loaded checkpoint object and convert it to our names."""
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT_TAG:
        if obj.get("version") != FORMAT_VERSION:
            raise WeightsError(f"{source} is rafttool weights version {obj.get('version')}; this rafttool reads version {FORMAT_VERSION}: upgrade rafttool")
        return LoadedWeights(obj["model"], dict(obj["state_dict"]), "rafttool", dict(obj.get("metadata", {})))
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source} is not a state dict of tensors: pass RAFT weights (original, torchvision or rafttool)")
    state = _strip_prefix(obj, "module.")
    if "fnet.conv1.weight" in state:
        model = _model_size_from_stem(state, "fnet.conv1.weight")
        if model == "large" and "update_block.mask.0.weight" not in state:
            raise WeightsError(
                f"{source} is an early RAFT-large checkpoint without the upsampling-mask weights; "
                "use a checkpoint from the released RAFT code (raft-things.pth, raft-sintel.pth, ...)"
            )
        # The original registers each shortcut's norm twice (as norm3/norm4 and as downsample.1).
        duplicate_norm = "norm3" if model == "large" else "norm4"
        rules: list[Rule] = [(rf"\w+_encoder\.layer\d\.\d\.{duplicate_norm}\.\w+", None), *_ORIGINAL_RULES]
        encoders = {"fnet": "feature_encoder", "cnet": "context_encoder"}
        state = {re.sub(r"^(fnet|cnet)\.", lambda m: encoders[m[1]] + ".", k): v for k, v in state.items()}
        return LoadedWeights(model, _rename(state, rules, "original RAFT"), "original")
    if "feature_encoder.convnormrelu.0.weight" in state:
        model = _model_size_from_stem(state, "feature_encoder.convnormrelu.0.weight")
        return LoadedWeights(model, _rename(state, _TORCHVISION_RULES, "torchvision"), "torchvision")
    if "feature_encoder.stem_conv.weight" in state:
        model = _model_size_from_stem(state, "feature_encoder.stem_conv.weight")
        return LoadedWeights(model, dict(state), "rafttool")
    raise WeightsError(f"{source} holds tensors but not RAFT weights (no feature encoder found)")


def read_weights(path: str | os.PathLike[str]) -> LoadedWeights:
    """Read a weights file of any supported layout; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file '{path}' not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or hostile files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(f"cannot read weights '{path}': not a safe PyTorch checkpoint ({reason[:160]})") from None
    return interpret_state(obj, f"'{path}'")


def load_into(model: RAFT, weights: LoadedWeights) -> RAFT:
    """Copy weights into a model of the matching size, with a clear error on any mismatch."""
    if weights.model != model.config.name:
        raise WeightsError(f"weights are for RAFT-{weights.model} but the model is RAFT-{model.config.name}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights.state_dict))
    unexpected = sorted(set(weights.state_dict) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise WeightsError(f"weights do not fit RAFT-{weights.model}: {detail}")
    for key, tensor in weights.state_dict.items():
        if tensor.shape != expected[key].shape:
            raise WeightsError(f"weights do not fit RAFT-{weights.model}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")
    model.load_state_dict(weights.state_dict)
    return model


def model_from_weights(path: str | os.PathLike[str]) -> tuple[RAFT, LoadedWeights]:
    """Build the model size a weights file is for and load it."""
    weights = read_weights(path)
    return load_into(build_model(weights.model), weights), weights


def save_weights(path: str | os.PathLike[str], model: RAFT, metadata: Mapping[str, Any] | None = None) -> None:
    """Write our weights format atomically (a temporary file renamed into place)."""
    payload = {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "model": model.config.name,
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as temp:
        torch.save(payload, temp)


def average_weights(paths: Sequence[str | os.PathLike[str]]) -> LoadedWeights:
    """The uniform average of several weights files of one model size (a "weight soup").

    Fine-tuning runs that start from the same weights stay in one basin of the loss, so their
    average is usually at least as good as the best of them and more even across data
    (Wortsman et al. 2022); averaging unrelated runs gives a broken model, which this cannot
    detect. Floating-point tensors are averaged in float64; counters (batch-norm step counts)
    are taken from the first file. The result carries each input's name and header.
    """
    if len(paths) < 2:
        raise WeightsError(f"averaging needs at least two weights files, got {len(paths)}")
    loaded = [read_weights(path) for path in paths]
    first = loaded[0]
    for path, weights in zip(paths[1:], loaded[1:]):
        if weights.model != first.model:
            raise WeightsError(f"'{path}' is RAFT-{weights.model} but '{paths[0]}' is RAFT-{first.model}: average weights of one model size")
        if set(weights.state_dict) != set(first.state_dict):
            raise WeightsError(f"'{path}' and '{paths[0]}' hold different tensors: average weights of one architecture")
    averaged: dict[str, torch.Tensor] = {}
    for key, tensor in first.state_dict.items():
        if not tensor.is_floating_point():
            averaged[key] = tensor.clone()
            continue
        total = torch.zeros(tensor.shape, dtype=torch.float64)
        for path, weights in zip(paths, loaded):
            if weights.state_dict[key].shape != tensor.shape:
                raise WeightsError(f"'{path}' has {key} of shape {tuple(weights.state_dict[key].shape)}, '{paths[0]}' {tuple(tensor.shape)}")
            total += weights.state_dict[key].double()
        averaged[key] = (total / len(loaded)).to(tensor.dtype)
    sources = [{"file": Path(path).name, "layout": w.layout, "metadata": w.metadata} for path, w in zip(paths, loaded)]
    return LoadedWeights(first.model, averaged, "rafttool", {"average_of": sources})


class NoBundledWeightsError(WeightsError):
    """No default weights ship for the requested model size."""


def weights_dirs() -> list[Path]:
    """Where bundled weights may live: $RAFTTOOL_WEIGHTS, the source tree, the installed data dir."""

    dirs = []
    if os.environ.get("RAFTTOOL_WEIGHTS"):
        dirs.append(Path(os.environ["RAFTTOOL_WEIGHTS"]))
    dirs.append(Path(__file__).resolve().parents[2] / "weights")
    dirs.append(Path(sys.prefix) / "share" / "rafttool" / "weights")
    return dirs


def bundled_weights(model: str) -> Path:
    """Path of the default weights for a model size, or a clear error when none ship yet."""
    if model not in BUNDLED_FILES:
        raise WeightsError(f"unknown model size {model!r}: use one of {', '.join(BUNDLED_FILES)}")
    for directory in weights_dirs():
        candidate = directory / BUNDLED_FILES[model]
        if candidate.is_file():
            return candidate
    available = [m for m in BUNDLED_FILES if any((d / BUNDLED_FILES[m]).is_file() for d in weights_dirs())]
    hint = f" or use --model {available[0]}" if available else ""
    raise NoBundledWeightsError(
        f"no bundled weights for RAFT-{model} yet: pass --weights PATH (original RAFT, torchvision or rafttool checkpoints){hint}"
    )
