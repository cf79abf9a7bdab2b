"""Engine behaviour beyond parity: sizes, batches, warm start, weights files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from rafttool.engine.model import raft_large, raft_small
from rafttool.engine.padding import InputSizeError
from rafttool.engine.weights import (
    NoBundledWeightsError,
    WeightsError,
    bundled_weights,
    model_from_weights,
    read_weights,
    save_weights,
)
from tests.fixtures.parity_weights import make_tv_state_dict, original_state_dict


def _pair(height: int = 130, width: int = 150, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, height, width + 4, generator=generator) * 255
    return image[..., 4:], image[..., :-4]


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    torch.manual_seed(0)
    return raft_small().eval()


def test_any_size_is_padded_and_cropped_back(small):
    image1, image2 = _pair(121, 133)
    with torch.inference_mode():
        out = small(image1, image2, iters=2)
    assert out.flow.shape == (1, 2, 121, 133)
    assert out.low_res_flow.shape == (1, 2, 16, 17)
    assert torch.isfinite(out.flow).all()


def test_too_small_input_is_a_clear_error_not_nans(small):
    image1, image2 = _pair(120, 200)
    with pytest.raises(InputSizeError, match="at least 121 px"):
        small(image1, image2, iters=1)


def test_final_flow_equals_last_iteration_and_batches_match_single_pairs(small):
    image1, image2 = _pair(batch=2)
    with torch.inference_mode():
        batched = small(image1, image2, iters=3, all_iterations=True)
        single = small(image1[1:], image2[1:], iters=3)
    assert len(batched.iterations) == batched.iterations_run == 3
    torch.testing.assert_close(batched.flow, batched.iterations[-1])
    torch.testing.assert_close(batched.flow[1:], single.flow, atol=1e-4, rtol=0)


def test_warm_start_continues_from_the_given_flow(small):
    image1, image2 = _pair()
    with torch.inference_mode():
        six = small(image1, image2, iters=6)
        three = small(image1, image2, iters=3)
        # The GRU state restarts, so the result differs, but it must start from the given flow.
        zero_iters = small(image1, image2, iters=0, flow_init=three.low_res_flow)
    torch.testing.assert_close(zero_iters.low_res_flow, three.low_res_flow)
    assert six.flow.shape == zero_iters.flow.shape


def test_own_format_round_trip_keeps_weights_and_metadata(tmp_path):
    model = raft_large()
    path = tmp_path / "ours.pt"
    save_weights(path, model, {"recipe": "test", "sintel_clean_epe": 1.5})
    loaded, weights = model_from_weights(path)
    assert weights.layout == "rafttool" and weights.model == "large"
    assert weights.metadata["sintel_clean_epe"] == 1.5
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_original_checkpoint_without_mask_weights_is_explained(tmp_path):
    state = original_state_dict(make_tv_state_dict("large"), "large")
    state = {k: v for k, v in state.items() if ".mask." not in k}
    torch.save(state, tmp_path / "old.pth")
    with pytest.raises(WeightsError, match="without the upsampling-mask weights"):
        read_weights(tmp_path / "old.pth")


def test_model_size_comes_from_the_checkpoint_not_the_name(tmp_path):
    torch.save(make_tv_state_dict("small"), tmp_path / "raft-large.pth")
    model, weights = model_from_weights(tmp_path / "raft-large.pth")
    assert model.config.name == "small" and weights.layout == "torchvision"


class _Exploit:
    def __reduce__(self):
        return (Path("/tmp/rafttool-pwned").touch, ())


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"],
    ids=["empty", "text", "broken-zip"],
)
def test_corrupt_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="cannot read weights"):
        read_weights(path)


def test_a_hostile_pickle_is_refused_without_running_it(tmp_path):
    marker = Path("/tmp/rafttool-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pth"
    torch.save({"x": _Exploit()}, path, pickle_module=pickle)
    with pytest.raises(WeightsError, match="not a safe PyTorch checkpoint"):
        read_weights(path)
    assert not marker.exists()


def test_foreign_tensors_are_not_mistaken_for_raft(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not RAFT weights"):
        read_weights(tmp_path / "other.pth")
    torch.save(raft_small().state_dict() | {"extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match="do not fit RAFT-small"):
        model_from_weights(tmp_path / "extra.pth")


def test_missing_bundled_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("rafttool.engine.weights.weights_dirs", lambda: [tmp_path])
    with pytest.raises(NoBundledWeightsError, match="--weights PATH"):
        bundled_weights("large")
