"""Training throughput: lpc's device-resident loop against a reference pipeline written the way the authors' code trains.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--threads N] [--cases mlp,resnet18] [--quick]
    python benchmarks/train_throughput.py --device cuda --gpu-check     # what benchmarks/gpu_check.sh runs

Ours is ``lpc.trainer.train_epoch``, the loop ``lpc train`` runs: uint8 images on the device, a device permutation
per epoch, flip / padded crop / noise on whole batches, bf16 autocast, channels_last, fused AdamW and
torch.compile on CUDA (``runtime: auto``), fp32 on the CPU.

The reference mirrors the authors' trainer (luigisbailo/latent_point_collapse, ``lpc_ib/trainer.py`` and
``scripts/main.py``): a torchvision-style Dataset of PIL images with the per-sample transform
``Compose([ToTensor(), Normalize(mean, std), RandomHorizontalFlip(), RandomCrop(size, padding), AddGaussianNoise(0.01)])``
(flip and crop as the case's config says), ``DataLoader(batch_size, shuffle=True)`` with the default
``num_workers=0``, batches copied to the device, fp32, no compile, ``torch.optim.AdamW`` with its defaults
and the same two parameter groups, and the IB loss as ``mse_loss(z, zeros)``. Same model, batch size,
learning rate and weight decay. Neither side reads the loss back per step.

Cases: ``mlp`` is configs/mnist.yaml's model (MLP 256-256 + IB head of 8) on the embedded MNIST digits;
``resnet18`` is configs/cifar10.yaml's model on random CIFAR-shaped uint8 images (3x32x32). Every figure is
images per second of training steps, after warm-up steps; each case ends with a line ``speedup (case): Nx``
and the run with ``speedup: Nx``, the geometric mean over the cases.

``--gpu-check`` runs the checks a lent GPU should answer in under five minutes: bf16 precision of
γ||z||^2, host syncs per step, the epoch time of ResNet-18 on 50,000 CIFAR-shaped images (eager, then
compiled), the reference's speed on the same data, and ResNet-50's epoch time.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lpc.config import apply_overrides, load_config
from lpc.data import Dataset, from_arrays, load_data
from lpc.losses import GammaSchedule, compression_loss
from machine import machine_line

from lpc.model import build_model
from lpc.trainer import _pad_fill, make_optimizer, resolve_runtime, steps_per_epoch, train_epoch, training_module

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- ours: lpc.trainer's loop

class Ours:
    """The model, optimizer and compiled training step exactly as ``lpc.trainer.train`` sets them up."""

    def __init__(self, config, data: Dataset, device: torch.device):
        self.config, self.device = config, device
        self.data = data.to(device)
        torch.manual_seed(config.seed)
        self.runtime = resolve_runtime(config, device)
        self.model = build_model(config, data.in_shape, data.num_classes).to(device)
        if self.runtime.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer, _ = make_optimizer(self.model, config)
        self.step_model = training_module(self.model, self.runtime)
        self.pad_fill = _pad_fill(self.data, config)
        self.gamma = GammaSchedule(config.gamma.init, config.gamma.factor, config.gamma.max,
                                   steps_per_epoch=steps_per_epoch(len(self.data.x_train), config))
        self.epoch = 0

    def run(self, steps: int | None = None) -> tuple[int, float]:
        """Trains ``steps`` steps (None: a whole epoch); returns (images, seconds)."""
        sync(self.device)
        start = time.perf_counter()
        sums = train_epoch(self.step_model, self.model, self.data, self.optimizer, self.config, gamma=self.gamma,
                           pad_fill=self.pad_fill, epoch=self.epoch, max_steps=steps)  # ends with one host sync
        seconds = time.perf_counter() - start
        self.epoch += 1
        b, n = self.config.optim.batch_size, len(self.data.x_train)
        images = n if steps is None or steps * b >= n else steps * b
        assert sums["batches"] == math.ceil(images / b), (sums["batches"], images, b)
        return images, seconds


# --------------------------------------------------------------------------- the reference pipeline

class AddGaussianNoise:
    """The authors' transform: adds N(mean, std^2) noise to a tensor image."""

    def __init__(self, mean: float = 0.0, std: float = 0.01):
        self.mean, self.std = mean, std

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor + torch.randn(tensor.size()) * self.std + self.mean


class ImageArrayDataset(torch.utils.data.Dataset):
    """torchvision-style: uint8 H×W×C images, each turned into a PIL image and transformed on access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        image = self.images[index]
        image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        return self.transform(image), int(self.labels[index])


class Reference:
    """Per-sample transforms in a DataLoader, fp32, no compile: the authors' way of training."""

    def __init__(self, config, data: Dataset, device: torch.device):
        from torchvision import transforms

        self.config, self.device = config, device
        d = config.data
        size = data.x_train.shape[-1]
        steps = [transforms.ToTensor(),
                 transforms.Normalize(data.mean.reshape(-1).tolist(), data.std.reshape(-1).tolist())]
        if d.flip:
            steps.append(transforms.RandomHorizontalFlip())
        if d.crop_padding:
            steps.append(transforms.RandomCrop(size, padding=d.crop_padding))
        steps.append(AddGaussianNoise(0.0, d.noise_std))
        images = data.x_train.permute(0, 2, 3, 1).contiguous().numpy()  # H×W×C, as torchvision's datasets hold them
        dataset = ImageArrayDataset(images, data.y_train.numpy(), transforms.Compose(steps))
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=config.optim.batch_size, shuffle=True)
        torch.manual_seed(config.seed)
        self.model = build_model(config, data.in_shape, data.num_classes).to(device)
        classifier = list(self.model.head.classifier.parameters())
        ids = {id(p) for p in classifier}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        o = config.optim
        self.optimizer = torch.optim.AdamW([{"params": rest, "lr": o.lr}, {"params": classifier, "lr": o.lr}],
                                           weight_decay=o.weight_decay)
        self.gamma = GammaSchedule(config.gamma.init, config.gamma.factor, config.gamma.max).value
        self.batches = iter(())

    def _next(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def pipeline_only(self, steps: int) -> float:
        """Images per second of the per-sample transforms and collation alone: a bound on the whole loop."""
        start, images = time.perf_counter(), 0
        for _ in range(steps):
            images += len(self._next()[0])
        return images / (time.perf_counter() - start)

    def run(self, steps: int) -> tuple[int, float]:
        self.model.train()
        sync(self.device)
        start, images = time.perf_counter(), 0
        for _ in range(steps):
            x, y = self._next()
            x, y = x.to(self.device), y.to(self.device)
            logits, z = self.model(x)
            loss = F.cross_entropy(logits, y)
            if self.model.head.uses_compression:
                loss = loss + self.gamma * F.mse_loss(z, torch.zeros(z.shape).to(self.device))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            images += len(x)
        sync(self.device)
        return images, time.perf_counter() - start


# --------------------------------------------------------------------------- cases

def mlp_case(quick: bool):
    config = load_config(CONFIGS / "mnist.yaml")
    data = load_data(config.data)
    if quick:
        data = from_arrays({"x_train": data.x_train[:1024].numpy(), "y_train": data.y_train[:1024].numpy(),
                            "x_test": data.x_test[:256].numpy(), "y_test": data.y_test[:256].numpy()}, name="mnist")
    return "mlp", config, data


def resnet_case(backbone: str, images: int, batch_size: int, precision: str = "auto", compile_: str | bool = "auto"):
    name = "cifar10" if backbone == "resnet18" else "cifar100"
    config = load_config(CONFIGS / f"{name}.yaml")
    config = apply_overrides(config, {"optim.batch_size": batch_size, "runtime.precision": precision,
                                      "runtime.compile": compile_, "optim.lr": 1e-3})
    classes = 10 if backbone == "resnet18" else 100
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(images, 3, 32, 32), dtype=np.uint8)
    y = np.arange(images) % classes
    data = from_arrays({"x_train": x, "y_train": y, "x_test": x[:classes], "y_test": y[:classes],
                        "x_val": x[:classes], "y_val": y[:classes]}, name=f"random-{name}")
    return backbone, config, data


def measure(case, device, *, warmup: int, steps: int, rounds: int):
    """Images/s of ours and of the reference over ``rounds`` interleaved rounds of ``steps`` steps each, the
    order swapped every round (ours first, then the reference first, ...): whichever runs second in a round
    runs measurably faster on a CPU, and a drifting load (other processes on shared cores) weighs on both alike."""
    name, config, data = case
    ours, reference = Ours(config, data, device), Reference(config, data, device)
    ours.run(warmup)
    reference.run(warmup)
    totals = {"ours": [0, 0.0], "reference": [0, 0.0]}
    for round_ in range(rounds):
        sides = [("ours", ours), ("reference", reference)]
        for key, side in sides if round_ % 2 == 0 else sides[::-1]:
            images, seconds = side.run(steps)
            totals[key][0] += images
            totals[key][1] += seconds
    ours_rate, ref_rate = (totals[k][0] / totals[k][1] for k in ("ours", "reference"))
    pipeline = reference.pipeline_only(max(steps * rounds, 8))
    runtime = resolve_runtime(config, device)
    print(f"{name}: ours {ours_rate:,.0f} images/s ({runtime.precision}, compile={runtime.compile}) | reference "
          f"{ref_rate:,.0f} images/s (fp32, DataLoader; its transforms alone {pipeline:,.0f} images/s) | "
          f"{rounds} x {steps} steps of {config.optim.batch_size} each | device {device}")
    speedup = ours_rate / ref_rate
    print(f"speedup ({name}): {speedup:.2f}x", flush=True)
    return speedup


# --------------------------------------------------------------------------- GPU check

def precision_check(device: torch.device) -> None:
    """γ||z||^2 with γ = 1e6 and z ~ 1e-4 under bf16 autocast against fp32: the loss and dL/dz."""
    gamma = 1e6
    z32 = (1e-4 * torch.randn(128, 8, generator=torch.Generator().manual_seed(0))).to(device).requires_grad_()
    loss32 = gamma * compression_loss(z32)
    (grad32,) = torch.autograd.grad(loss32, z32)
    z = z32.detach().clone().requires_grad_()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = gamma * compression_loss(z)
    (grad,) = torch.autograd.grad(loss, z)
    loss_error = abs(loss.item() - loss32.item()) / abs(loss32.item())
    grad_error = ((grad.float() - grad32).abs().max() / grad32.abs().max()).item()
    # and through the training forward pass: the head's outputs stay fp32 under bf16
    case = resnet_case("resnet18", 16, 16, precision="bf16", compile_=False)
    ours = Ours(case[1], case[2], device)
    x = ours.data.normalize(ours.data.x_train[:16])
    logits, latents = ours.step_model(x)
    ok = loss_error < 1e-3 and grad_error < 1e-3 and latents.dtype == logits.dtype == torch.float32
    print(f"bf16 precision: gamma*||z||^2 relative error {loss_error:.1e}, gradient {grad_error:.1e} "
          f"(gamma=1e6, z~1e-4; limit 1e-3); head outputs under bf16: {latents.dtype} -> "
          f"{'OK' if ok else 'FAILED'}", flush=True)
    if not ok:
        raise SystemExit(1)


def sync_check(device: torch.device, steps: int, batch_size: int) -> None:
    """Host syncs during ``steps`` training steps: Python-level reads of tensors, and CUDA's own count."""
    case = resnet_case("resnet18", steps * batch_size, batch_size, compile_=False)
    ours = Ours(case[1], case[2], device)
    ours.run(1)
    reads = {"n": 0}
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "__float__", "__int__")}

    def counting(original):
        def wrapper(self, *args, **kwargs):
            # reads made by lpc's code; torch's own (the CPU optimizer's step counters) are CUDA's count below
            if f"{os.sep}torch{os.sep}" not in sys._getframe(1).f_code.co_filename:
                reads["n"] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(original))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                ours.run(steps)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    cuda_syncs = sum("synchroniz" in str(w.message) for w in caught) if device.type == "cuda" else "n/a"
    print(f"host syncs in {steps} training steps: {reads['n']} tensor reads by lpc, CUDA sync warnings: {cuda_syncs} "
          f"(expected 1 each: the epoch's summed losses)", flush=True)


def epoch_time(backbone: str, device: torch.device, images: int, batch_size: int, compile_) -> float:
    case = resnet_case(backbone, images, batch_size, compile_=compile_)
    ours = Ours(case[1], case[2], device)
    first_images, first = ours.run()  # compiles both batch shapes when compiling
    _, second = ours.run()
    print(f"{backbone} epoch of {first_images:,} images ({ours.runtime.precision}, channels_last="
          f"{ours.runtime.channels_last}, compile={ours.runtime.compile}): {second:.2f} s "
          f"({first_images / second:,.0f} images/s; first epoch {first:.1f} s)", flush=True)
    return first_images / second


def gpu_check(device: torch.device, *, images: int, batch_size: int, reference_steps: int, models: list[str]) -> None:
    precision_check(device)
    sync_check(device, steps=8, batch_size=batch_size)
    rates = {}
    if "resnet18" in models:
        epoch_time("resnet18", device, images, batch_size, compile_=False)
        rates["resnet18"] = epoch_time("resnet18", device, images, batch_size, compile_="auto")
        name, config, data = resnet_case("resnet18", images, batch_size)
        reference = Reference(config, data, device)
        reference.run(min(3, reference_steps))
        n, seconds = reference.run(reference_steps)
        ref_rate = n / seconds
        pipeline = reference.pipeline_only(reference_steps)
        print(f"reference resnet18 (fp32, per-sample transforms, DataLoader): {ref_rate:,.0f} images/s over "
              f"{reference_steps} steps -> {images / ref_rate:.1f} s per epoch of {images:,} images "
              f"(its transforms alone: {pipeline:,.0f} images/s)", flush=True)
        print(f"speedup (resnet18, {device.type}): {rates['resnet18'] / ref_rate:.1f}x", flush=True)
    if "resnet50" in models:
        rates["resnet50"] = epoch_time("resnet50", device, images, batch_size, compile_="auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--cases", default="mlp,resnet18", help="comma list of mlp, resnet18")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the code paths")
    parser.add_argument("--images", type=int, help="random CIFAR-shaped images (default 2,048 on CPU, 50,000 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, help="ResNet steps per round (default 2 on CPU, 30 on CUDA; "
                                                   "--gpu-check: the reference's steps, default 100)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved measuring rounds per case, order swapped each round (default 4)")
    parser.add_argument("--gpu-check", action="store_true", help="the lent-GPU checks (see the module docstring)")
    parser.add_argument("--models", default="resnet18,resnet50", help="--gpu-check: which epoch times to measure")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    print(machine_line(device), flush=True)
    images = args.images or (64 if args.quick else 50_000 if cuda else 2048)
    batch = 16 if args.quick else args.batch_size
    if args.gpu_check:
        gpu_check(device, images=images, batch_size=batch, reference_steps=args.steps or (2 if args.quick else 100),
                  models=args.models.split(","))
        return
    speedups = []
    for name in args.cases.split(","):
        if name == "mlp":
            case = mlp_case(args.quick)
            steps = len(case[2].x_train) // case[1].optim.batch_size // args.rounds  # about one epoch in all
            speedups.append(measure(case, device, warmup=1, steps=steps, rounds=args.rounds))
        elif name in ("resnet18", "resnet50"):
            steps = args.steps or (1 if args.quick else 30 if cuda else 2)
            case = resnet_case(name, max(images, (steps + 1) * batch), batch)
            speedups.append(measure(case, device, warmup=1, steps=steps, rounds=args.rounds))
        else:
            raise SystemExit(f"--cases: unknown case '{name}' (mlp, resnet18, resnet50)")
    print(f"speedup: {math.exp(np.mean(np.log(speedups))):.2f}x (geometric mean over {len(speedups)} cases)")


if __name__ == "__main__":
    sys.exit(main())
