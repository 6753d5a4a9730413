import pytest
import torch
from torch import nn

from lpc import Classifier, build_head
from lpc.backbones import BACKBONES, build_backbone, resnet18, resnet50
from lpc.config import ConfigError


def count(module, kind):
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("name,shape", [("mlp", (1, 28, 28)), ("mlp", (20,)), ("cnn", (1, 28, 28)), ("cnn", (3, 32, 32))])
def test_small_backbones_return_num_features(name, shape):
    backbone = build_backbone(name, shape)
    features = backbone.eval()(torch.randn(2, *shape))
    assert features.shape == (2, backbone.num_features)


def test_resnets_are_cifar_style_with_silu():
    r18 = resnet18()
    stem_conv = r18.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    assert count(r18, nn.MaxPool2d) == 0 and count(r18, nn.ReLU) == 0
    assert count(r18, nn.SiLU) > 0 and count(r18, nn.BatchNorm2d) > 0
    assert r18.num_features == 512
    # 11.2M parameters is the standard CIFAR ResNet-18 without its classifier
    assert 11.0e6 < sum(p.numel() for p in r18.parameters()) < 11.3e6
    r50 = resnet50()
    assert r50.num_features == 2048 and count(r50, nn.MaxPool2d) == 0
    assert 23.4e6 < sum(p.numel() for p in r50.parameters()) < 23.6e6


def test_resnet18_features_on_cifar_shape():
    model = resnet18().eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_registry_names():
    assert set(BACKBONES) == {"mlp", "cnn", "resnet18", "resnet50"}
    with pytest.raises(ConfigError, match="needs image inputs"):
        build_backbone("resnet18", (20,))
    with pytest.raises(ConfigError, match="unknown value 'resnet19'"):
        build_backbone("resnet19", (3, 32, 32))


def test_users_own_backbone():
    class Mine(nn.Module):
        num_features = 12

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(5, 12))

        def forward(self, x):
            return self.net(x)

    model = Classifier(Mine(), build_head("ib", Mine.num_features, 4))
    logits, z = model(torch.randn(3, 5))
    assert logits.shape == (3, 4) and z.shape == (3, 2)  # widths default to auto: 2 nodes, 4 vertices, 4 classes
