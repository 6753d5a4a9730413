"""Benchmark of the latent-geometry metrics of lpc.metrics at CIFAR scale against straightforward references.

Run ``python benchmarks/metrics.py`` (N = 50,000; takes several minutes) or
``python benchmarks/metrics.py --quick`` (N = 5,000, a smoke run).  For every
metric it prints our time, the reference's time, their ratio and how closely
the two agree.  References: per-class numpy loops (Σ_W, NC), scipy's cKDTree
(k-th neighbour distances; same worker count as torch's threads), one sklearn
GaussianMixture(2) per dimension (binarity).  Where a reference would take many
minutes it is timed on a subset (query rows or dimensions) and extrapolated
linearly; the printout says so.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import scipy
import sklearn
import torch
from scipy.spatial import cKDTree
from sklearn.mixture import GaussianMixture

from machine import machine_line

from lpc import metrics
from lpc.metrics import entropy

K_NEIGHBOURS = 100      # Table 1 uses k = 100
SUBSET_ROWS = 500       # cKDTree query rows timed at P = 512 (then extrapolated)
SUBSET_DIMS = 64        # sklearn fits timed at P ≥ 512 (then extrapolated)


_CPU = {"last": 0.0}


def timed(fn, *args, **kwargs):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    _CPU["last"] = time.process_time() - c     # all threads; cpu/wall shows the parallelism obtained
    return out, time.perf_counter() - t


def report(metric, P, ours, ours_cpu, ref, note="", agree=""):
    ratio = ref / ours if ours > 0 else math.inf
    print(f"{metric:<26} P={P:<5} ours {ours:7.2f} s (cpu {ours_cpu:7.2f} s)  ref {ref:8.2f} s  "
          f"ref/ours {ratio:6.1f}x  {agree}  [{note}]", flush=True)


def load_line():
    try:
        return "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average: unavailable"


# --------------------------------------------------------------------------- data


def clustered_latents(rng, N, P, K, spread=1.0):
    """Class-clustered Gaussian latents (a baseline head): float32 like a network's output."""
    y = rng.integers(0, K, N)
    means = 3.0 * rng.standard_normal((K, P))
    z = means[y] + spread * rng.standard_normal((N, P))
    return z.astype(np.float32), y


def ib_latents(rng, N, P, K, radius=1e-2, noise=1e-6):
    """IB-like latents: each class on a hypercube vertex ±radius, tiny spread."""
    y = rng.integers(0, K, N)
    codes = np.sign(rng.standard_normal((K, P)))
    z = radius * codes[y] + noise * rng.standard_normal((N, P))
    return z.astype(np.float32), y


# --------------------------------------------------------------------------- references


def reference_within_and_nc(z, y):
    """Per-class numpy loops: Σ_W matrix, both scalars, NC1 (rank K−1 pinv), NC2."""
    z = z.astype(np.float64)
    classes = np.unique(y)
    K, (N, P) = len(classes), z.shape
    Sw = np.zeros((P, P))
    covs = np.zeros((P, P))
    means = np.zeros((K, P))
    for i, k in enumerate(classes):
        zk = z[y == k]
        means[i] = zk.mean(0)
        r = zk - means[i]
        Sw += r.T @ r
        covs += np.cov(zk.T, bias=True)
    Sw /= N
    M = means - z.mean(0)
    Sb = M.T @ M / K
    lam, vec = np.linalg.eigh(Sb)
    lam, vec = lam[::-1][:K - 1], vec[:, ::-1][:, :K - 1]
    nc1 = np.trace(Sw @ (vec / lam) @ vec.T) / K
    norms = np.linalg.norm(M, axis=1)
    cos = (M @ M.T / np.outer(norms, norms))[np.triu_indices(K, 1)]
    return {"sigma_w": np.mean(covs / K), "sigma_w_trace": np.trace(Sw) / P, "nc1": nc1,
            "equinorm": np.std(norms, ddof=1) / norms.mean(), "max_angle": np.mean(np.abs(cos + 1 / (K - 1)))}


def bench_nc(rng, N, P, K):
    z, y = clustered_latents(rng, N, P, K)

    def ours():
        w = metrics.within_class_covariance(z, y)
        nc = metrics.neural_collapse(z, y)
        return {"sigma_w": w["class_mean_entries"], "sigma_w_trace": w["trace_per_dim"], **nc}

    got, t_ours = timed(ours)
    c_ours = _CPU["last"]
    ref, t_ref = timed(reference_within_and_nc, z, y)
    worst = max(abs(got[key] - ref[key]) / abs(ref[key]) for key in ref)
    report("Σ_W (matrix) + NC1/NC2", P, t_ours, c_ours, t_ref, f"K={K}", f"max rel diff {worst:.1e}")


def bench_entropy(rng, N, P, kind, metric="euclidean"):
    z, _ = (clustered_latents if kind == "clustered" else ib_latents)(rng, N, P, 10)
    captured = {}
    search = entropy._knn_distances

    def spy(x, k, metric):
        captured["eps"] = search(x, k, metric)
        return captured["eps"]

    entropy._knn_distances = spy     # capture the k-th distances of the timed call
    try:
        h, t_ours = timed(metrics.kl_entropy, z, K_NEIGHBOURS, metric)
        c_ours = _CPU["last"]
    finally:
        entropy._knn_distances = search
    eps = captured["eps"].numpy()
    z64 = z.astype(np.float64)
    p = 2 if metric == "euclidean" else np.inf
    tree, t_build = timed(cKDTree, z64)
    rows = np.arange(N) if P <= 16 else np.linspace(0, N - 1, min(N, SUBSET_ROWS)).astype(int)
    (dist, _), t_query = timed(tree.query, z64[rows], K_NEIGHBOURS + 1, p=p, workers=torch.get_num_threads())
    ref = dist[:, -1]
    t_ref = t_build + t_query * N / len(rows)
    rel = np.max(np.abs(eps[rows] - ref) / np.maximum(ref, 1e-300))
    note = f"{kind} latents, {metric}"
    if len(rows) < N:
        note += f"; cKDTree timed on {len(rows)} query rows, extrapolated ×{N / len(rows):.0f}"
    report(f"kl_entropy k={K_NEIGHBOURS}", P, t_ours, c_ours, t_ref, note, f"max rel diff of ε {rel:.1e}")
    return h


def bench_binarity(rng, N, P, kind="ib"):
    z, _ = (ib_latents(rng, N, P, 10, radius=1.0, noise=0.05) if kind == "ib"
            else clustered_latents(rng, N, P, 10))
    out, t_ours = timed(metrics.binarity, z)
    c_ours = _CPU["last"]
    dims = np.arange(P) if P <= SUBSET_DIMS else np.linspace(0, P - 1, SUBSET_DIMS).astype(int)
    zs = z.astype(np.float64)
    zs = (zs - zs.mean(0)) / zs.std(0)        # binarity standardises by default

    def reference():
        fits = []
        for p in dims:
            gm = GaussianMixture(2, reg_covar=1e-6, tol=1e-3, max_iter=100, random_state=0).fit(zs[:, [p]])
            order = np.argsort(gm.means_.ravel())
            fits.append((gm.means_.ravel()[order], gm.score(zs[:, [p]])))
        return fits

    fits, t_sub = timed(reference)
    t_ref = t_sub * P / len(dims)
    d_mean = max(np.max(np.abs(out["means"][p] - f[0])) for p, f in zip(dims, fits))
    d_ll = max(abs(out["loglik_per_dim"][p] - f[1]) for p, f in zip(dims, fits))
    note = f"{kind} latents"
    if len(dims) < P:
        note += f"; sklearn timed on {len(dims)} dims, extrapolated ×{P / len(dims):.0f}"
    report("binarity (2-GMM per dim)", P, t_ours, c_ours, t_ref, note,
           f"max |Δμ| {d_mean:.1e} |Δℓ| {d_ll:.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 5,000 instead of 50,000 (smoke run)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: leave torch's setting); on a shared machine "
                             "fewer threads than busy cores avoids spin-waiting at every parallel region")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    N = 5_000 if args.quick else 50_000
    print(machine_line(extra=f"numpy {np.__version__} scipy {scipy.__version__} sklearn {sklearn.__version__}"))
    print(load_line(), "(other processes share these cores; wall times include their contention)")
    print(f"N = {N}; times are wall-clock seconds of one call; ref/ours > 1 means ours is faster.")
    print("targets: kl_entropy N=50,000 P=512 < 60 s; binarity N=50,000 P=2,048 < 30 s\n")
    rng = np.random.default_rng(0)
    metrics.geometry_summary(*clustered_latents(rng, 300, 20, 3), entropy_k=10)   # warm-up: lazy init
    for P, K in ((8, 10), (512, 10), (2048, 100)):
        bench_nc(rng, N, P, K)
    bench_entropy(rng, N, 8, "clustered")
    bench_entropy(rng, N, 8, "clustered", metric="chebyshev")
    bench_entropy(rng, N, 512, "clustered")
    bench_entropy(rng, N, 512, "IB-like")
    for P in (8, 512, 2048):
        bench_binarity(rng, N, P)
    bench_binarity(rng, N, 512, kind="clustered")
    print("\n" + load_line())


if __name__ == "__main__":
    main()
