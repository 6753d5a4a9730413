"""The IB head and the paper's eight ablation heads (Table 3), one configurable class registered by name."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import ConfigError, WidthsConfig, check_choice


def l1_penalty(module: nn.Linear) -> torch.Tensor:
    """Sum of absolute weights of a linear layer (the NONLIN PEN + L1 head's penalty, bias excluded)."""
    return module.weight.abs().sum()


@dataclass(frozen=True)
class HeadSpec:
    """What distinguishes one ablation head from another (Table 3 of the paper)."""

    width: str | None  # penultimate layer width: "intermediate" | "wide" | "narrow"; None: no such layer
    linear: bool = True  # False: SiLU after the penultimate layer
    compression: bool = False  # add γ ||z||^2 (Eq. 3) to the loss
    dropout: bool = False  # dropout before the classifier
    l1: bool = False  # L1 penalty on the penultimate layer


HEADS: dict[str, HeadSpec] = {
    "ib": HeadSpec("intermediate", compression=True),
    "wide_ib": HeadSpec("wide", compression=True),
    "narrow_ib": HeadSpec("narrow", compression=True),
    "no_pen": HeadSpec(None),
    "no_pen_dropout": HeadSpec(None, dropout=True),
    "lin_pen": HeadSpec("intermediate"),
    "nonlin_pen": HeadSpec("intermediate", linear=False),
    "nonlin_pen_l1": HeadSpec("intermediate", linear=False, l1=True),
}


class Head(nn.Module):
    """Penultimate layer (optional) + linear classifier; ``forward(h)`` returns ``(logits, z)``.

    ``z`` is the penultimate representation: the output of the penultimate layer (after its SiLU when
    non-linear), or the backbone features themselves when there is no penultimate layer. Dropout acts
    between ``z`` and the classifier, so ``z`` is never dropped.

    The head also owns the extra loss terms it implies: :attr:`uses_compression` tells the trainer to add
    γ ||z||^2, and :meth:`penalty` returns the L1 term (zero for heads without it).
    """

    def __init__(self, in_features: int, num_classes: int, *, latent_dim: int | None, linear: bool = True,
                 compression: bool = False, dropout: float = 0.0, l1_weight: float = 0.0,
                 l1_on: str = "weights"):
        super().__init__()
        assert in_features > 0 and num_classes > 1, (in_features, num_classes)
        assert latent_dim is None or latent_dim > 0, f"latent_dim must be positive, got {latent_dim}"
        assert l1_on in ("weights", "activations"), f"l1_on must be 'weights' or 'activations', got {l1_on!r}"
        assert l1_weight == 0 or latent_dim is not None, "an L1 penalty needs a penultimate layer"
        self.penultimate = nn.Linear(in_features, latent_dim) if latent_dim is not None else None
        self.activation = nn.Identity() if linear else nn.SiLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(latent_dim or in_features, num_classes)
        self.uses_compression = compression
        self.l1_weight, self.l1_on = float(l1_weight), l1_on
        self.in_features = in_features
        self.latent_dim = latent_dim or in_features

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.activation(self.penultimate(h)) if self.penultimate is not None else h
        return self.classifier(self.dropout(z)), z

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        """The L1 term: l1_weight * sum|W_pen| (weights) or l1_weight * batch mean of ||z||_1 (activations)."""
        if self.l1_weight == 0:
            return z.new_zeros(())
        if self.l1_on == "weights":
            return self.l1_weight * l1_penalty(self.penultimate)
        return self.l1_weight * z.abs().sum(dim=1).mean()


class IBHead(Head):
    """The paper's IB layer: a low-dimensional *linear* layer z = W_H h + b_H trained with γ ||z||^2 (Eq. 3).

    Examples
    --------
    >>> head = IBHead(512, 10, 8)
    >>> logits, z = head(torch.randn(4, 512))
    >>> logits.shape, z.shape
    (torch.Size([4, 10]), torch.Size([4, 8]))
    """

    def __init__(self, in_features: int, num_classes: int, latent_dim: int):
        super().__init__(in_features, num_classes, latent_dim=latent_dim, linear=True, compression=True)


def classifier_lr_scale(head: Head) -> float:
    """sqrt(backbone width / classifier fan-in): the classifier lr factor that lets any head's classifier grow
    its scale as fast as one on the backbone features (no_pen's) would.

    Adam moves every weight by about lr per step whatever its gradient, so a classifier row's norm r can grow
    by about lr·sqrt(fan-in) per step. Behind an 8-wide layer on 256 backbone features, r grows sqrt(32) = 5.7
    times slower than no_pen's, and r sets both the confidence the head can reach in a short run and the
    pressure γ/r² its latents can bear. 1 for heads without a penultimate layer and for WIDE IB.

    >>> classifier_lr_scale(IBHead(512, 10, 8))
    8.0
    """
    return math.sqrt(head.in_features / head.classifier.in_features)


def auto_width(num_classes: int, which: str = "intermediate") -> int:
    """The latent width ``widths.<which>: auto`` gives for ``num_classes`` classes.

    ``narrow``: ceil(log2 K), the fewest nodes whose two values per node still give every class its own
    hypercube vertex (the paper's NARROW IB on CIFAR-10). ``intermediate``: 2^(ceil(log2 K) - 1), the paper's
    own choices (8 for 10 classes, 64 for 100) as one rule: the width grows with K like the classifier's
    rows do, so the classes are not squeezed together as K grows. Measured with 100 classes in 38 and 150
    epochs: width 8 lost 12.8 and 17.9 points to no_pen, width 64 +1.3 and -0.65 (docs/gamma.md, *The paper's
    regime*).

    >>> [auto_width(k) for k in (2, 10, 26, 50, 100)], auto_width(10, "narrow")
    ([1, 8, 16, 32, 64], 4)
    """
    bits = max(1, math.ceil(math.log2(num_classes)))
    return bits if which == "narrow" else max(bits, 2 ** (bits - 1))


def resolve_widths(widths: WidthsConfig, num_classes: int, in_features: int | None = None) -> WidthsConfig:
    """``widths`` with every ``auto`` replaced: :func:`auto_width` for ``num_classes``, and for ``wide`` the
    backbone's feature width ``in_features`` (the paper's WIDE IB is as wide as the features it reads)."""
    def resolve(name, value):
        if value != "auto":
            return value
        if name == "wide":
            if in_features is None:
                raise ConfigError("model.widths.wide: auto needs the backbone's feature width")
            return in_features
        return auto_width(num_classes, name)
    return WidthsConfig(**{name: resolve(name, value) for name, value in vars(widths).items()})


def build_head(name: str, in_features: int, num_classes: int, widths: WidthsConfig | dict | None = None, *,
               dropout: float = 0.5, l1_weight: float = 1e-4, l1_on: str = "weights") -> Head:
    """Builds one of :data:`HEADS` by name; ``widths`` gives the intermediate / wide / narrow sizes."""
    return Head(**head_arguments(name, in_features, num_classes, widths, dropout=dropout, l1_weight=l1_weight,
                                 l1_on=l1_on))


def head_arguments(name: str, in_features: int, num_classes: int, widths: WidthsConfig | dict | None = None, *,
                   dropout: float = 0.5, l1_weight: float = 1e-4, l1_on: str = "weights",
                   where: str = "model.head") -> dict:
    """The keyword arguments of :class:`Head` for the head :func:`build_head` builds (for its subclasses);
    ``where`` names the setting in error messages."""
    check_choice(where, name, HEADS)
    if widths is None:
        widths = WidthsConfig()
    elif isinstance(widths, dict):
        widths = WidthsConfig(**widths)
    widths = resolve_widths(widths, num_classes, in_features)
    spec = HEADS[name]
    latent_dim = getattr(widths, spec.width) if spec.width else None
    if latent_dim is not None and latent_dim < 1:
        raise ConfigError(f"model.widths.{spec.width} must be a positive integer, got {latent_dim!r}")
    return {"in_features": in_features, "num_classes": num_classes, "latent_dim": latent_dim, "linear": spec.linear,
            "compression": spec.compression, "dropout": dropout if spec.dropout else 0.0,
            "l1_weight": l1_weight if spec.l1 else 0.0, "l1_on": l1_on}
