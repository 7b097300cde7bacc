"""model.pretrained=torchvision: torchvision's original ImageNet weights (IMAGENET1K_V1) in timm's
ResNet of the same name, checked against torchvision's own model; unsupported models, offline
errors and the recorded pretrained_source.  No downloads: get_state_dict is monkeypatched."""
import hashlib
from urllib.error import URLError

import pytest
import timm
import torch
import torchvision
from torch import nn

from lt_bench.errors import CheckpointError, ConfigError
from lt_bench.models import build_model
from lt_bench.models.pretrained import file_sha256, torchvision_weights
from lt_bench.validate import validate


def random_torchvision(name: str, seed: int = 0) -> nn.Module:
    """torchvision's model, randomly initialised, with non-trivial BatchNorm statistics and affine
    parameters, so that a wrong buffer or parameter mapping changes the features."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


def patch_state_dict(monkeypatch, name: str, state: dict, calls: list | None = None):
    weights = torchvision_weights(name)

    def fake(self, *args, **kwargs):
        if calls is not None:
            calls.append((self, args, kwargs))
        return {k: v.clone() for k, v in state.items()}
    monkeypatch.setattr(type(weights), "get_state_dict", fake)
    return weights


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_give_torchvisions_features(monkeypatch, name):
    reference = random_torchvision(name)
    state = reference.state_dict()
    # torchvision's original V1 files predate num_batches_tracked: they must load without it too
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    calls = []
    weights = patch_state_dict(monkeypatch, name, state, calls)
    model = build_model(name, 7, pretrained="torchvision").eval()

    (_, _, kwargs), = calls
    assert calls[0][0] is weights and weights.name == "IMAGENET1K_V1"
    assert kwargs.get("weights_only") is True
    assert model.pretrained_source == f"torchvision:{type(weights).__name__}.IMAGENET1K_V1"

    reference.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, features = reference(x), model.backbone(x)
    assert features.shape == expected.shape == (2, reference_dim(name))
    assert expected.abs().mean() > 1e-3
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    assert model.classifier.out_features == 7


def reference_dim(name: str) -> int:
    return {"resnet18": 512, "resnet50": 2048}[name]


def test_resnet152_is_torchvisions_original_imagenet_checkpoint():
    weights = torchvision_weights("resnet152")
    assert weights is torchvision.models.ResNet152_Weights.IMAGENET1K_V1
    assert weights is not torchvision.models.ResNet152_Weights.DEFAULT      # DEFAULT is V2's recipe
    assert weights.url == "https://download.pytorch.org/models/resnet152-394f9c45.pth"


@pytest.mark.parametrize("name", ["seresnet50", "resnet50d", "densenet121", "resnet32"])
def test_models_without_torchvision_weights_are_config_errors(name):
    with pytest.raises(ConfigError, match=f"{name}.*null.*weights file.*'timm'.*'torchvision'"
                       if name != "resnet32" else "resnet32 .*local CIFAR.*weights file or null"):
        build_model(name, 7, pretrained="torchvision")


def test_torchvision_needs_three_input_channels():
    with pytest.raises(ConfigError, match="3 input channels.*in_chans=1"):
        build_model("resnet18", 7, in_chans=1, pretrained="torchvision")


def test_offline_torchvision_is_a_checkpoint_error_naming_the_url(monkeypatch):
    weights = torchvision_weights("resnet18")

    def offline(self, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(type(weights), "get_state_dict", offline)
    with pytest.raises(CheckpointError) as info:
        build_model("resnet18", 7, pretrained="torchvision")
    message = str(info.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in message and "URLError" in message
    assert weights.url in message and "model.pretrained=PATH" in message


def test_a_mismatching_torchvision_state_dict_is_a_checkpoint_error(monkeypatch):
    state = random_torchvision("resnet34").state_dict()        # resnet34's weights under resnet18's name
    patch_state_dict(monkeypatch, "resnet18", state)
    with pytest.raises(CheckpointError, match="ResNet18_Weights.IMAGENET1K_V1 does not fit the backbone"):
        build_model("resnet18", 7, pretrained="torchvision")


def test_pretrained_source_of_files_timm_and_none(tmp_path, monkeypatch):
    assert build_model("resnet18", 7).pretrained_source is None
    assert build_model("resnet32", 7).pretrained_source is None

    path = tmp_path / "r18.pth"
    torch.save(build_model("resnet18", 3).backbone.state_dict(), path)
    source = build_model("resnet18", 7, pretrained=str(path)).pretrained_source
    assert source == f"file:{path.resolve()} sha256:{file_sha256(path)[:12]}"
    assert source.endswith(hashlib.sha256(path.read_bytes()).hexdigest()[:12])

    # timm's hub, faked: create_model(pretrained=True) without the download
    created = []

    def fake_load(model, pretrained_cfg=None, *args, **kwargs):
        created.append(pretrained_cfg)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", fake_load)
    model = build_model("resnet152", 7, pretrained="timm")
    assert created, "timm's load_pretrained was not reached"
    assert model.pretrained_source == "timm:resnet152.a1h_in1k"


def test_validate_accepts_torchvision_for_resnets_only(make_cfg):
    cfg = make_cfg("task=placeslt")
    assert cfg.model.name == "resnet152" and cfg.model.pretrained == "torchvision"   # the recipe's default
    validate(cfg)
    validate(make_cfg("task=placeslt", "model=resnet50", "model.pretrained=torchvision"))
    with pytest.raises(ConfigError, match="seresnet50.*'timm'.*'torchvision'"):
        validate(make_cfg("task=placeslt", "model=seresnet50", "model.pretrained=torchvision"))
    with pytest.raises(ConfigError, match="file not found.*'timm'.*'torchvision'.*null"):
        validate(make_cfg("task=placeslt", "model.pretrained=tochvision"))
