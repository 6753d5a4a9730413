"""Feature extractors h(x): CIFAR-style ResNet-18/50 with SiLU (Appendix C), an MLP and a small CNN.

Every backbone maps a batch of inputs to (N, num_features) and exposes ``num_features``; a user's own
module works as a backbone when it does the same.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .config import ConfigError, check_choice


class MLP(nn.Module):
    """Flatten, then Linear + BatchNorm + SiLU blocks; features are the last hidden layer."""

    def __init__(self, in_shape: tuple[int, ...], hidden: list[int] | tuple[int, ...] = (512, 512)):
        super().__init__()
        assert len(hidden) > 0, "MLP needs at least one hidden layer"
        layers, width = [nn.Flatten()], math.prod(in_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.SiLU()]
            width = size
        self.net = nn.Sequential(*layers)
        self.num_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv stages (32, 64 channels) with BatchNorm, SiLU and pooling, then global average pooling."""

    def __init__(self, in_shape: tuple[int, ...], channels: tuple[int, int] = (32, 64)):
        super().__init__()
        assert len(in_shape) == 3, f"SmallCNN needs (C, H, W) inputs, got shape {in_shape}"
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(in_shape[0], c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, 2 * c2, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c2), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.num_features = 2 * c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        return self.act(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016): 3x3 stem, no max-pool, four stages, global average pooling.

    SiLU ("swish") replaces ReLU everywhere, as in Appendix C.
    """

    def __init__(self, block: type[nn.Module], num_blocks: list[int], in_channels: int = 3):
        super().__init__()
        self.in_planes = 64
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.SiLU())
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            stride = 1 if i == 0 else 2
            for s in [stride] + [1] * (blocks - 1):
                stages.append(block(self.in_planes, planes, s))
                self.in_planes = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 512 * block.expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


def _image_channels(in_shape: tuple[int, ...]) -> int:
    assert len(in_shape) == 3, f"ResNets need (C, H, W) inputs, got shape {in_shape}"
    return in_shape[0]


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda in_shape, mlp_hidden=(512, 512): MLP(in_shape, mlp_hidden),
    "cnn": lambda in_shape, **_: SmallCNN(in_shape),
    "resnet18": lambda in_shape, **_: ResNet(BasicBlock, [2, 2, 2, 2], _image_channels(in_shape)),
    "resnet50": lambda in_shape, **_: ResNet(Bottleneck, [3, 4, 6, 3], _image_channels(in_shape)),
}


def build_backbone(name: str, in_shape: tuple[int, ...], **options) -> nn.Module:
    """Builds a registered backbone for inputs of shape ``in_shape`` (without the batch dimension)."""
    check_choice("model.backbone", name, BACKBONES)
    if name != "mlp" and len(in_shape) != 3:
        raise ConfigError(f"model.backbone: '{name}' needs image inputs (C, H, W), but the data has shape "
                          f"{tuple(in_shape)}; use backbone 'mlp' for flat vectors")
    return BACKBONES[name](tuple(in_shape), **options)


def resnet18(in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], in_channels)


def resnet50(in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], in_channels)
