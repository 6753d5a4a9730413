"""The training objective's extra terms: the compression loss (Eq. 3), the γ schedules and the L1 penalty.

Both γ schedules share one small interface, so the training loop has no branch for either: before each
step it reads :meth:`weight` (γ for the loss, on the device), after it calls :meth:`update` with the batch's
logits and labels, after each epoch :meth:`step`; :attr:`value` is γ as a float for logs, and
:meth:`state_dict` is the whole state a checkpoint needs.
"""
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


@torch.no_grad()
def true_class_probability(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[i, y_i] per sample, in float32 (the confidence :class:`AutoGamma` steers by)."""
    return logits.detach().float().softmax(dim=1).gather(1, y[:, None]).squeeze(1)


class GammaSchedule:
    """γ after e epochs: min(init * factor^floor(e / every), max) (Appendix C).

    The value is a pure function of the epoch (:meth:`at`); the object only remembers how many epochs
    have been stepped so that a resumed run continues where it stopped.

    Examples
    --------
    >>> s = GammaSchedule(init=1e-2, factor=10.0, max=1.0)
    >>> [round(s.at(e), 12) for e in range(4)]
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

    def weight(self, device: torch.device | None = None) -> float:
        return self.value

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """A pure function of the epoch ignores the batches."""

    def state_dict(self) -> dict:
        return {"init": self.init, "factor": self.factor, "max": self.max, "every": self.every, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.init, self.factor, self.max = float(state["init"]), float(state["factor"]), float(state["max"])
        self.every, self.epoch = int(state["every"]), int(state["epoch"])


class AutoGamma:
    """A budget-aware, accuracy-safe γ: integral feedback on the training batches' true-class probability.

    After every step, ``log γ += rate · tanh((q − target) / width)``, where q is the batch mean of the softmax
    probability of the true class, and log γ is kept within [log init, log max]. γ rises while the classifier
    keeps its training batches at the target confidence and backs off as soon as they fall below it: the
    compression can never outrun the classifier (in the spirit of GECO, Rezende & Viola 2018). A gate on the
    batch's argmax accuracy comes first: below ``accuracy`` the error is ``(a − accuracy) / width`` instead,
    so γ backs off until the batches are fitted whatever their mean confidence (0 switches the gate off).

    Why this controls the right thing: under (W, z) → (cW, z/c) the logits are unchanged while γ||z||² falls
    by c², so what presses the latents is γ relative to the classifier's scale, γ/r² (r: the norm of its rows).
    At the balance of Eq. 16, 2γ||z|| ≈ (1 − q) r, so the confidence q of the training batches reads off
    that pressure whatever the absolute scale. Holding q at ``target`` holds the pressure at the largest
    value the classifier can sustain; γ itself then climbs exactly as fast as r² grows.

    The set point chooses the regime. Its default, 0.3, is the paper's high-pressure band (pressure ~0.3,
    argmax training accuracy still 100%), where the latents of each IB node settle on two values once the
    classifier's rows are sign vectors; at 0.9 they collapse to one point per class but stay at class-specific
    values (binarity σ̄ 0.22-0.35). Held-out digit sets kept no_pen's accuracy at both (README, *The paper's
    regime*). Pair it with a classifier weight decay of 0.1 (AdamW's decoupled decay settles the classifier's
    weights at ±1/decay). The accuracy gate, 0.99 (about one error in a batch of 128), keeps that low set point
    from pressing data the network has not fitted yet: on noisy signals in 38-epoch runs the 0.3 set point cost
    5.9 points against no_pen without it and 1.2 with it (the set point 0.9: 1.8). With 100 classes in an
    8-wide layer it did not help (-13 either way); a width that follows the classes did (``widths: auto``).

    The budget enters through ``rate = log(max / init) / (ramp · total_steps)``: at full speed γ climbs from
    ``init`` to ``max`` in the first ``ramp`` of the run, whatever the number of steps per epoch.

    ``init`` is also γ's floor, the only compression before the training batches reach the set point, which
    in a short run is all of it. Its default, 0.1, is ten times the paper's starting γ: 1e-2 left the latents
    of 12-epoch runs uncollapsed (NC1 0.35-0.51 x no_pen's on digit sets) and 0.3 cost more accuracy where
    the latent space is crowded (README, *Choosing γ*). Pair it with a classifier lr scaled by
    :func:`lpc.heads.classifier_lr_scale`.

    The state lives on the device (no host read per step) and is a small dict for checkpoints. Under DDP,
    pass ``all_reduce`` (an in-place sum over processes) so every rank sees the global batch and keeps the
    same γ.

    Examples
    --------
    >>> s = AutoGamma(total_steps=100, init=1e-2, max=1e2, target=0.9)
    >>> logits, y = torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 1])   # q = 0.982 > 0.9
    >>> for _ in range(100):
    ...     s.update(logits, y)
    >>> round(s.value, 1)   # full speed for half the run: γ reached max
    100.0
    """

    def __init__(self, total_steps: int, *, init: float = 0.1, max: float = 1e6, target: float = 0.3,
                 width: float = 0.05, ramp: float = 0.5, accuracy: float = 0.99, all_reduce=None):
        for name, value in (("total_steps", total_steps), ("init", init), ("max", max), ("width", width),
                            ("ramp", ramp)):
            if not value > 0:
                raise ValueError(f"AutoGamma: {name} must be positive, got {value!r}")
        if not 0 < target < 1:
            raise ValueError(f"AutoGamma: target must be in (0, 1), got {target!r}")
        if not 0 <= accuracy <= 1:
            raise ValueError(f"AutoGamma: accuracy must be in [0, 1], got {accuracy!r}")
        if max < init:
            raise ValueError(f"AutoGamma: max ({max!r}) is below init ({init!r})")
        self.total_steps, self.init, self.max = int(total_steps), float(init), float(max)
        self.target, self.width, self.ramp = float(target), float(width), float(ramp)
        self.accuracy = float(accuracy)
        self.rate = math.log(self.max / self.init) / (self.ramp * self.total_steps)
        self.all_reduce = all_reduce
        self._log_gamma = torch.tensor(math.log(self.init), dtype=torch.float64)

    @property
    def value(self) -> float:
        return math.exp(self._log_gamma.item())

    def weight(self, device: torch.device | None = None) -> torch.Tensor:
        """γ as a float32 tensor on ``device``, for the loss, without a host read."""
        if device is not None and self._log_gamma.device != device:
            self._log_gamma = self._log_gamma.to(device)
        return self._log_gamma.exp().float()

    @torch.no_grad()
    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """One controller step from a training batch's (undropped, unscaled) logits and labels."""
        q = true_class_probability(logits, y)
        correct = (logits.detach().argmax(1) == y).sum()
        stats = torch.stack([q.sum().double(), correct.double(), q.new_tensor(float(len(q)), dtype=torch.float64)])
        if self.all_reduce is not None:
            self.all_reduce(stats)
        confidence, accuracy = stats[0] / stats[2], stats[1] / stats[2]
        # below the accuracy gate the batches are not yet fitted: back off, whatever their mean confidence
        # (with many classes, or noisy data, a mean of 0.3 does not mean the argmax is right)
        error = torch.where(accuracy >= self.accuracy, confidence - self.target, accuracy - self.accuracy) / self.width
        log_gamma = self._log_gamma.to(stats.device) + self.rate * torch.tanh(error)
        self._log_gamma = log_gamma.clamp(math.log(self.init), math.log(self.max))

    def step(self) -> None:
        """The controller acts per step; nothing happens at the end of an epoch."""

    def state_dict(self) -> dict:
        return {"total_steps": self.total_steps, "init": self.init, "max": self.max, "target": self.target,
                "width": self.width, "ramp": self.ramp, "accuracy": self.accuracy, "log_gamma": self._log_gamma.item()}

    def load_state_dict(self, state: dict) -> None:
        self.total_steps, self.init, self.max = int(state["total_steps"]), float(state["init"]), float(state["max"])
        self.target, self.width, self.ramp = float(state["target"]), float(state["width"]), float(state["ramp"])
        self.accuracy = float(state.get("accuracy", 0.0))  # checkpoints of lpc 0.1 had no accuracy gate
        self.rate = math.log(self.max / self.init) / (self.ramp * self.total_steps)
        device = self._log_gamma.device
        self._log_gamma = torch.tensor(float(state["log_gamma"]), dtype=torch.float64, device=device)


def l1_penalty(module: nn.Linear) -> torch.Tensor:
    """Sum of absolute weights of a linear layer (the NONLIN PEN + L1 head's penalty, bias excluded)."""
    return module.weight.abs().sum()


def build_gamma_schedule(config, total_steps: int, *, all_reduce=None) -> GammaSchedule | AutoGamma:
    """The schedule that ``config`` (a :class:`~lpc.config.GammaConfig`) names, for a run of ``total_steps``."""
    if config.schedule == "auto":
        return AutoGamma(total_steps, init=config.init, max=config.max, target=config.target, width=config.width,
                         ramp=config.ramp, accuracy=config.accuracy, all_reduce=all_reduce)
    return GammaSchedule(config.init, config.factor, config.max, config.every)
