"""Kozachenko–Leonenko entropy of the latents and the exact k-nearest-neighbour search it needs.

Paper reference: Table 1 (Kozachenko–Leonenko entropy with k = 100).  Neighbour
distances are exact to float64 rounding, from a bounded blocked matmul on z's
device (see :func:`kl_entropy`); torch and numpy only.

Sign convention: the entropy shrinks as the latent collapses.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ._base import _BLOCK, _Classes, _check_z, _row_slices

__all__ = ["kl_entropy"]

# Candidate neighbours beyond k kept from the approximate pass; the exactness
# check below makes any margin correct, this one just keeps fallbacks rare.
_KNN_MARGIN = 32


def _matmul_bound_factor(d, dtype):
    """c·u for the candidate keys: with K_ij = (1−cu)(‖a‖² + ‖b‖²) − 2a·b computed in ``dtype``,
    K̃ ≤ D² ≤ K̃ + 2cu(‖a‖² + ‖b‖²) holds rigorously.

    K is one augmented dot product [−2a, 1, k_a]·[b, k_b, 1]; its rounding is at
    most (d+2)u·(2Σ|a_j b_j| + k_a + k_b) ≤ 2(d+2)u(‖a‖² + ‖b‖²) for any
    summation order (FMA included), rounding the inputs to float32 adds ≤ 4u,
    and the float64 difference-then-norm value we call exact is within
    2d·u₆₄(‖a‖² + ‖b‖²) of D².  c = 4d + 32 exceeds the sum with room.
    """
    u = torch.finfo(dtype).eps / 2
    return (4 * d + 32) * u


def _resolve_kth(x, rows, cand, lo, hi, k):
    """Exact k-th smallest squared distance from x[rows] (any float dtype) given bracketed candidates.

    Candidates whose upper bound is below the k-th lower bound are certainly
    nearer, those whose lower bound is above the k-th upper bound certainly
    farther; only the ambiguous rest is recomputed as ‖a − b‖² in float64
    (difference first, so small distances keep full relative precision).
    """
    d = x.shape[1]
    t_lo = lo.kthvalue(k, 1).values
    t_hi = hi.kthvalue(k, 1).values
    below = hi < t_lo[:, None]
    amb = (lo <= t_hi[:, None]) & ~below
    rank = k - below.sum(1)          # the k-th overall is the rank-th ambiguous one
    nb = amb.sum(1)
    order = nb.argsort()
    nb_sorted = nb[order].tolist()
    out = torch.empty(rows.numel(), dtype=torch.float64, device=x.device)
    i, n = 0, rows.numel()
    while i < n:
        # rows sorted by how many candidates need recomputing, so padding stays small
        step = max(1, _BLOCK // (max(1, nb_sorted[i]) * d))
        while step > 1 and step * nb_sorted[min(n, i + step) - 1] * d > 2 * _BLOCK:
            step //= 2
        j = min(n, i + step)
        M = max(1, nb_sorted[j - 1])
        rr = order[i:j]
        a = amb[rr]
        sel = torch.where(a, lo[rr], math.inf).topk(M, dim=1, largest=False).indices
        ids = cand[rr].gather(1, sel)
        diff = x[ids].to(torch.float64) - x[rows[rr]].to(torch.float64)[:, None, :]
        d2 = (diff * diff).sum(-1)
        del diff
        d2.masked_fill_(~a.gather(1, sel), math.inf)
        out[rr] = d2.sort(1).values.gather(1, (rank[rr] - 1)[:, None]).squeeze(1)
        i = j
    return out


def _merge_dense(best_v, best_i, tau, rows, vals, idx):
    """Fold candidate (vals, idx) of shape (n, w) into the running m smallest of ``rows``."""
    cv = torch.cat([best_v[rows], vals], 1)
    ci = torch.cat([best_i[rows], idx], 1)
    v, p = cv.topk(best_v.shape[1], dim=1, largest=False, sorted=False)
    best_v[rows] = v
    best_i[rows] = ci.gather(1, p)
    tau[rows] = v.max(1).values


def _merge_block(best_v, best_i, tau, keys, r0, c0, transposed=False):
    """Fold a block of keys into the running top-m of its rows.

    ``keys[a, b]`` is the key of row r0 + a against column c0 + b, or with
    ``transposed`` the key of row r0 + b against column c0 + a (the same Gram
    block read from the other side).
    """
    dev = keys.device
    nr = keys.shape[1] if transposed else keys.shape[0]
    t = tau[r0:r0 + nr]
    if bool(torch.isinf(t).any()):
        # first contact of these rows: nothing to filter against yet
        dim = 0 if transposed else 1
        v, i = keys.topk(min(best_v.shape[1], keys.shape[dim]), dim=dim, largest=False, sorted=False)
        if transposed:
            v, i = v.T, i.T
        _merge_dense(best_v, best_i, tau, torch.arange(r0, r0 + nr, device=dev), v, i + c0)
        return
    # later blocks: only keys below a row's current m-th smallest can enter, and
    # after the first contact those are few, so filtering beats a topk per block
    if transposed:
        mask = (keys < t[None, :]).T.contiguous()
    else:
        mask = keys < t[:, None]
    rr, cc = mask.nonzero(as_tuple=True)       # row-major, so grouped by row
    if rr.numel() == 0:
        return
    vals = keys[cc, rr] if transposed else keys[rr, cc]
    uniq, counts = torch.unique_consecutive(rr, return_counts=True)
    slot = torch.repeat_interleave(torch.arange(uniq.numel(), device=dev), counts)
    pos = torch.arange(rr.numel(), device=dev) - (counts.cumsum(0) - counts)[slot]
    width = int(counts.max())
    pv = torch.full((uniq.numel(), width), math.inf, dtype=keys.dtype, device=dev)
    pi = torch.full((uniq.numel(), width), -1, dtype=torch.long, device=dev)
    pv[slot, pos] = vals
    pi[slot, pos] = cc + c0
    _merge_dense(best_v, best_i, tau, uniq + r0, pv, pi)


def _right_factor(z, mean, dtype):
    """[x, k, 1] per row, x = z − mean, k = (1−cu)‖x‖², in ``dtype``; and ‖x‖² in float64.

    With the matching left factor [−2x, 1, k] one matmul yields the key
    L_ij = k_i + k_j − 2 x_i·x_j = (1−cu)(‖x_i‖² + ‖x_j‖²) − 2 x_i·x_j, a lower
    bound of D²_ij (see :func:`_matmul_bound_factor`).  Built in row chunks so
    that no float64 copy of z is held beside it.
    """
    N, d = z.shape
    cu = _matmul_bound_factor(d, dtype)
    right = torch.empty(N, d + 2, dtype=dtype, device=z.device)
    sq = torch.empty(N, dtype=torch.float64, device=z.device)
    for sl in _row_slices(N, d):
        xc = z[sl].to(torch.float64) - mean
        sq[sl] = (xc * xc).sum(1)
        right[sl, :d] = xc
    right[:, d] = ((1.0 - cu) * sq).to(dtype)
    right[:, d + 1] = 1.0
    return right, sq


def _left_factor(right, rows):
    d = right.shape[1] - 2
    left = right[rows].clone()
    left[:, :d].mul_(-2.0)                 # exact in floating point
    left[:, d + 1] = left[:, d]
    left[:, d] = 1.0
    return left


def _brackets(keys_v, keys_i, sq, rows, d, dtype):
    """Float64 bounds lo ≤ D² ≤ hi for candidates, and the bound for every non-candidate."""
    cu = _matmul_bound_factor(d, dtype)
    lo = keys_v.to(torch.float64)
    hi = lo + 2.0 * cu * (sq[rows][:, None] + sq[keys_i])
    return lo, hi, lo.max(1).values


def _sweep_candidates(right, m, block=2048):
    """The m smallest keys of every row (indices, values), visiting each pair (i, j) once.

    A Gram block serves rows I against columns J and, transposed, rows J
    against columns I, which halves the matmul work of a row-by-row pass.
    """
    N, dev, dtype = right.shape[0], right.device, right.dtype
    best_v = torch.full((N, m), math.inf, dtype=dtype, device=dev)
    best_i = torch.full((N, m), -1, dtype=torch.long, device=dev)
    tau = torch.full((N,), math.inf, dtype=dtype, device=dev)
    for i0 in range(0, N, block):
        i1 = min(i0 + block, N)
        left = _left_factor(right, slice(i0, i1))
        for j0 in range(i0, N, block):
            keys = left @ right[j0:j0 + block].T
            if j0 == i0:
                keys.fill_diagonal_(math.inf)    # self, by index
            _merge_block(best_v, best_i, tau, keys, i0, j0)
            if j0 != i0:
                _merge_block(best_v, best_i, tau, keys, j0, i0, transposed=True)
            del keys
    return best_i, best_v


def _exact_float32_matmul(device):
    # the error bound assumes true float32 products; TF32 / bf16 matmul modes break it
    if torch.get_float32_matmul_precision() != "highest":
        return False
    return not (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)


def _knn_euclidean(z, k):
    """Exact Euclidean distance of every point to its k-th nearest other point (torch, z's device)."""
    N, d = z.shape
    # distances are translation invariant; centring shrinks ‖x‖² and with it the matmul error
    # (fl(a − b) is within u of a − b relatively, so centring itself costs no accuracy)
    mean = z.mean(0, dtype=torch.float64)
    m = min(N - 1, k + max(_KNN_MARGIN, k // 4))

    # float32 keys are twice as fast, but their error bound grows with ‖x‖²: tight
    # clusters far from the centre (near-collapsed latents) need float64.  A probe
    # of 256 rows decides.
    dtype = torch.float64
    if _exact_float32_matmul(z.device):
        right, sq = _right_factor(z, mean, torch.float32)
        probe = torch.linspace(0, N - 1, min(N, 256), device=z.device).long()
        keys = _left_factor(right, probe) @ right.T
        keys[torch.arange(probe.numel(), device=z.device), probe] = math.inf
        v, i = keys.topk(m, dim=1, largest=False, sorted=False)
        del keys
        lo, hi, bound = _brackets(v, i, sq, probe, d, torch.float32)
        fails = _resolve_kth(z, probe, i, lo, hi, k) > bound.clamp(min=0)
        if float(fails.to(torch.float64).mean()) <= 0.01:
            dtype = torch.float32
        else:
            del right
    if dtype == torch.float64:
        right, sq = _right_factor(z, mean, torch.float64)
    rows = torch.arange(N, device=z.device)
    cand, keys_v = _sweep_candidates(right, m)
    lo, hi, bound = _brackets(keys_v, cand, sq, rows, d, dtype)
    del keys_v, right
    rk2 = _resolve_kth(z, rows, cand, lo, hi, k)
    # exact only if no non-candidate can be nearer than the k-th found
    bad = (rk2 > bound.clamp(min=0)).nonzero().squeeze(1)
    if bad.numel():
        rk2[bad] = _knn_fallback(z, mean, sq, bad, rk2[bad], k)
    return rk2.sqrt()


def _knn_fallback(z, mean, sq, rows, rk2_upper, k):
    """Rows whose candidate set could miss a neighbour: redo them against all points in float64.

    Every point whose float64 lower bound is ≤ the current (upper-bound) k-th
    distance becomes a candidate, so the result is exact whatever the data.
    """
    N, d = z.shape
    right, _ = _right_factor(z, mean, torch.float64)
    out = torch.empty(rows.numel(), dtype=torch.float64, device=z.device)
    step = max(1, _BLOCK // N)
    for s in range(0, rows.numel(), step):
        r = rows[s:s + step]
        lower = _left_factor(right, r) @ right.T
        lower[torch.arange(r.numel(), device=z.device), r] = math.inf
        n_in = int((lower <= rk2_upper[s:s + step, None]).sum(1).max())
        v, i = lower.topk(max(k, n_in), dim=1, largest=False, sorted=False)
        lo, hi, _ = _brackets(v, i, sq, r, d, torch.float64)
        out[s:s + step] = _resolve_kth(z, r, i, lo, hi, k)
    return out


def _knn_distances(z, k, metric):
    """k-th nearest-other-point distance of every row (float64, exact), on z's device."""
    return _knn_euclidean(z, k) if metric == "euclidean" else _knn_chebyshev(z, k)


def _knn_chebyshev(z, k):
    """Exact max-norm distance of every point to its k-th nearest other point (direct, O(N²d))."""
    x = z.to(torch.float64)
    N, d = x.shape
    out = torch.empty(N, dtype=torch.float64, device=x.device)
    step = max(1, _BLOCK // max(N, N * d // 64))
    for s in range(0, N, step):
        r = torch.arange(s, min(s + step, N), device=x.device)
        dist = torch.cdist(x[r], x, p=math.inf)
        dist[torch.arange(r.numel(), device=x.device), r] = math.inf
        out[s:s + step] = dist.kthvalue(k, dim=1).values
    return out


def _check_k(k, name):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be a positive integer; got {k!r}")
    return int(k)


def _rms(z):
    """rms(z) = √(Tr(Σ_T)/P): root-mean-square deviation of z's entries from the mean of all samples, float64."""
    # one group of all rows: _Classes gives its mean with the corrective second pass
    whole = _Classes(z, torch.zeros(z.shape[0], dtype=torch.long, device=z.device))
    sq = sum(float((z[sl].to(torch.float64) - whole.means[0]).square_().sum()) for sl in _row_slices(*z.shape))
    return math.sqrt(sq / z.numel())



def _digamma(n):
    """ψ(n) in float64 (torch's, within 2.3e-16 of scipy's for n up to 1e8)."""
    return float(torch.special.digamma(torch.tensor(float(n), dtype=torch.float64)))

def _kl_from_distances(eps, d, k, metric, min_distance, scale=None):
    """The estimate from the k-th neighbour distances ``eps`` of z, or of z / ``scale`` when a scale is given.

    ``min_distance`` is in the units of what is estimated (z / scale with a scale).
    """
    N = eps.numel()
    what = "kl_entropy" if scale is None else "kl_entropy of z / rms(z)"
    if scale is not None:
        eps = eps / scale
    n_small = int((eps < min_distance).sum()) if min_distance > 0 else int((eps == 0).sum())
    if n_small and min_distance == 0:
        raise ValueError(f"{n_small} of {N} samples have k-th neighbour distance 0 (duplicates); "
                         "the estimate is -inf — pass min_distance > 0 to floor it")
    if n_small:
        warnings.warn(f"{what}: {n_small} of {N} k-th neighbour distances are below "
                      f"min_distance={min_distance:g} and were floored; the estimate reflects the floor",
                      RuntimeWarning, stacklevel=3)
    log_eps = eps.clamp(min=min_distance).log() if min_distance > 0 else eps.log()
    if metric == "euclidean":
        log_vd = 0.5 * d * math.log(math.pi) - math.lgamma(1.0 + 0.5 * d)
    else:
        log_vd = d * math.log(2.0)
    return _digamma(N) - _digamma(k) + log_vd + d * float(log_eps.mean())


def kl_entropy(z, k=100, metric="euclidean", *, min_distance=1e-10, scale_free=False):
    r"""Kozachenko–Leonenko k-nearest-neighbour estimate of the differential entropy, in nats (Table 1).

    .. math::

        \hat H = \psi(N) - \psi(k) + \log V_d + \frac{d}{N}\sum_{i=1}^{N}\log\varepsilon_i

    with :math:`\varepsilon_i` the distance from :math:`z_i` to its k-th nearest
    *other* sample (the sample itself is excluded by index, not by value) and
    :math:`V_d` the volume of the unit ball of the chosen norm:

    * ``"euclidean"``: :math:`\log V_d = \tfrac{d}{2}\log\pi - \log\Gamma(1+\tfrac{d}{2})`
      (via ``lgamma``; Γ itself overflows for d ≳ 340);
    * ``"chebyshev"`` (max norm): :math:`\log V_d = d\log 2` — the form of the
      authors' code and of the widely used NPEET ``entropy()`` (which also adds
      1e-10 uniform jitter to break ties).

    Neighbour distances are exact (to float64 rounding), computed on z's device
    (CPU or GPU, torch only): candidates from a
    blocked matmul that visits each pair once (float32 when a probe shows its
    rigorous error bound is tight enough, else float64), ranked by a *lower
    bound* of the squared distance; candidates whose bracket straddles the k-th
    are recomputed as ‖a − b‖ in float64 (difference first), and a row whose k-th
    distance is not provably below every non-candidate's lower bound is redone
    exhaustively in float64.  (``torch.cdist``'s ‖a‖² + ‖b‖² − 2ab shortcut loses
    small distances in float32.)  The point itself is excluded by index, never by
    value.  Chebyshev distances are computed directly, O(N²d): minutes at
    N = 50,000 and d in the hundreds.  Both are O(N²) in time and bounded in
    memory (blocks of a few tens of MiB): 10,000 × 8 latents at k = 100 take
    about 1 s on one CPU core (2 s when near-collapsed latents need float64 keys).

    **Duplicates.**  Collapsed latents have :math:`\varepsilon_i = 0` and
    :math:`\log 0 = -\infty`; the estimate of a distribution with atoms *is*
    :math:`-\infty`.  Distances are therefore floored at ``min_distance`` (an
    absolute length, default 1e-10, warning when the floor binds), so a collapsed
    layer contributes :math:`d\log(\text{min\_distance})` per sample: the value is
    set by the floor and the dimension, not by the data.  The paper's −19,645 nats
    for WIDE IB on CIFAR-100 (d = 2,048, ≈ −9.6 nats per dimension) is an artefact
    of this kind: once a layer collapses, the estimate is d times the log of the
    scale of residual jitter or of the floor, so it says how small the jitter is,
    not how much information is kept, and it is not comparable across floors,
    dimensions or latent scales.

    Parameters
    ----------
    z : array-like of shape (N, d)
    k : int, default 100
        Neighbour order (Table 1 uses 100).  Needs N > k.
    metric : {"euclidean", "chebyshev"}, default "euclidean"
    min_distance : float, default 1e-10
        Absolute floor on :math:`\varepsilon_i`, in the units of ``z`` (of
        ``z / rms(z)`` when ``scale_free``).  With 0 a zero distance raises
        ``ValueError`` instead of returning −inf.
    scale_free : bool, default False
        Estimate the entropy of :math:`z/\mathrm{rms}(z)` instead of z (the
        ``entropy_rel`` of :func:`~lpc.metrics.geometry_summary`):

        .. math::

            \hat H_{\mathrm{rel}} = \hat H(z) - d\log\mathrm{rms}(z),\qquad
            \mathrm{rms}(z) = \sqrt{\frac{1}{Nd}\sum_i \|z_i - \bar z\|^2}
                          = \sqrt{\mathrm{Tr}(\Sigma_T)/d},

        :math:`\bar z` the mean of all samples.  The absolute estimate moves by
        :math:`d\log c` when z becomes c·z, so at d = 2,048 a network that merely
        shrinks its latents reads as thousands of nats "more compressed"; this one
        is unchanged by z → c·z (c ≠ 0), and, the rms being taken about the mean
        rather than the origin, by z → z + b too: a latent that drifts away from 0
        keeps its value.  It is at most about :math:`\tfrac d2\log(2\pi e)` (the
        Gaussian with the same total variance has the largest entropy) and falls
        without bound as the classes shrink relative to the distances between
        them.  The floor applies to :math:`\varepsilon_i/\mathrm{rms}(z)`, so the
        invariance is exact even where it binds.  NaN if every row of z is the
        same (rms = 0).

    Returns
    -------
    float
        Entropy estimate in nats (can be negative: it is a differential entropy).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).uniform(size=(2000, 1))   # H = log 1 = 0
    >>> abs(kl_entropy(z, k=10)) < 0.05
    True
    >>> abs(kl_entropy(1e-3 * z, k=10, scale_free=True) - kl_entropy(z, k=10, scale_free=True)) < 1e-9
    True
    """
    z = _check_z(z)
    N, d = z.shape
    k = _check_k(k, "k")
    if N <= k:
        raise ValueError(f"kl_entropy needs more samples than neighbours: N={N}, k={k}")
    if metric not in ("euclidean", "chebyshev"):
        raise ValueError(f"metric must be 'euclidean' or 'chebyshev'; got {metric!r}")
    if not (min_distance >= 0 and math.isfinite(min_distance)):
        raise ValueError(f"min_distance must be a finite number >= 0; got {min_distance!r}")
    scale = _rms(z) if scale_free else None
    if scale == 0.0:
        return float("nan")         # z / rms(z) is undefined
    return _kl_from_distances(_knn_distances(z, k, metric), d, k, metric, float(min_distance), scale)

