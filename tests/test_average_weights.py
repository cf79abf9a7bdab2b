"""`raft average-weights` and `rafttool.average_weights`: uniform weight soups of one model size."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from rafttool import average_weights, read_weights, save_weights
from rafttool.cli.main import app
from rafttool.engine.model import build_model
from tests.fixtures.parity_weights import make_tv_state_dict, original_state_dict

runner = CliRunner()


def _saved_model(path, seed: int, size: str = "small") -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(size)
    save_weights(path, model, {"recipe": {"seed": seed}})
    return model.state_dict()


def test_the_average_is_the_elementwise_mean_and_keeps_each_header(tmp_path):
    first, second = _saved_model(tmp_path / "a.pt", 1), _saved_model(tmp_path / "b.pt", 2)
    soup = average_weights([tmp_path / "a.pt", tmp_path / "b.pt"])
    assert soup.model == "small"
    for key, tensor in first.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(soup.state_dict[key], (tensor + second[key]) / 2)
            assert soup.state_dict[key].dtype == tensor.dtype
        else:
            assert torch.equal(soup.state_dict[key], tensor)
    assert [source["metadata"]["recipe"]["seed"] for source in soup.metadata["average_of"]] == [1, 2]
    assert not torch.equal(soup.state_dict["feature_encoder.stem_conv.weight"], first["feature_encoder.stem_conv.weight"])


def test_layouts_are_converted_before_averaging(tmp_path):
    """An original RAFT checkpoint and the same weights in torchvision's names average to themselves."""
    state = make_tv_state_dict("small")
    torch.save(state, tmp_path / "tv.pth")
    torch.save(original_state_dict(state, "small"), tmp_path / "orig.pth")
    soup = average_weights([tmp_path / "tv.pth", tmp_path / "orig.pth"])
    reference = read_weights(tmp_path / "tv.pth").state_dict
    assert set(soup.state_dict) == set(reference)
    for key, tensor in reference.items():
        torch.testing.assert_close(soup.state_dict[key], tensor, rtol=0, atol=1e-7)


def test_cli_writes_a_loadable_soup(tmp_path):
    _saved_model(tmp_path / "a.pt", 1)
    _saved_model(tmp_path / "b.pt", 2)
    result = runner.invoke(app, ["average-weights", str(tmp_path / "soup.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")])
    assert result.exit_code == 0, result.output
    soup = read_weights(tmp_path / "soup.pt")
    assert soup.layout == "rafttool" and [s["file"] for s in soup.metadata["average_of"]] == ["a.pt", "b.pt"]
    assert "averaged" in soup.metadata
    build_model("small").load_state_dict(soup.state_dict)


def test_cli_refuses_mixed_sizes_and_single_files_without_writing(tmp_path):
    _saved_model(tmp_path / "small.pt", 1)
    _saved_model(tmp_path / "large.pt", 2, size="large")
    output = tmp_path / "soup.pt"
    for inputs, message in (
        (["small.pt"], "at least two"),
        (["small.pt", "large.pt"], "average weights of one model size"),
        (["small.pt", "missing.pt"], "not found"),
    ):
        result = runner.invoke(app, ["average-weights", str(output), *(str(tmp_path / name) for name in inputs)])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
        assert not output.exists()
