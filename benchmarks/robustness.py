"""Benchmark of lpc.metrics: batched DeepFool vs the published per-sample loop, vectorised vs per-point Mahalanobis.

    python benchmarks/robustness.py [--quick] [--threads N]

Prints a machine line, then for each case the seconds of both implementations, their
ratio and whether their results agree. Models have random weights (He/PyTorch default
init; BatchNorm on its initial running statistics), which is enough to time the
algorithms: DeepFool's cost depends on the architecture and the number of iterations,
which are reported.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.spatial.distance import mahalanobis
from torch import nn

from machine import machine_line

from lpc.metrics.reliability import fit_class_gaussians, mahalanobis_distance
from lpc.metrics.robustness import deepfool, pgd_l2_radius, robustness_summary


# --------------------------------------------------------------------------- models


def mlp_model() -> tuple[nn.Module, str]:
    """MNIST-shaped MLP 784 -> 256 -> 256 (BN + SiLU) -> IB linear 8 -> 10."""
    try:
        from lpc.backbones import MLP
        from lpc.heads import build_head
        from lpc.model import Classifier

        backbone = MLP((1, 28, 28), (256, 256))
        return Classifier(backbone, build_head("ib", backbone.num_features, 10, {"intermediate": 8})), \
            "lpc MLP(256, 256) + IB head (8)"
    except ImportError:
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU())
                self.ib, self.cls = nn.Linear(256, 8), nn.Linear(8, 10)

            def forward(self, x):
                z = self.ib(self.body(x))
                return self.cls(z), z

        return Net(), "stand-in MLP 784-256-256-8-10 (lpc.backbones not importable)"


def resnet_model() -> tuple[nn.Module, str]:
    """CIFAR-shaped ResNet-18 with an IB head, or torchvision's ResNet-18 returning (logits, features)."""
    try:
        from lpc.backbones import resnet18
        from lpc.heads import build_head
        from lpc.model import Classifier

        backbone = resnet18(3)
        return Classifier(backbone, build_head("ib", backbone.num_features, 10, {"intermediate": 8})), \
            "lpc resnet18 (CIFAR stem, SiLU) + IB head (8)"
    except ImportError:
        import torchvision

        class Wrapped(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = torchvision.models.resnet18(num_classes=10)
                fc, self.net.fc = self.net.fc, nn.Identity()
                self.fc = fc

            def forward(self, x):
                z = self.net(x)
                return self.fc(z), z

        return Wrapped(), "torchvision resnet18(num_classes=10) wrapped to (logits, features)"


# --------------------------------------------------------------------------- per-sample reference


def deepfool_one(model: nn.Module, image: torch.Tensor, num_classes=10, overshoot=0.02, max_iter=50):
    """LTS4/DeepFool's Python algorithm for one image: candidates from the original logits,
    per-class gradients by separate backward passes, overshoot on the accumulated total."""
    def logits(inp):
        out = model(inp)
        return out[0] if isinstance(out, tuple) else out

    f0 = logits(image[None]).detach()[0]
    order = f0.argsort(descending=True)[:num_classes]
    label = int(order[0])
    r_tot = torch.zeros_like(image)
    x = image[None].clone().requires_grad_(True)
    fs = logits(x)
    k_i, loop_i = label, 0
    while k_i == label and loop_i < max_iter:
        pert, w = math.inf, None
        grad_orig = torch.autograd.grad(fs[0, order[0]], x, retain_graph=True)[0]
        for k in range(1, len(order)):
            cur = torch.autograd.grad(fs[0, order[k]], x, retain_graph=True)[0]
            w_k = cur - grad_orig
            f_k = float((fs[0, order[k]] - fs[0, order[0]]).detach())
            pert_k = abs(f_k) / float(w_k.norm())
            if pert_k < pert:
                pert, w = pert_k, w_k
        r_tot = r_tot + ((pert + 1e-4) * w / w.norm())[0]
        x = (image + (1 + overshoot) * r_tot)[None].clone().requires_grad_(True)
        fs = logits(x)
        k_i = int(fs.argmax())
        loop_i += 1
    return (1 + overshoot) * r_tot, loop_i


def bench_deepfool(name: str, model: nn.Module, x: torch.Tensor) -> None:
    model.eval()
    deepfool(model, x[:2])  # warm-up (allocator, kernels)
    t0 = time.perf_counter()
    res = deepfool(model, x)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    refs = [deepfool_one(model, xi) for xi in x]
    t_loop = time.perf_counter() - t0
    r_ref = torch.stack([r for r, _ in refs])
    it_ref = torch.tensor([it for _, it in refs])
    diff = (res.r - r_ref).abs().max().item()
    rel = ((res.r - r_ref).flatten(1).norm(dim=1) / r_ref.flatten(1).norm(dim=1)).max().item()
    same_iters = bool(torch.equal(res.iterations.cpu(), it_ref))
    print(f"  {name}: {len(x)} inputs, iterations mean {res.iterations.double().mean():.2f} "
          f"max {int(res.iterations.max())}, flipped {int(res.flipped.sum())}/{len(x)}")
    print(f"    batched {t_batched:8.3f} s | per-sample reference {t_loop:8.3f} s | "
          f"speed-up {t_loop / t_batched:6.1f}x")
    print(f"    identical iterations: {same_iters} | max |r - r_ref| = {diff:.3e} | "
          f"max relative ||r - r_ref||/||r_ref|| = {rel:.3e}")


# --------------------------------------------------------------------------- Mahalanobis


def bench_mahalanobis(n: int, dim: int, classes: int, loop_points: int) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim)) * 2
    y = rng.integers(0, classes, size=n)
    z = (centres[y] + rng.normal(size=(n, dim)) * rng.uniform(0.2, 2.0, size=dim)).astype(np.float32)
    pred = np.where(rng.random(n) < 0.9, y, rng.integers(0, classes, size=n))  # "predicted" classes
    zt, yt, pt = torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(pred)

    t0 = time.perf_counter()
    fitted = fit_class_gaussians(zt, yt, covariance="tied")
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    dist = mahalanobis_distance(zt, fitted, pt)
    t_dist = time.perf_counter() - t0

    # Independent per-point reference: numpy fit + scipy's mahalanobis for each point.
    z64 = z.astype(np.float64)
    means = np.stack([z64[y == c].mean(0) for c in range(classes)])
    centred = z64 - means[y]
    vi = np.linalg.pinv(centred.T @ centred / n)
    m = min(loop_points, n)
    t0 = time.perf_counter()
    ref = np.array([mahalanobis(z64[i], means[pred[i]], vi) for i in range(m)])
    t_loop = (time.perf_counter() - t0) * n / m
    rel = np.max(np.abs(dist[:m].numpy() - ref) / ref)
    print(f"  {n:,} x {dim} latents, {classes} classes, tied covariance, distance to the predicted class")
    print(f"    vectorised: fit {t_fit:.3f} s + distances {t_dist:.3f} s = {t_fit + t_dist:.3f} s")
    print(f"    scipy per-point loop: {t_loop:.2f} s for {n:,} points (timed on {m:,}, extrapolated "
          f"linearly) | speed-up {t_loop / (t_fit + t_dist):.0f}x (incl. fit)")
    print(f"    max relative difference on the timed points: {rel:.2e}")


def bench_pgd(name: str, model: nn.Module, x: torch.Tensor, **settings) -> None:
    """The PGD-L2 radius search against the exhaustive one it replaced (every target at every bisection step)."""
    t0 = time.perf_counter()
    fast = pgd_l2_radius(model, x, **settings)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = pgd_l2_radius(model, x, exhaustive=True, **settings)
    t_full = time.perf_counter() - t0
    both = fast.radius.isfinite() & full.radius.isfinite()
    ratio = (fast.radius[both] / full.radius[both]).double()
    print(f"  {name}: {len(x)} inputs, {settings or 'defaults'}")
    print(f"    search {t_fast:8.3f} s | exhaustive reference {t_full:8.3f} s | ratio {t_full / t_fast:.1f}x")
    print(f"    radius search/exhaustive: mean {ratio.mean():.4f}, min {ratio.min():.4f}, max {ratio.max():.4f} "
          f"on {int(both.sum())} inputs flipped by both")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs / points (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    torch.manual_seed(0)

    print("DeepFool (overshoot 0.02, max_iter 50, 10 candidates), random weights:")
    model, what = mlp_model()
    print(f"  (a) model: {what}")
    bench_deepfool("MLP", model, torch.randn(20 if args.quick else 100, 1, 28, 28))
    model, what = resnet_model()
    print(f"  (b) model: {what}")
    bench_deepfool("ResNet-18", model, torch.randn(2 if args.quick else 8, 3, 32, 32))

    print("robustness_summary (defaults: DeepFool + PGD-L2 + bisection + Lipschitz), MLP, 100 inputs:")
    model, _ = mlp_model()
    t0 = time.perf_counter()
    out = robustness_summary(model, torch.randn(1000, 1, 28, 28), n=100)
    print(f"    {time.perf_counter() - t0:.2f} s | " + ", ".join(f"{k} {v:.4g}" for k, v in out.items()))

    print("PGD-L2 radius, random weights:")
    model, _ = mlp_model()
    bench_pgd("MLP", model.eval(), torch.randn(20 if args.quick else 100, 1, 28, 28))

    print("Mahalanobis:")
    bench_mahalanobis(5_000 if args.quick else 50_000, 512, 10, 500 if args.quick else 2_000)


if __name__ == "__main__":
    main()
