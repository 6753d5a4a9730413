"""The training objective's extra terms: the compression loss (Eq. 3), the γ controllers, :class:`IBLoss` and the L1
penalty.

Both γ controllers are :class:`~torch.nn.Module` s with one interface, so a training loop has no branch for
either: before each step it reads :meth:`~AutoGamma.weight` (γ for the loss, on the device), after the
optimizer step it calls ``step(logits, y)`` with the batch's logits and labels; :attr:`~AutoGamma.value` is γ as
a float for logs. Their state (log γ, the step count) is in buffers and their settings in the module's extra
state, so ``.to(device)``, ``state_dict()`` and ``load_state_dict()`` carry both, and a module that holds one
(:class:`IBLoss`, a LightningModule) checkpoints it with everything else.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .heads import Head, l1_penalty  # noqa: F401  (l1_penalty: its former home)


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

    Notes
    -----
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


def _state_dtype(device: torch.device) -> torch.dtype:
    # log γ accumulates up to millions of tiny increments; MPS has no float64, elsewhere it is free
    return torch.float32 if device.type == "mps" else torch.float64


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in the next release; {new}", DeprecationWarning,
                  stacklevel=3)


class _Controller(nn.Module):
    """What both γ controllers share: device moves that keep log γ in float64, extra state, lpc 0.1 checkpoints."""

    def _apply(self, fn, recurse=True):
        # only the device of a move applies: a parent's .half() must not round log γ to 16 bits, and .to(mps)
        # must not fail on float64; the state keeps float64 wherever the target device has it
        target = fn(torch.zeros(0)).device
        for name, buffer in self._buffers.items():
            if buffer is not None:
                dtype = _state_dtype(target) if buffer.is_floating_point() else buffer.dtype
                self._buffers[name] = buffer.to(device=target, dtype=dtype)
        return self

    def _move_to(self, device: torch.device | str | None) -> None:
        if device is None:
            return
        device, here = torch.device(device), self.num_steps.device
        if device.type != here.type or (device.index is not None and device.index != here.index):
            self.to(device)

    def _settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_extra_state(self) -> dict[str, Any]:
        return self._settings()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _upgrade(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """An lpc 0.1 checkpoint's flat dict of plain numbers in today's ``state_dict`` form."""
        raise NotImplementedError

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Loads a ``state_dict()`` of this class, or the flat dict of plain numbers that lpc 0.1 checkpoints hold."""
        if "_extra_state" not in state_dict and "max" in state_dict:
            state_dict = self._upgrade(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._settings().items())


class GammaSchedule(_Controller):
    """The paper's γ (Appendix C): after e epochs, min(init * factor^floor(e / every), max).

    A per-step controller like :class:`AutoGamma`: call ``step(logits, y)`` after every training step; the
    epoch is ``steps // steps_per_epoch``, so pass ``steps_per_epoch`` (the loop's batches per epoch) or every
    step counts as an epoch. The value is a pure function of the epoch (:meth:`at`); the step count is the
    whole state, kept so that a resumed run continues where it stopped. The batch is ignored, but its
    presence is what marks a per-step call (below).

    Parameters
    ----------
    init : float
        γ in the first epoch (the paper: 1e-2).
    factor : float
        γ is multiplied by this every ``every`` epochs (the paper's γ_step: 1.05 on CIFAR, 1.03 on SVHN).
    max : float
        γ's cap (γ_max).
    every : int
        Epochs between multiplications.
    steps_per_epoch : int
        Training steps (optimizer steps) per epoch.

    Notes
    -----
    lpc 0.1 called ``update(logits, y)`` after every step (a no-op here) and ``step()`` without arguments
    after every epoch. Both still work for one release, with a DeprecationWarning: ``update`` still does
    nothing, and ``step()`` *without a batch* still advances one whole epoch (to the first step of the next
    one). The two calls cannot be confused: ``step(logits, y)`` is always one training step, ``step()`` always
    the lpc 0.1 end of an epoch.

    Examples
    --------
    >>> s = GammaSchedule(init=1e-2, factor=10.0, max=1.0, steps_per_epoch=2)
    >>> [round(s.at(e), 12) for e in range(4)]
    [0.01, 0.1, 1.0, 1.0]
    >>> logits, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    >>> for _ in range(3):
    ...     s.step(logits, y)
    >>> s.epoch, round(s.value, 12)   # 3 steps of 2 per epoch: in the second epoch
    (1, 0.1)
    """

    def __init__(self, init: float = 1e-2, factor: float = 1.05, max: float = 1e6, every: int = 1,
                 steps_per_epoch: int = 1):
        super().__init__()
        self.set_extra_state({"init": init, "factor": factor, "max": max, "every": every,
                              "steps_per_epoch": steps_per_epoch})
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))
        self._steps = 0  # a host copy of num_steps: reading γ must not wait for the device

    def _settings(self) -> dict[str, Any]:
        return {"init": self.init, "factor": self.factor, "max": self.max, "every": self.every,
                "steps_per_epoch": self.steps_per_epoch}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for name in ("init", "factor", "max", "every", "steps_per_epoch"):
            if not state[name] > 0:
                raise ValueError(f"GammaSchedule: {name} must be positive, got {state[name]!r}")
        self.init, self.factor, self.max = float(state["init"]), float(state["factor"]), float(state["max"])
        self.every, self.steps_per_epoch = int(state["every"]), int(state["steps_per_epoch"])

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._steps = int(self.num_steps)

    def _upgrade(self, state: Mapping[str, Any]) -> dict[str, Any]:
        # lpc 0.1 counted epochs; the steps per epoch are this schedule's (the loop that resumes knows them)
        settings = {k: state[k] for k in ("init", "factor", "max", "every")}
        settings["steps_per_epoch"] = self.steps_per_epoch
        steps = int(state["epoch"]) * self.steps_per_epoch
        return {"num_steps": torch.tensor(steps, dtype=torch.int64), "_extra_state": settings}

    def at(self, epoch: int) -> float:
        """γ during epoch ``epoch`` (0-based)."""
        exponent = epoch // self.every
        # the power is taken in log space so that huge exponents saturate at max instead of overflowing
        log_value = math.log(self.init) + exponent * math.log(self.factor)
        return self.max if log_value >= math.log(self.max) else min(math.exp(log_value), self.max)

    @property
    def epoch(self) -> int:
        return self._steps // self.steps_per_epoch

    @property
    def value(self) -> float:
        """γ for the next training step."""
        return self.at(self.epoch)

    def weight(self, device: torch.device | str | None = None) -> float:
        """γ for the loss (a Python float: nothing to move, nothing to read back)."""
        return self.value

    def step(self, logits: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """One training step, after the optimizer's; without a batch, lpc 0.1's end of an epoch (deprecated)."""
        if logits is None:
            _deprecated("GammaSchedule.step() without a batch (lpc 0.1's per-epoch call)",
                        "construct it with steps_per_epoch and call step(logits, y) after every training step")
            self._steps = (self.epoch + 1) * self.steps_per_epoch
        else:
            self._steps += 1
        with torch.no_grad():
            self.num_steps.fill_(self._steps)

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """lpc 0.1's per-step call: still nothing (the deprecated per-epoch ``step()`` advances the epochs)."""
        _deprecated("GammaSchedule.update(logits, y)",
                    "call step(logits, y) after every step, with steps_per_epoch set, and no per-epoch step()")


class AutoGamma(_Controller):
    """A budget-aware, accuracy-safe γ: integral feedback on the training batches' true-class probability.

    After every step, ``log γ += rate · tanh((q − target) / width)``, where q is the batch mean of the softmax
    probability of the true class, and log γ is kept within [log floor, log max]. γ rises while the classifier
    keeps its training batches at the target confidence and backs off as soon as they fall below it: the
    compression can never outrun the classifier (in the spirit of GECO, Rezende & Viola 2018). A gate on the
    batch's argmax accuracy comes first: below ``accuracy`` the error is ``(a − accuracy) / width`` instead,
    so γ backs off until the batches are fitted whatever their mean confidence (0 switches the gate off).

    Parameters
    ----------
    total_steps : int
        The run's number of training steps: the top speed is a fraction of the run.
    floor : float
        γ's lower bound and starting value.
    max : float
        γ's upper bound (a cap only: it does not change the speed).
    speed : float
        How many decades γ can climb over the whole run at full speed:
        ``rate = speed · ln(10) / total_steps`` per step.
    target : float
        Set point for the training batches' mean true-class probability, in (0, 1).
    width : float
        Deviation from the set point (in probability) at which γ moves at tanh(1) ≈ 3/4 of full speed.
    accuracy : float
        γ rises only while the batch's argmax accuracy is at least this; 0 switches the gate off.
    guard : float
        How far validation accuracy may fall below its best, in standard errors, before :meth:`observe` backs
        γ off by a decade for good; 0 switches the guard off. Only :meth:`observe` reads it: a loop that never
        calls it has no guard.
    all_reduce : callable, optional
        An in-place sum over processes, applied to the batch statistics so that every rank sees the global
        batch and keeps the same γ. ``None``: ``torch.distributed.all_reduce`` when a process group of more than
        one process is initialised, else nothing. Pass ``lambda t: None`` for a γ per process.

    Notes
    -----
    Why this controls the right thing: under (W, z) → (cW, z/c) the logits are unchanged while γ||z||² falls
    by c², so what presses the latents is γ relative to the classifier's scale, γ/r² (r: the norm of its rows).
    At the balance of Eq. 16, 2γ||z|| ≈ (1 − q) r, so the confidence q of the training batches reads off
    that pressure whatever the absolute scale. Holding q at ``target`` holds the pressure at the largest
    value the classifier can sustain; γ itself then climbs exactly as fast as r² grows.

    The set point chooses the regime. Its default, 0.9, is the one chosen on validation data: on seven datasets
    at two budgets (six seeds each) it kept more validation accuracy than 0.3 in 12 of 14 cells, up to 0.9
    points on 100 classes (docs/gamma.md, *The defaults re-checked on validation*). Its latents collapse to one
    point per class but stay at class-specific values on each node (binarity σ̄ 0.2-0.35). ``target=0.3`` is the
    paper's high-pressure band (pressure ~0.3, argmax training accuracy still 100%), where the latents of each
    IB node settle on two values once the classifier's rows are sign vectors (σ̄ 0.09 on the embedded digits,
    which ``make demo`` runs); it costs accuracy where classes overlap or are many (docs/gamma.md, *The
    paper's regime*). Pair either with a classifier weight decay of 0.1 (AdamW's decoupled decay settles the
    classifier's weights at ±1/decay). The accuracy gate, 0.99 (about one error in a batch of 128), keeps a low
    set point from pressing data the network has not fitted yet: on noisy signals in 38-epoch runs the 0.3 set
    point cost 5.9 points against no_pen without it and 1.2 with it (the set point 0.9: 1.8). With 100 classes
    in an 8-wide layer it did not help (-13 either way); a width that follows the classes did (``widths: auto``).

    The budget enters through ``speed``: at full speed γ climbs ``speed`` decades over the run, whatever the
    number of steps per epoch. The default, 14, climbs from the floor 0.1 to 1e6 in the first half of the run
    (lpc 0.1's ``ramp=0.5``, which tied the speed to ``max``: ``speed = log10(max / floor) / ramp``).

    The floor is the only compression before the training batches reach the set point, which in a short run
    is all of it. Its default, 0.1, is ten times the paper's starting γ: 1e-2 left the latents of 12-epoch runs
    uncollapsed (NC1 0.35-0.51 x no_pen's on digit sets) and 0.3 cost more accuracy where the latent space is
    crowded (docs/gamma.md, *How the defaults were chosen*). Pair it with a classifier lr scaled by
    :func:`lpc.heads.classifier_lr_scale`.

    The guard is the one place validation data enters. On data whose classes overlap, collapsing every class to
    a point costs accuracy at any γ that collapses (docs/gamma.md, *The cause: class overlap*); where the cost
    shows as a fall of validation accuracy, the guard caps γ one decade below where it was, and again at every
    further fall. Measured at the set point 0.3: on overlapping Gaussian clusters (no_pen 75%) IB went from 49%
    to 70.5% (lin_pen 72.8%), on 100 digit pairs at 150 epochs from 1.1 points below lin_pen to 0.5 on
    validation; on the embedded digits it fired in one of ``make demo``'s ten compressing runs, never in an ib
    run. A statistically significant fall is the trigger because the validation split is small: 1,000 images
    give a standard error of ~1 point at 85% accuracy.

    The state (log γ in float64, float32 on MPS, and the step count) lives in buffers on the device, so a step
    reads nothing back to the host. lpc 0.1's names still work for one release with a DeprecationWarning:
    ``init=`` (the floor), ``ramp=`` (converted to ``speed``), ``update(logits, y)`` (``step``); a ``step()``
    without a batch, lpc 0.1's end-of-epoch call, does nothing as it did.

    Examples
    --------
    >>> s = AutoGamma(total_steps=100, floor=1e-2, max=1e2, speed=8.0, target=0.9)
    >>> logits, y = torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 1])   # q = 0.982 > 0.9
    >>> for _ in range(100):
    ...     s.step(logits, y)
    >>> round(s.value, 1)   # up to 8 decades per run, and the 4 from floor to max took 54 steps: capped
    100.0
    """

    def __init__(self, total_steps: int, *, floor: float = 0.1, max: float = 1e6, speed: float = 14.0,
                 target: float = 0.9, width: float = 0.05, accuracy: float = 0.99, guard: float = 2.0,
                 all_reduce: Callable[[torch.Tensor], Any] | None = None,
                 init: float | None = None, ramp: float | None = None):
        super().__init__()
        if init is not None:
            if floor != 0.1:
                raise TypeError("AutoGamma: pass floor only (init is its deprecated name)")
            _deprecated("AutoGamma(init=...)", "it is called floor now")
            floor = init
        if ramp is not None:
            if speed != 14.0:
                raise TypeError("AutoGamma: pass speed only (ramp is deprecated)")
            _deprecated("AutoGamma(ramp=...)", "pass speed = log10(max / floor) / ramp, the decades γ can climb per run")
            if not (ramp > 0 and floor > 0 and max >= floor):
                raise ValueError(f"AutoGamma: ramp must be positive and max >= floor > 0, got ramp={ramp!r}, "
                                 f"floor={floor!r}, max={max!r}")
            speed = math.log10(max / floor) / ramp
        self.set_extra_state({"total_steps": total_steps, "floor": floor, "max": max, "speed": speed,
                              "target": target, "width": width, "accuracy": accuracy, "guard": guard})
        self.all_reduce = all_reduce
        self.register_buffer("log_gamma", torch.tensor(math.log(self.floor), dtype=torch.float64))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))
        for name, value in self._guard_state().items():
            self.register_buffer(name, value)

    def _guard_state(self) -> dict[str, torch.Tensor]:
        """The guard's buffers before any back-off: log γ's bounds, the best validation accuracy, the count."""
        return {"log_low": torch.tensor(math.log(self.floor), dtype=torch.float64),
                "log_cap": torch.tensor(math.log(self.max), dtype=torch.float64),
                "best_val": torch.tensor(-1.0, dtype=torch.float64), "backoffs": torch.zeros((), dtype=torch.int64)}

    def _settings(self) -> dict[str, Any]:
        return {"total_steps": self.total_steps, "floor": self.floor, "max": self.max, "speed": self.speed,
                "target": self.target, "width": self.width, "accuracy": self.accuracy, "guard": self.guard}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        state = {"guard": 0.0, **state}  # checkpoints from before the guard resume without one, as they ran
        for name in ("total_steps", "floor", "max", "speed", "width"):
            if not state[name] > 0:
                raise ValueError(f"AutoGamma: {name} must be positive, got {state[name]!r}")
        if not 0 < state["target"] < 1:
            raise ValueError(f"AutoGamma: target must be in (0, 1), got {state['target']!r}")
        if not 0 <= state["accuracy"] <= 1:
            raise ValueError(f"AutoGamma: accuracy must be in [0, 1], got {state['accuracy']!r}")
        if not (math.isfinite(state["guard"]) and state["guard"] >= 0):
            raise ValueError(f"AutoGamma: guard must be >= 0, got {state['guard']!r}")
        if state["max"] < state["floor"]:
            raise ValueError(f"AutoGamma: max ({state['max']!r}) is below floor ({state['floor']!r})")
        self.total_steps, self.floor, self.max = int(state["total_steps"]), float(state["floor"]), float(state["max"])
        self.speed, self.target, self.width = float(state["speed"]), float(state["target"]), float(state["width"])
        self.accuracy, self.guard = float(state["accuracy"]), float(state["guard"])
        # at the defaults this is bit for bit lpc 0.1's log(max / init) / (ramp · total_steps): 14 ln 10 = 2 ln 1e7
        self.rate = self.speed * math.log(10) / self.total_steps

    def _upgrade(self, state: Mapping[str, Any]) -> dict[str, Any]:
        floor, top = float(state["init"]), float(state["max"])
        settings = {"total_steps": state["total_steps"], "floor": floor, "max": top,
                    "speed": math.log10(top / floor) / float(state["ramp"]), "target": state["target"],
                    "width": state["width"],
                    "accuracy": state.get("accuracy", 0.0)}  # lpc 0.1's first checkpoints had no accuracy gate
        # the step count is not in those checkpoints; nothing reads it back
        return {"log_gamma": torch.tensor(float(state["log_gamma"]), dtype=torch.float64),
                "num_steps": torch.zeros((), dtype=torch.int64), "_extra_state": settings}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Loads a ``state_dict()``, lpc 0.1's flat dict, or a state from before the guard (resumed without one)."""
        if "_extra_state" not in state_dict and "max" in state_dict:
            state_dict = self._upgrade(state_dict)
        if "log_cap" not in state_dict:
            settings = state_dict["_extra_state"]
            fresh = {"log_low": math.log(settings["floor"]), "log_cap": math.log(settings["max"])}
            state_dict = {**{k: v.clone() for k, v in self._guard_state().items()}, **state_dict,
                          **{k: torch.tensor(v, dtype=torch.float64) for k, v in fresh.items()}}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def init(self) -> float:
        _deprecated("AutoGamma.init", "it is called floor now")
        return self.floor

    @property
    def ramp(self) -> float:
        _deprecated("AutoGamma.ramp", "use speed, the decades γ can climb per run")
        return math.log10(self.max / self.floor) / self.speed

    @property
    def value(self) -> float:
        """γ for the next training step (a read from the device)."""
        return math.exp(self.log_gamma.item())

    def weight(self, device: torch.device | str | None = None) -> torch.Tensor:
        """γ as a float32 tensor on ``device`` (the controller moves there first), for the loss, without a host read."""
        self._move_to(device)
        return self.log_gamma.exp().float()

    def _reduce(self, stats: torch.Tensor) -> None:
        if self.all_reduce is not None:
            self.all_reduce(stats)
        elif torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(stats)  # SUM

    def step(self, logits: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """One controller step from a training batch's (undropped, unscaled) logits and labels.

        Without a batch it is lpc 0.1's end-of-epoch call, which did nothing and still does (deprecated).
        """
        if logits is None:
            _deprecated("AutoGamma.step() without a batch (lpc 0.1's per-epoch call, a no-op)",
                        "call step(logits, y) after every training step and nothing per epoch")
            return
        with torch.no_grad():
            self._step(logits, y)

    def _step(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self._move_to(logits.device)
        dtype = self.log_gamma.dtype
        q = true_class_probability(logits, y)
        correct = (logits.detach().argmax(1) == y).sum()
        stats = torch.stack([q.sum().to(dtype), correct.to(dtype), q.new_tensor(float(len(q)), dtype=dtype)])
        self._reduce(stats)
        confidence, accuracy = stats[0] / stats[2], stats[1] / stats[2]
        # below the accuracy gate the batches are not yet fitted: back off, whatever their mean confidence
        # (with many classes, or noisy data, a mean of 0.3 does not mean the argmax is right)
        error = torch.where(accuracy >= self.accuracy, confidence - self.target, accuracy - self.accuracy) / self.width
        log_gamma = self.log_gamma + self.rate * torch.tanh(error)
        self.log_gamma.copy_(log_gamma.clamp(self.log_low, self.log_cap))
        self.num_steps += 1

    def observe(self, val_accuracy: float, n: int) -> bool:
        """The guard: call it after each validation pass with the accuracy on ``n`` examples; returns whether γ
        backed off.

        When the accuracy falls more than ``guard`` standard errors below the best seen so far (the binomial
        standard error at the best, with at least one example's worth of variance), γ and its cap drop one
        decade (the floor too, where γ goes below it) and the fall becomes the new reference, so the next
        fall backs off another decade. Every rank must observe the same value (the trainer broadcasts rank 0's).
        """
        if self.guard <= 0 or n <= 0:
            return False
        best = float(self.best_val)
        if val_accuracy > best:
            self.best_val.fill_(val_accuracy)
            return False
        standard_error = math.sqrt(max(best * (1 - best), 1 / n) / n)
        if val_accuracy >= best - self.guard * standard_error:
            return False
        with torch.no_grad():
            lower = self.log_gamma - math.log(10)
            self.log_cap.copy_(lower)
            self.log_low.copy_(torch.minimum(self.log_low, lower))
            self.log_gamma.copy_(lower)
            self.best_val.fill_(val_accuracy)
            self.backoffs += 1
        return True

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """lpc 0.1's name for :meth:`step` (deprecated)."""
        _deprecated("AutoGamma.update(logits, y)", "call step(logits, y)")
        self.step(logits, y)


class IBLoss(nn.Module):
    """The IB objective as a criterion: ``CE + γ · compression_loss(z)`` (Eq. 3), γ constant or steered per step.

    ``loss = criterion(logits, z, y)``, with ``z`` the IB layer's latents (``lpc.latents(model)`` after the
    forward pass of a model that :func:`lpc.attach` changed). With a controller (:class:`AutoGamma`,
    :class:`GammaSchedule`), the criterion owns it as a submodule (``criterion.controller``: its state moves
    with ``.to(device)`` and is in ``criterion.state_dict()``) and steps it after computing each loss, as long
    as the criterion is in training mode and gradients are on: ``criterion.eval()``, or ``torch.no_grad()``,
    for validation losses. A LightningModule that holds the criterion switches it with itself.

    Parameters
    ----------
    gamma : float or AutoGamma or GammaSchedule
        Required: γ's right value depends on the run's length (a controller needs ``total_steps``), on the
        classifier's scale (what presses the latents is γ/r²) and on ``reduction``, so no default fits a model
        this criterion has not seen. ``lpc.AutoGamma(total_steps)`` is the choice that adapts to all three.
        A float is a constant γ (0: plain cross-entropy).
    reduction : {"sum", "mean"}
        The compression term's reduction (:func:`compression_loss`).
    head : lpc Head or nn.Module, optional
        The head (or a model holding exactly one, e.g. one that ``lpc.attach`` changed) whose extra terms the
        loss adds: its own penalty (``nonlin_pen_l1``'s L1), and the γ term only if the head uses compression.
        ``None``: the γ term always, no penalty.

    Examples
    --------
    >>> criterion = IBLoss(gamma=2.0)
    >>> logits, z, y = torch.zeros(2, 3), torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.tensor([0, 1])
    >>> round(criterion(logits, z, y).item(), 4)   # ln 3 + 2 · (25 + 0) / 2
    26.0986
    >>> criterion.gamma
    2.0
    """

    def __init__(self, gamma: float | AutoGamma | GammaSchedule, *, reduction: str = "sum",
                 head: nn.Module | None = None):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"IBLoss: reduction must be 'sum' or 'mean', got {reduction!r}")
        if isinstance(gamma, _Controller):
            self.controller, self.constant = gamma, None
        elif isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
            if not (math.isfinite(gamma) and gamma >= 0):
                raise ValueError(f"IBLoss: a constant gamma must be finite and >= 0, got {gamma!r}")
            self.controller, self.constant = None, float(gamma)
        else:
            raise TypeError(f"IBLoss: gamma must be a float, lpc.AutoGamma or lpc.GammaSchedule, got {gamma!r}")
        self.reduction = reduction
        # held outside the module tree: the head's parameters belong to the model, not to the criterion
        self.__dict__["_head"] = None if head is None else _find_head(head)

    @property
    def head(self):
        return self._head

    @property
    def gamma(self) -> float:
        """γ for the next training step, as a float."""
        return self.constant if self.controller is None else self.controller.value

    def forward(self, logits: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), y)
        if self._head is None or self._head.uses_compression:
            gamma = self.constant if self.controller is None else self.controller.weight(logits.device)
            loss = loss + gamma * compression_loss(z, self.reduction)
        if self._head is not None:
            loss = loss + self._head.penalty(z)
        if self.controller is not None and self.training and torch.is_grad_enabled():
            # γ for this loss is read above; the batch's logits move it for the next step
            self.controller.step(logits, y)
        return loss

    def extra_repr(self) -> str:
        return f"gamma={self.constant!r}, reduction={self.reduction!r}" if self.controller is None \
            else f"reduction={self.reduction!r}"


def _find_head(module: nn.Module):
    if isinstance(module, Head):
        return module
    heads = [m for m in module.modules()] if isinstance(module, nn.Module) else []
    heads = [m for m in heads if isinstance(m, Head)]
    if len(heads) != 1:
        what = "none" if not heads else f"{len(heads)}"
        raise ValueError(f"IBLoss: head must be an lpc Head or a model holding exactly one (lpc.attach puts one in); "
                         f"found {what} in {type(module).__name__}")
    return heads[0]


def build_gamma_schedule(config, total_steps: int, *, steps_per_epoch: int = 1,
                         all_reduce: Callable[[torch.Tensor], Any] | None = None) -> GammaSchedule | AutoGamma:
    """The controller that ``config`` (a :class:`~lpc.config.GammaConfig`) names, for a run of ``total_steps``
    training steps of which ``steps_per_epoch`` make an epoch (the paper's schedule counts epochs)."""
    if config.schedule == "auto":
        return AutoGamma(total_steps, floor=config.floor, max=config.max, speed=config.speed, target=config.target,
                         width=config.width, accuracy=config.accuracy, guard=config.guard, all_reduce=all_reduce)
    return GammaSchedule(config.init, config.factor, config.max, config.every, steps_per_epoch=steps_per_epoch)
