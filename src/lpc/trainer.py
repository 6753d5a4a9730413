"""One training loop (Appendix C): AdamW, lr halving, the γ schedule, checkpoints and the run files.

It calls :mod:`lpc.evaluation` at every evaluated epoch and after the last, and records what that returns.

The loop knows the objective only through the head: ``head.uses_compression`` adds γ ||z||^2 and
``head.penalty(z)`` adds the L1 term. Everything else about heads is invisible here.
"""
from __future__ import annotations

import math
import platform
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .config import Config
from .data import Dataset, augment, load_data
from .distributed import (SINGLE, Distributed, all_reduce_sum, barrier, broadcast_from_main, device_for, from_env,
                          process_group, resolve_device)
from .evaluation import classifier_pressure, evaluate, evaluation_phases, final_metrics, log_line, predict
from .files import RunFileError, load_torch, read_json, save_torch, write_json, write_jsonl
from .heads import classifier_lr_scale
from .losses import AutoGamma, GammaSchedule, build_gamma_schedule, compression_loss, true_class_probability
from .model import Classifier, build_model

TPT_ACCURACY = 0.999  # onset of the terminal phase of training (Papyan et al. 2020; Appendix C)
ACCURACY_DROP = 0.05  # a fall of training accuracy below its best that the run log reports (issue #10)


class Diverged(RuntimeError):
    """The loss or a metric became NaN/Inf; the message names the epoch, γ and learning rate."""


def make_optimizer(model: Classifier, config: Config) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with two groups: the final classifier (lr × classifier_lr_mult, never decayed) and the rest.

    With ``classifier_lr_scaling: fan_in`` the classifier's lr is also multiplied by
    :func:`~lpc.heads.classifier_lr_scale` (sqrt(backbone width / classifier fan-in)); its decoupled weight decay
    is ``classifier_weight_decay`` when set, else ``weight_decay`` like the rest. The rest is halved
    (``lr_decay_factor``) every ``lr_decay_every`` epochs from ``lr_decay_start`` on; the paper keeps the last
    linear classifier out of that schedule (Appendix C).
    """
    o = config.optim
    classifier_decay = o.weight_decay if o.classifier_weight_decay is None else o.classifier_weight_decay
    mult = o.classifier_lr_mult * (classifier_lr_scale(model.head) if o.classifier_lr_scaling == "fan_in" else 1.0)
    classifier = list(model.head.classifier.parameters())
    ids = {id(p) for p in classifier}
    rest = [p for p in model.parameters() if id(p) not in ids]
    # on CUDA one fused kernel updates every parameter (instead of several launches per tensor)
    fused = {"fused": True} if all(p.is_cuda for p in model.parameters()) else {}
    optimizer = torch.optim.AdamW(
        [{"params": rest, "lr": o.lr},
         {"params": classifier, "lr": o.lr * mult, "weight_decay": classifier_decay}],
        lr=o.lr, weight_decay=o.weight_decay, **fused)

    def decayed(epoch: int) -> float:
        if epoch < o.lr_decay_start:
            return 1.0
        return o.lr_decay_factor ** ((epoch - o.lr_decay_start) // o.lr_decay_every + 1)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [decayed, lambda epoch: 1.0])
    return optimizer, scheduler


@dataclass(frozen=True)
class Runtime:
    """How the training step runs on its device (``config.runtime`` resolved): precision and compilation."""

    device: torch.device
    autocast: torch.dtype | None  # bf16 autocast for the backbone, or None for fp32 throughout
    compile: bool  # torch.compile the training forward pass
    channels_last: bool  # NHWC memory layout for convolutions (faster tensor cores on CUDA)

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast is not None else "fp32"


def resolve_runtime(config: Config, device: torch.device) -> Runtime:
    """``auto`` means bf16 autocast and torch.compile on CUDA (bf16 needs Ampere or newer), plain fp32 on CPU."""
    r = config.runtime
    cuda = device.type == "cuda"
    precision = r.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    compiled = cuda if r.compile == "auto" else bool(r.compile)
    return Runtime(device, torch.bfloat16 if precision == "bf16" else None, compiled, channels_last=cuda)


class TrainForward(nn.Module):
    """The training forward pass of a :class:`Classifier`: backbone under bf16 autocast when asked, head in fp32.

    Only the backbone's convolutions and matrix products run in bf16; BatchNorm keeps fp32 parameters and
    statistics under autocast. The head runs in fp32 because the IB latents shrink to ~1e-4 while their
    within-class spread (Σ_W ~ 1e-12, Table 1) is about 1% of that, close to bf16's 0.4% resolution; the
    cross-entropy and γ||z||^2 (γ up to 1e6) are then computed from fp32 logits and latents.
    """

    def __init__(self, model: Classifier, *, autocast: torch.dtype | None = None, channels_last: bool = False):
        super().__init__()
        self.model, self.autocast, self.channels_last = model, autocast, channels_last

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            h = self.model.forward_features(x)
        return self.model.forward_head(h.float())


def training_module(model: Classifier, runtime: Runtime, where: Distributed = SINGLE) -> nn.Module:
    """What the loop calls for a training step: :class:`TrainForward`, in DDP across ranks, compiled when asked.

    ``model`` keeps owning the parameters: evaluation, checkpoints and metrics use it directly.
    """
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    step: nn.Module = TrainForward(model, autocast=runtime.autocast, channels_last=runtime.channels_last)
    if where.enabled:
        from torch.nn.parallel import DistributedDataParallel

        step = DistributedDataParallel(step, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    if runtime.compile:
        step = torch.compile(step, dynamic=False)  # the last, shorter batch of an epoch compiles a second graph
    return step


def _mix(*values: int) -> int:
    """A 64-bit seed from integers; different tuples give independent streams."""
    entropy = [int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def epoch_generators(seed: int, epoch: int, rank: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """The random streams of one epoch, pure functions of (seed, epoch, rank): the data order, the same on every
    rank, and the augmentation, each rank its own. A resumed run or another rank rebuilds them from nothing.
    (Dropout draws from torch's global generator, which :func:`train_epoch` seeds the same way.)"""
    order, augmentation = torch.Generator(device=device), torch.Generator(device=device)
    order.manual_seed(_mix(seed, epoch))
    augmentation.manual_seed(_mix(seed, epoch, rank, 1))
    return order, augmentation


def evaluated_epochs(epochs: int, log_every: int) -> set[int]:
    return set(range(log_every, epochs + 1, log_every)) | {epochs}


def train(config: Config, out_dir: str | Path | None = None, *, data: Dataset | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Trains one run and returns its summary; with ``out_dir`` writes the run files and resumes from them.

    Files in ``out_dir``: ``config.yaml`` (resolved config), ``history.jsonl`` (one object per evaluated
    epoch), ``checkpoint.pt`` (for resuming; written at every evaluation and at the end of the first epoch
    after ``runtime.checkpoint_seconds``), ``model.pt`` (final state dict), ``latents.npz`` and
    ``summary.json`` (final figures; ``status`` is ``finished`` or ``diverged``).

    Started by ``torchrun`` (``WORLD_SIZE`` > 1), the processes train the run together with
    DistributedDataParallel and only rank 0 evaluates and writes files (see :mod:`lpc.distributed`).
    """
    device = device_for(resolve_device(config.device), from_env())
    with process_group(device) as where:
        return _train(config, out_dir, data=data, progress=progress, device=device, where=where)


def _train(config: Config, out_dir: str | Path | None, *, data: Dataset | None, progress: bool,
           device: torch.device, where: Distributed) -> dict[str, Any]:
    started = time.perf_counter()
    runtime = resolve_runtime(config, device)
    torch.manual_seed(config.seed)
    if data is None:
        data = load_data(config.data)
    data = data.to(device)
    layout = torch.channels_last if runtime.channels_last else torch.preserve_format
    model = build_model(config, data.in_shape, data.num_classes).to(device, memory_format=layout)
    optimizer, scheduler = make_optimizer(model, config)
    reduce = (lambda t: all_reduce_sum(t, where)) if where.enabled else None
    steps = steps_per_epoch(len(data.x_train), config, where)
    gamma = build_gamma_schedule(config.gamma, config.optim.epochs * steps, steps_per_epoch=steps, all_reduce=reduce)
    history: list[dict[str, Any]] = []
    start_epoch, elapsed_before = 0, 0.0

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        finished = _finished_summary(out, config)
        barrier(where)  # every rank has read the folder before rank 0 writes to it
        if finished is not None:
            return finished
        if where.is_main:
            out.mkdir(parents=True, exist_ok=True)
            config.save(out / "config.yaml")
        if (out / "checkpoint.pt").exists():  # every rank restores its optimizer state from rank 0's checkpoint
            state = load_torch(out / "checkpoint.pt", map_location=device)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            _match_layout(optimizer)
            scheduler.load_state_dict(state["scheduler"])
            gamma.load_state_dict(state["gamma"])
            torch.set_rng_state(state["rng"]["torch"].cpu())
            history, start_epoch, elapsed_before = state["history"], state["epoch"], state["wall_seconds"]
    step_model = training_module(model, runtime, where)
    writer = out if where.is_main else None  # the only rank that writes files

    evaluate_at = evaluated_epochs(config.optim.epochs, config.eval.log_every)
    pad_fill = _pad_fill(data, config)
    summary: dict[str, Any] = {}
    bar = _progress(range(start_epoch, config.optim.epochs), config, progress and where.is_main)

    last_saved = time.perf_counter()

    def checkpoint(done: int) -> None:
        nonlocal last_saved
        save_torch(writer / "checkpoint.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "gamma": gamma.state_dict(), "epoch": done,
            "history": history, "wall_seconds": elapsed_before + time.perf_counter() - started,
            "rng": {"torch": torch.get_rng_state()}})
        last_saved = time.perf_counter()

    def checkpoint_due() -> bool:
        """A checkpoint besides the evaluations': on Ctrl-C, or when ``runtime.checkpoint_seconds`` have passed."""
        return interrupted.requested or time.perf_counter() - last_saved >= config.runtime.checkpoint_seconds

    interrupted = _DeferredInterrupt(enabled=where.world_size == 1)
    try:
        for epoch in bar:
            lr_now = optimizer.param_groups[0]["lr"]
            sums = train_epoch(step_model, model, data, optimizer, config, gamma=gamma, pad_fill=pad_fill,
                               epoch=epoch, where=where)
            # γ at the epoch's last step (the paper's schedule has already moved on to the next epoch's value)
            gamma_now = (gamma.at(epoch) if isinstance(gamma, GammaSchedule) else gamma.value) \
                if model.head.uses_compression else 0.0
            scheduler.step()
            done = epoch + 1
            losses = {k: v / sums["batches"] for k, v in sums.items() if k != "batches"}
            if not all(math.isfinite(v) for v in losses.values()):
                raise Diverged(f"loss became {losses['loss_total']} at epoch {done} (gamma={gamma_now:.4g}, "
                               f"lr={lr_now:.4g})")
            if done in evaluate_at:
                verdict = None  # rank 0 evaluates the full splits; the other ranks wait for its verdict
                if where.is_main:
                    try:
                        # the last evaluation is the final one's first phase: accuracies, geometry and entropy
                        last = evaluation_phases(progress and done == config.optim.epochs)
                        with last("accuracies, geometry, entropy", 1) as advance:
                            record = {"epoch": done, "gamma": gamma_now, "lr": lr_now, **losses,
                                      **classifier_pressure(model, gamma_now), **evaluate(model, data, config)}
                            advance(1)
                        _check_finite(record, done, gamma_now, lr_now)
                    except Diverged as error:
                        verdict = ("diverged", str(error))
                    except Exception as error:
                        if not where.enabled:
                            raise
                        # the other ranks are waiting for this verdict: tell them, or they wait out the group's
                        # timeout, then fail here with the original error
                        broadcast_from_main(("failed", f"{type(error).__name__}: {error}"), where)
                        raise
                verdict = broadcast_from_main(verdict, where)
                if verdict is not None:
                    kind, message = verdict
                    if kind == "diverged":
                        raise Diverged(message)
                    raise RuntimeError(f"rank 0 failed while evaluating epoch {done}: {message}")
                # the guard reads rank 0's validation accuracy on every rank, so that all keep one γ
                observed = broadcast_from_main(record["val_accuracy"] if where.is_main else None, where)
                backed_off = isinstance(gamma, AutoGamma) and model.head.uses_compression and \
                    gamma.observe(observed, len(data.y_val))
                if backed_off and where.is_main:
                    log_line(f"lpc: validation accuracy fell to {observed:.4f} at epoch {done}: gamma backed off a "
                             f"decade, to {gamma.value:.4g}, and is capped there", bar)
                if where.is_main:
                    history.append(record)
                    drop = accuracy_drop(history)
                    if drop is not None and drop["epoch"] == done:  # said once: at the evaluation that shows it
                        log_line(f"lpc: training accuracy fell to {drop['train_accuracy']:.4f} at epoch {done}, more than "
                             f"{100 * ACCURACY_DROP:g} points below its best {drop['best_train_accuracy']:.4f} (epoch "
                             f"{drop['best_epoch']}), while gamma rose to {drop['gamma']:.4g}", bar)
                if writer is not None:
                    write_jsonl(writer / "history.jsonl", history)
                    checkpoint(done)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{losses['loss_total']:.3g}", gamma=f"{gamma_now:.3g}",
                                    train=f"{record['train_accuracy']:.3f}", test=f"{record['test_accuracy']:.3f}")
            if writer is not None and done not in evaluate_at and checkpoint_due():
                checkpoint(done)  # data order and dropout are functions of (seed, epoch): any epoch resumes exactly
            if interrupted.requested:
                raise KeyboardInterrupt
        summary = _final_summary(model, data, config, history, device, progress=progress) if where.is_main else {}
        if where.is_main and isinstance(gamma, AutoGamma) and model.head.uses_compression:
            summary["gamma_backoffs"] = int(gamma.backoffs)  # the guard's back-offs (AutoGamma.observe)
        summary["status"], summary["reason"] = "finished", None
    except Diverged as error:
        summary = {"status": "diverged", "reason": str(error), "epochs_completed": len(history)}
    finally:
        interrupted.restore()
        if hasattr(bar, "close"):
            bar.close()
    summary = {**_identity(config, data, model, device), "precision": runtime.precision,
               "compiled": runtime.compile, "world_size": where.world_size, **summary,
               "wall_seconds": elapsed_before + time.perf_counter() - started}
    if writer is not None:
        if summary["status"] == "finished":
            save_torch(writer / "model.pt", model.state_dict())
            if config.eval.save_latents:
                _save_latents(writer / "latents.npz", model, data)
        write_json(writer / "summary.json", summary)
    return summary


class _DeferredInterrupt:
    """Turns the first Ctrl-C into a request honoured at the end of the epoch, after a checkpoint; a second
    Ctrl-C interrupts at once. Only the main thread of a single-process run can install the handler."""

    def __init__(self, enabled: bool):
        self.requested, self._previous = False, None
        if enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def steps_per_epoch(n_train: int, config: Config, where: Distributed = SINGLE) -> int:
    """Optimizer steps in one epoch of :func:`train_epoch` (a last batch too small for BatchNorm is dropped)."""
    full, last = divmod(n_train, config.optim.batch_size)
    return max(1, full + (last >= 2 * where.world_size))


def train_epoch(step_model: nn.Module, model: Classifier, data: Dataset, optimizer: torch.optim.Optimizer,
                config: Config, *, gamma: GammaSchedule | AutoGamma, pad_fill: torch.Tensor | float, epoch: int,
                where: Distributed = SINGLE, max_steps: int | None = None) -> dict[str, float]:
    """One epoch of training (or its first ``max_steps`` steps); returns the mean losses' sums and the step count.

    Every step takes the next ``optim.batch_size`` indices of the epoch's permutation (this rank's shard of
    them under DDP), augments the batch on the device and minimises CE + γ||z||^2 (IB heads) + the head's
    penalty, then lets the γ schedule see the batch. Nothing reads a value back to the host until the epoch
    ends: the losses and the mean true-class probability are summed on the device.
    """
    model.train()
    x, y = data.x_train, data.y_train
    d, b = config.data, config.optim.batch_size
    order_generator, augment_generator = epoch_generators(config.seed, epoch, where.rank, x.device)
    torch.manual_seed(_mix(config.seed, epoch, where.rank, 2))  # dropout: its own masks per rank and epoch
    order = torch.randperm(len(x), device=x.device, generator=order_generator)
    totals = torch.zeros(4, device=x.device, dtype=torch.float64)
    batches = 0
    for start in range(0, len(x), b):
        if max_steps is not None and batches >= max_steps:
            break
        batch = order[start:start + b]
        if len(batch) < 2 * where.world_size and batches > 0:
            break  # BatchNorm cannot train on a single sample (per rank)
        idx = batch[where.rank::where.world_size]
        xb = augment(data.normalize(x[idx]), flip=d.flip, crop_padding=d.crop_padding, pad_fill=pad_fill,
                     noise_std=d.noise_std, generator=augment_generator)
        logits, z = step_model(xb)
        ce = F.cross_entropy(logits.float(), y[idx])
        compress = compression_loss(z, config.gamma.reduction) if model.head.uses_compression else ce.new_zeros(())
        loss = ce + gamma.weight(x.device) * compress + model.head.penalty(z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        gamma.step(logits, y[idx])
        true_class_prob = true_class_probability(logits, y[idx]).mean()
        # accumulated on the device: one host sync per epoch, not per step
        totals += torch.stack([ce.detach(), compress.detach(), loss.detach(), true_class_prob]).double()
        batches += 1
    values = (all_reduce_sum(totals, where) / where.world_size).tolist()  # mean over ranks
    return {"loss_ce": values[0], "loss_compression": values[1], "loss_total": values[2],
            "true_class_prob": values[3], "batches": batches}


def _match_layout(optimizer: torch.optim.Optimizer) -> None:
    """Gives restored optimizer state its parameter's memory layout: a checkpoint written on the CPU (NCHW)
    resumed on CUDA (channels_last) must not pair moments and weights element by element in different orders."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _pad_fill(data: Dataset, config: Config) -> torch.Tensor | float:
    if not data.is_image or config.data.pad_value == "mean":
        return 0.0  # a normalised zero is the mean colour (the authors pad after normalising)
    return ((0.0 - data.mean) / data.std).reshape(-1)  # raw black pixels, as torchvision pads


def accuracy_drop(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first evaluation at which training accuracy lies more than :data:`ACCURACY_DROP` below its best so
    far while γ is higher than it was at that best (the compression outran the classifier), or None."""
    best = None
    for record in history:
        if best is not None and record["train_accuracy"] < best["train_accuracy"] - ACCURACY_DROP \
                and record["gamma"] > best["gamma"]:
            return {"epoch": record["epoch"], "gamma": record["gamma"], "train_accuracy": record["train_accuracy"],
                    "best_epoch": best["epoch"], "best_train_accuracy": best["train_accuracy"]}
        if best is None or record["train_accuracy"] > best["train_accuracy"]:
            best = record
    return None


def _final_summary(model, data, config, history, device, progress: bool = False) -> dict[str, Any]:
    last = history[-1]
    tpt = next((r["epoch"] for r in history if r["train_accuracy"] >= TPT_ACCURACY), None)
    # "lr" and "gamma" in the summary name the run; their values in the last epoch get their own keys
    summary = {k: v for k, v in last.items() if k not in ("epoch", "lr", "gamma")}
    drop = accuracy_drop(history)
    summary.update({"epochs": config.optim.epochs, "tpt_epoch": tpt, "gamma_final": last["gamma"],
                    "lr_final": last["lr"], "gamma_schedule": config.gamma.schedule,
                    "accuracy_drop_epoch": drop and drop["epoch"], "accuracy_drop_gamma": drop and drop["gamma"]})
    summary.update(final_metrics(model, data, config, progress=progress))
    _check_finite(summary, last["epoch"], last["gamma"], last["lr"])
    return summary


def _check_finite(record: dict[str, Any], epoch: int, gamma: float, lr: float) -> None:
    """Raises :class:`Diverged` naming the first float of ``record`` that is NaN or ±Inf."""
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise Diverged(f"{key} became {value} at epoch {epoch} (gamma={gamma:.4g}, lr={lr:.4g})")


def _save_latents(path: Path, model: Classifier, data: Dataset) -> None:
    import io

    from .files import atomic_write_bytes
    arrays = {}
    for split in ("train", "test"):
        logits, z = predict(model, data, split)
        arrays[f"z_{split}"] = z.cpu().numpy()
        arrays[f"y_{split}"] = data.split(split)[1].cpu().numpy()
        arrays[f"pred_{split}"] = logits.argmax(1).cpu().numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _identity(config: Config, data: Dataset, model: Classifier, device: torch.device) -> dict[str, Any]:
    return {"head": config.model.head, "backbone": config.model.backbone, "dataset": data.name,
            "seed": config.seed, "lr": config.optim.lr, "epochs": config.optim.epochs,
            "num_classes": data.num_classes, "in_shape": list(data.in_shape), "latent_dim": model.head.latent_dim,
            "normalization": data.normalization.to_dict(),  # the run folder alone can feed raw inputs
            "device": str(device), "lpc_version": __version__, "torch_version": torch.__version__,
            "python_version": platform.python_version()}


def _finished_summary(out: Path, config: Config) -> dict[str, Any] | None:
    """The existing summary when ``out`` already holds this run, finished; refuses a different run's folder."""
    if not (out / "config.yaml").exists():
        return None
    from .config import load_config
    if load_config(out / "config.yaml").to_dict() != config.to_dict():
        raise RunFileError(f"{out}: holds a run with a different config; choose another output folder")
    if (out / "summary.json").exists():
        summary = read_json(out / "summary.json")
        if summary.get("status") in ("finished", "diverged"):
            return summary
    return None


def _progress(epochs: range, config: Config, enabled: bool):
    if not enabled:
        return epochs
    from tqdm.auto import tqdm
    return tqdm(epochs, total=config.optim.epochs, initial=epochs.start, desc=f"{config.model.head}", unit="epoch",
                dynamic_ncols=True, leave=True)
