"""Pretrained backbone weights from a file: loaded into the backbone, mismatches and missing files named."""
import pytest
import torch

from lt_bench.validate import validate
from lt_bench.errors import CheckpointError, ConfigError
from lt_bench.models import build_model


def test_pretrained_weights_from_a_file(tmp_path, make_cfg):
    source = build_model("resnet18", 1000)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.backbone.state_dict().items()}
                | {"module.fc.weight": torch.zeros(1000, 512), "module.fc.bias": torch.zeros(1000)}}, path)
    model = build_model("resnet18", 7, pretrained=str(path))
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="does not fit the backbone: .* missing key"):
        build_model("resnet34", 7, pretrained=str(path))
    with pytest.raises(ConfigError, match="model.pretrained=.*nope.pth: file not found"):
        validate(make_cfg("task=placeslt", f"model.pretrained={tmp_path / 'nope.pth'}"))
