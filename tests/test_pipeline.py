"""What the fast training pipeline promises, checked on the CPU: bf16 precision of γ||z||^2, seeded data orders,
no host syncs inside an epoch, the runtime switches, and the throughput benchmark's code paths."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import ROOT, tiny_config
from lpc.config import apply_overrides
from lpc.data import load_data
from lpc.losses import GammaSchedule, compression_loss
from lpc.model import build_model
from lpc.trainer import (TrainForward, _pad_fill, epoch_generators, make_optimizer, resolve_runtime, train,
                         train_epoch)

CPU = torch.device("cpu")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_compression_loss_and_gradient_keep_fp32_precision_under_bf16_autocast(reduction):
    gamma = 1e6  # gamma_max on CIFAR; the latents have shrunk to ~1e-4 by then
    z = 1e-4 * torch.randn(128, 8, generator=torch.Generator().manual_seed(0))
    z32 = z.clone().requires_grad_()
    loss32 = gamma * compression_loss(z32, reduction)
    (grad32,) = torch.autograd.grad(loss32, z32)
    z16 = z.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16 = gamma * compression_loss(z16, reduction)
    (grad16,) = torch.autograd.grad(loss16, z16)
    assert loss16.dtype == torch.float32
    assert abs(loss16.item() - loss32.item()) <= 1e-3 * abs(loss32.item())
    assert _relative(grad16, grad32) <= 1e-3
    # bf16 latents (as a bf16 layer would give) are squared and summed in fp32, not rounded to 8 bits
    zb = z.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_b = gamma * compression_loss(zb, reduction)
    exact = gamma * zb.double().pow(2).sum(1).mean() / (1 if reduction == "sum" else 8)
    assert abs(loss_b.item() - exact.item()) <= 1e-6 * exact.item()


def test_under_bf16_the_backbone_runs_in_bf16_and_the_head_in_fp32():
    config = tiny_config(**{"model.backbone": "cnn"})
    model = build_model(config, (3, 8, 8), 3)
    seen = {}
    model.backbone.net[0].register_forward_hook(lambda m, i, o: seen.update(conv=o.dtype))
    step = TrainForward(model, autocast=torch.bfloat16)
    logits, z = step(torch.randn(4, 3, 8, 8))
    assert seen["conv"] == torch.bfloat16 and logits.dtype == z.dtype == torch.float32
    logits, z = TrainForward(model, autocast=None)(torch.randn(4, 3, 8, 8))
    assert seen["conv"] == torch.float32


def test_runtime_auto_is_fp32_eager_on_cpu_and_bf16_compiled_on_cuda(monkeypatch):
    config = tiny_config()
    cpu = resolve_runtime(config, CPU)
    assert (cpu.precision, cpu.compile, cpu.channels_last) == ("fp32", False, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = resolve_runtime(config, torch.device("cuda", 0))
    assert (cuda.precision, cuda.compile, cuda.channels_last) == ("bf16", True, True)
    forced = resolve_runtime(apply_overrides(config, {"runtime.precision": "fp32", "runtime.compile": False}),
                             torch.device("cuda", 0))
    assert (forced.precision, forced.compile) == ("fp32", False)
    assert resolve_runtime(apply_overrides(config, {"runtime.precision": "bf16"}), CPU).precision == "bf16"
    optimizer, _ = make_optimizer(build_model(config, (6,), 3), config)
    assert not optimizer.defaults.get("fused")  # fused AdamW only when every parameter is on CUDA


def test_data_order_is_seeded_per_epoch_and_shared_by_ranks():
    def order(seed, epoch, rank=0):
        return torch.randperm(1000, generator=epoch_generators(seed, epoch, rank, CPU)[0])

    def noise(rank):
        return torch.rand(100, generator=epoch_generators(0, 3, rank, CPU)[1])

    assert torch.equal(order(0, 0), order(0, 0))
    assert not torch.equal(order(0, 0), order(1, 0)) and not torch.equal(order(0, 0), order(0, 1))
    assert torch.equal(order(0, 3, rank=0), order(0, 3, rank=1))  # every rank shards the same permutation
    assert not torch.equal(noise(0), noise(1))  # but augments its shard with its own random numbers


class Recorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


def _first_epoch_inputs(tiny_npz, seed, **overrides):
    config = tiny_config(**{"data.path": str(tiny_npz), "seed": seed, "data.noise_std": 0.0, **overrides})
    data = load_data(config.data)
    torch.manual_seed(0)
    model = build_model(config, data.in_shape, data.num_classes)
    optimizer, _ = make_optimizer(model, config)
    step = Recorder(TrainForward(model))
    sums = train_epoch(step, model, data, optimizer, config, gamma=GammaSchedule(init=1.0, factor=1.0, max=1.0), pad_fill=_pad_fill(data, config), epoch=0)
    return step.seen, sums


def test_different_seeds_see_different_data_orders(tiny_npz):
    a, _ = _first_epoch_inputs(tiny_npz, seed=0)
    b, _ = _first_epoch_inputs(tiny_npz, seed=0)
    c, _ = _first_epoch_inputs(tiny_npz, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # the same images, in another order: every epoch visits the whole training set once
    rows = lambda batches: sorted(map(tuple, torch.cat(batches).tolist()))  # noqa: E731
    assert rows(a) == rows(c)


def test_no_host_reads_inside_an_epoch(tiny_npz, monkeypatch):
    """lpc's own code reads a tensor back once per epoch (the summed losses), never per step."""
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if f"{os.sep}lpc{os.sep}" in caller:
                reads.append((_name, caller, sys._getframe(1).f_lineno))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    _, sums = _first_epoch_inputs(tiny_npz, seed=0, **{"optim.batch_size": 8})
    monkeypatch.undo()
    assert sums["batches"] >= 10
    assert [r[0] for r in reads] == ["tolist"], reads


def test_bf16_autocast_trains_on_cpu(tmp_path, tiny_npz):
    config = tiny_config(**{"data.path": str(tiny_npz), "runtime.precision": "bf16", "optim.epochs": 4})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["status"] == "finished" and summary["precision"] == "bf16"
    assert summary["test_accuracy"] > 0.9


@pytest.mark.slow
def test_torch_compile_path_trains(tmp_path, tiny_npz):
    # 162 training rows in batches of 54: one graph shape to compile, forward and backward
    config = tiny_config(**{"data.path": str(tiny_npz), "runtime.compile": True, "optim.epochs": 1,
                            "optim.batch_size": 54})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["status"] == "finished" and summary["compiled"] is True


def _benchmark(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--threads", "1", *args],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_throughput_benchmark_runs_and_reports_speedups():
    out = _benchmark("--quick", "--cases", "mlp")
    lines = out.strip().splitlines()
    assert lines[0].startswith("machine:") and "speedup (mlp):" in out
    assert lines[-1].startswith("speedup:") and lines[-1].split()[1].endswith("x")


@pytest.mark.slow
def test_gpu_check_code_paths_run_on_cpu():
    out = _benchmark("--quick", "--gpu-check", "--models", "resnet18")
    assert "bf16 precision:" in out and "-> OK" in out
    assert "1 tensor reads by lpc" in out
    assert "resnet18 epoch of 64 images" in out and "speedup (resnet18, cpu):" in out
