"""The training objective's extra terms: the compression loss (Eq. 3), the γ schedule and the L1 penalty."""
from __future__ import annotations

import math

import torch
from torch import nn


def compression_loss(z: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """The IB layer's compression term L_H = ||z||^2 of Eq. 3, averaged over the batch.

    Parameters
    ----------
    z : Tensor of shape (N, P)
        Penultimate (IB-layer) latents.
    reduction : {"sum", "mean"}
        ``"sum"`` (default) is the paper's Eq. 3: (1/N) sum_i ||z_i||^2.
        ``"mean"`` also divides by the latent width P, (1/(N P)) sum_i ||z_i||^2, which is what the
        authors' code computes (``mse_loss(z, zeros)``); with it, the same γ pulls P times more weakly.

    The square is taken in float32 or wider even under autocast: with γ = 1e6 and z ~ 1e-4 the term
    must not be rounded away.

    Examples
    --------
    >>> compression_loss(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor(12.5000)
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    squared = z.float().pow(2) if z.dtype in (torch.float16, torch.bfloat16) else z.pow(2)
    per_sample = squared.sum(dim=1) if reduction == "sum" else squared.mean(dim=1)
    return per_sample.mean()


class GammaSchedule:
    """γ after e epochs: min(init * factor^floor(e / every), max) (Appendix C).

    The value is a pure function of the epoch (:meth:`at`); the object only remembers how many epochs
    have been stepped so that a resumed run continues where it stopped.

    Examples
    --------
    >>> s = GammaSchedule(init=1e-2, factor=10.0, max=1.0)
    >>> [s.at(e) for e in range(4)]
    [0.01, 0.1, 1.0, 1.0]
    """

    def __init__(self, init: float = 1e-2, factor: float = 1.05, max: float = 1e6, every: int = 1):
        for name, value in (("init", init), ("factor", factor), ("max", max), ("every", every)):
            if not value > 0:
                raise ValueError(f"GammaSchedule: {name} must be positive, got {value!r}")
        self.init, self.factor, self.max, self.every = float(init), float(factor), float(max), int(every)
        self.epoch = 0

    def at(self, epoch: int) -> float:
        exponent = epoch // self.every
        # the power is taken in log space so that huge exponents saturate at max instead of overflowing
        log_value = math.log(self.init) + exponent * math.log(self.factor)
        return self.max if log_value >= math.log(self.max) else min(math.exp(log_value), self.max)

    @property
    def value(self) -> float:
        return self.at(self.epoch)

    def step(self) -> None:
        self.epoch += 1

    def state_dict(self) -> dict:
        return {"init": self.init, "factor": self.factor, "max": self.max, "every": self.every, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.init, self.factor, self.max = float(state["init"]), float(state["factor"]), float(state["max"])
        self.every, self.epoch = int(state["every"]), int(state["epoch"])


def l1_penalty(module: nn.Linear) -> torch.Tensor:
    """Sum of absolute weights of a linear layer (the NONLIN PEN + L1 head's penalty, bias excluded)."""
    return module.weight.abs().sum()
