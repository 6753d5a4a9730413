"""A classifier = backbone + head; ``forward(x)`` returns ``(logits, z)`` so metrics never need hooks."""
from __future__ import annotations

import torch
from torch import nn

from .backbones import build_backbone
from .config import Config
from .heads import Head, build_head


class Classifier(nn.Module):
    """Wraps any feature extractor and a :class:`~lpc.heads.Head`.

    ``backbone`` may be a user's own module mapping inputs to (N, F) features; ``head`` is built with
    ``in_features = F``.
    """

    def __init__(self, backbone: nn.Module, head: Head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


def build_model(config: Config, in_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """The backbone and head that ``config.model`` names, for inputs of ``in_shape`` and ``num_classes``."""
    m = config.model
    backbone = build_backbone(m.backbone, in_shape, mlp_hidden=tuple(m.mlp_hidden))
    head = build_head(m.head, backbone.num_features, num_classes, m.widths, dropout=m.dropout,
                      l1_weight=m.l1_weight, l1_on=m.l1_on)
    return Classifier(backbone, head)
