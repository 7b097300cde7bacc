"""Models: the CIFAR ResNet's architecture, timm by name, the backbone/classifier split."""
import pytest
import torch

from lt_bench.errors import ConfigError
from lt_bench.models import build_model, count_parameters


def cifar_resnet_parameters(depth: int, num_classes: int, widths=(16, 32, 64), in_chans=3) -> int:
    """Count from the architecture: 3x3 convs without bias, BatchNorm (2 per channel),
    option-A shortcuts without parameters, a linear classifier with bias."""
    n = (depth - 2) // 6
    total = in_chans * widths[0] * 9 + 2 * widths[0]
    previous = widths[0]
    for width in widths:
        for _ in range(n):
            total += previous * width * 9 + width * width * 9 + 4 * width
            previous = width
    return total + widths[-1] * num_classes + num_classes


@pytest.mark.parametrize("depth", [8, 20, 32])
def test_cifar_resnet_parameter_count(depth):
    model = build_model(f"resnet{depth}", 10)
    assert count_parameters(model) == cifar_resnet_parameters(depth, 10)


@pytest.mark.parametrize("depth,millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_every_cifar_resnet_config_builds_the_papers_size(make_cfg, depth, millions):
    """``model=resnet<depth>`` (a config file each) against He et al. 2016, Table 6 (CIFAR-10)."""
    cfg = make_cfg(f"model=resnet{depth}", "task=cifar10lt")
    count = count_parameters(build_model(cfg.model.name, 10))
    assert count == cifar_resnet_parameters(depth, 10) and round(count / 1e6, 2 if millions < 1 else 1) == millions


def test_resnet32_is_the_papers_size():
    assert count_parameters(build_model("resnet32", 10)) == 464_154    # "0.46M" in the literature


def test_resnet32_shapes_and_split():
    model = build_model("resnet32", 100).eval()
    x = torch.randn(2, 3, 32, 32)
    features = model.backbone(x)
    assert features.shape == (2, 64)
    torch.testing.assert_close(model(x), model.classifier(features))
    assert model.num_classes == 100
    assert len(list(model.backbone.layers)) == 15       # 3 stages x 5 blocks


def test_grayscale_input_channels():
    model = build_model("resnet8", 10, in_chans=1)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_timm_model_by_name_is_split_too():
    model = build_model("resnet18", 7)
    assert model.classifier.in_features == 512 and model.classifier.out_features == 7
    assert model.backbone(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ConfigError, match="unknown model 'resnet33'.*resnet32.*timm"):
        build_model("resnet33", 10)
