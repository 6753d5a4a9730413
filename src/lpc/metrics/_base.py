"""What the latent-geometry families share: input validation at the boundary, chunked passes, class statistics.

Every public geometry metric (:mod:`.collapse`, :mod:`.entropy`, :mod:`.hypercube`,
:mod:`.geometry`) is a pure function of a latent matrix ``z`` (N samples × P
dimensions) and, where needed, integer labels ``y``.  Inputs may be numpy arrays
or torch tensors; they are validated once here, at the boundary, and the work
runs in torch on the device of ``z`` (float64 wherever a difference of nearly
equal numbers is taken).  Results are plain Python floats / ints, or small numpy
arrays inside a dict.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Elements in one temporary block (32 MiB in float64).  Every pass over z is
# chunked to this size so CIFAR-100 scale latents (50,000 × 2,048) never
# materialise a second full float64 copy.
_BLOCK = 1 << 22


# --------------------------------------------------------------------------- boundary


def _as_tensor(x, name, device=None):
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name} must be a numpy array or torch tensor; got {type(x).__name__}") from exc
    return t if device is None else t.to(device)


def _check_z(z, name="z"):
    t = _as_tensor(z, name)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D (N, P) array with N, P >= 1; got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be real-valued; got dtype {t.dtype}")
    return _finite_float(t, name)


def _finite_float(t, name):
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if not _all_finite(t):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _all_finite(t):
    # a finite float64 sum rules out NaN/inf in one pass; only an overflowing sum
    # of huge finite values needs the elementwise check
    return math.isfinite(float(t.sum(dtype=torch.float64))) or bool(torch.isfinite(t).all())


def _check_labels(y, n, device, name="y"):
    t = _as_tensor(y, name, device)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with one label per row of z (N={n}); got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels; got dtype {t.dtype}")
    return t.long()


def _check_matrix(a, name, shape_desc, rows, cols, device):
    """Validate an optional (rows, cols) float matrix; None in a dimension means 'any'."""
    t = _as_tensor(a, name, device)
    ok = t.ndim == 2 and (rows is None or t.shape[0] == rows) and (cols is None or t.shape[1] == cols)
    if not ok:
        raise ValueError(f"{name} must have shape {shape_desc}; got {tuple(t.shape)}")
    return _finite_float(t, name)


def _row_slices(n, width):
    step = max(1, _BLOCK // max(1, width))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


# --------------------------------------------------------------------------- class statistics


class _Classes:
    """Grouping of the rows of z: labels present, row → group index, counts, means (float64)."""

    def __init__(self, z, groups):
        self.labels, self.inv, counts = torch.unique(groups, sorted=True, return_inverse=True, return_counts=True)
        self.K = int(self.labels.numel())
        self.N, self.P = z.shape
        self.counts = counts.to(torch.float64)
        sums = torch.zeros(self.K, self.P, dtype=torch.float64, device=z.device)
        for sl in _row_slices(self.N, self.P):
            sums.index_add_(0, self.inv[sl], z[sl].to(torch.float64))
        means = sums / self.counts[:, None]
        # Second, corrective pass (mean of the residuals): it makes the class mean
        # of identical points exactly that point, so a collapsed class gives Σ_W = 0
        # exactly rather than rounding noise of the sum.
        corr = torch.zeros_like(sums)
        for sl in _row_slices(self.N, self.P):
            corr.index_add_(0, self.inv[sl], z[sl].to(torch.float64) - means[self.inv[sl]])
        self.means = means + corr / self.counts[:, None]
        # Papyan's μ_G: the mean of all samples (= count-weighted mean of class means).
        self.global_mean = (self.counts[:, None] * self.means).sum(0) / self.N
