"""Latent-geometry metrics of a penultimate layer: Σ_W, neural collapse NC1–NC4, norm spread, entropy, binarity, codes.

Every public function is a pure function of a latent matrix ``z`` (N samples × P
dimensions) and, where needed, integer labels ``y``.  Inputs may be numpy arrays
or torch tensors; they are validated once at the boundary and the work runs in
torch on the device of ``z`` (float64 wherever a difference of nearly equal
numbers is taken; the one exception is the neighbour search of narrow CPU
latents, d ≤ 16, which uses scipy's exact KD-tree).  Results are plain Python
floats / ints, or small numpy arrays inside a dict.

Paper references are to "Latent point collapse induces an information bottleneck
in deep neural network classifiers": Eq. 7 (Σ_W), Appendix D Eqs. 25–27
(binarity), Appendix E Eqs. 28–29 (NC1), Table 1 (Σ_W, coefficient of variation,
Kozachenko–Leonenko entropy with k = 100).  Neural-collapse conventions follow
Papyan, Han & Donoho (2020), "Prevalence of neural collapse during the terminal
phase of deep learning training".

Sign conventions: every NC quantity, ``sigma_w``, ``norm_coeff_var``,
``entropy`` and ``binarity_sigma`` shrinks as the latent collapses;
``binarity_loglik``, ``binarity_peak_distance`` and ``code_decode_accuracy`` grow.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma

__all__ = [
    "within_class_covariance",
    "neural_collapse",
    "norm_coeff_var",
    "kl_entropy",
    "binarity",
    "hypercube_code",
    "geometry_summary",
]

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


def _within_pass(z, cls, *, matrix=False, basis=None):
    """One chunked pass over the residuals r_i = z_i − μ_{y_i}.

    Returns Σ‖r_i‖², the per-class Σ (1ᵀ r_i)² (for the authors' Σ_W scalar), and
    optionally Σ r_i r_iᵀ and Σ_i (r_i · v_j)² for the columns v_j of ``basis``.
    """
    dev = z.device
    sq = torch.zeros((), dtype=torch.float64, device=dev)
    rowsum_sq = torch.zeros(cls.K, dtype=torch.float64, device=dev)
    mat = torch.zeros(cls.P, cls.P, dtype=torch.float64, device=dev) if matrix else None
    proj = torch.zeros(basis.shape[1], dtype=torch.float64, device=dev) if basis is not None else None
    for sl in _row_slices(cls.N, cls.P):
        inv = cls.inv[sl]
        r = z[sl].to(torch.float64) - cls.means[inv]
        sq += (r * r).sum()
        s = r.sum(1)
        rowsum_sq.index_add_(0, inv, s * s)
        if matrix:
            mat.addmm_(r.T, r)
        if basis is not None:
            pr = r @ basis
            proj += (pr * pr).sum(0)
    return sq, rowsum_sq, mat, proj


def _authors_sigma_w(cls, rowsum_sq):
    # mean of the entries of C_k = (1/P²)·1ᵀC_k1 = (1/(N_k P²)) Σ_{i∈k} (1ᵀ r_i)²; no P×P matrix needed.
    return float((rowsum_sq / cls.counts).mean() / cls.P**2)


def within_class_covariance(z, y):
    r"""Within-class covariance of the latents (paper Eq. 7) and the two scalars reported from it.

    .. math::

        \Sigma_W = \frac{1}{N}\sum_{i=1}^{N} (z_i - \mu_{y_i})(z_i - \mu_{y_i})^\top,
        \qquad \mu_k = \frac{1}{N_k}\sum_{i: y_i = k} z_i .

    Two scalar summaries are returned, and they are *different* numbers:

    * ``trace_per_dim`` = :math:`\mathrm{Tr}(\Sigma_W)/P`, the mean within-class
      variance per latent dimension.  (Eq. 7 writes the class index as p and the
      normalisation as :math:`1/(NP)`; the matrix here is normalised by N only.)
    * ``class_mean_entries`` = the scalar of the authors' code and of the paper's
      Table 1 "Σ_W" column: the per-class covariance matrices
      :math:`C_k = \frac{1}{N_k}\sum_{i\in k}(z_i-\mu_k)(z_i-\mu_k)^\top` (biased,
      :math:`1/N_k`), averaged over classes with equal weight, then the mean of all
      :math:`P^2` entries of that average.  Off-diagonal entries enter with their
      sign, so this equals :math:`\frac{1}{K}\sum_k \mathrm{Var}_k(\sum_p z_p)/P^2`
      (how it is computed, without forming any P × P matrix).  ``np.cov`` defaults
      to :math:`1/(N_k-1)`; the difference is a factor :math:`N_k/(N_k-1)`.

    Parameters
    ----------
    z : array-like of shape (N, P)
        Latent representations (numpy or torch; computed in float64 on ``z``'s device).
    y : array-like of shape (N,)
        Integer class labels; the classes are the distinct labels present.

    Returns
    -------
    dict
        ``matrix`` : ndarray (P, P), float64, :math:`\Sigma_W`;
        ``trace_per_dim`` : float;
        ``class_mean_entries`` : float (Table 1 "Σ_W").

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> within_class_covariance(z, np.array([0, 0, 1, 1]))["trace_per_dim"]
    0.0
    """
    z = _check_z(z)
    y = _check_labels(y, z.shape[0], z.device)
    cls = _Classes(z, y)
    sq, rowsum_sq, mat, _ = _within_pass(z, cls, matrix=True)
    return {
        "matrix": (mat / cls.N).cpu().numpy(),
        "trace_per_dim": float(sq / (cls.N * cls.P)),
        "class_mean_entries": _authors_sigma_w(cls, rowsum_sq),
    }


# --------------------------------------------------------------------------- neural collapse


def _between_class_basis(cls):
    """Eigen-decomposition of Σ_B = (1/K) Σ_k M_kᵀ M_k restricted to its top min(K−1, P) components.

    Taken from the SVD of the K × P centred-means matrix M (float64): its right
    singular vectors are Σ_B's eigenvectors and s²/K its eigenvalues, so the P × P
    matrix is never formed and the condition number is not squared.  Components
    beyond K−1 are noise (Σ_B has rank ≤ K−1 by construction); components below
    max(K, P)·eps·λ_max are dropped as numerically zero, as ``np.linalg.pinv`` does.
    """
    M = cls.means - cls.global_mean
    _, s, vh = torch.linalg.svd(M, full_matrices=False)
    lam = s * s / cls.K
    r = min(cls.K - 1, cls.P)
    if lam.numel() == 0 or float(lam[0]) <= 0.0:
        r = 0
    else:
        tol = max(cls.K, cls.P) * torch.finfo(torch.float64).eps * lam[0]
        r = min(r, int((lam > tol).sum()))
    return M, lam[:r], vh[:r].T


def _ncc_predictions(z, cls, M):
    """Nearest-class-mean label of every row (ties → lowest class index)."""
    out = torch.empty(cls.N, dtype=torch.long, device=z.device)
    m_sq = (M * M).sum(1)
    for sl in _row_slices(cls.N, max(cls.P, cls.K)):
        # ‖z−μ_k‖² up to the row constant ‖z−μ_G‖²; centring on μ_G keeps the terms small.
        zc = z[sl].to(torch.float64) - cls.global_mean
        out[sl] = torch.argmin(m_sq[None, :] - 2.0 * zc @ M.T, dim=1)
    return cls.labels[out]


def _nc_from_classes(z, cls, W, logits):
    if cls.K < 2:
        raise ValueError(f"neural collapse needs at least two classes; got {cls.K}")
    M, lam, basis = _between_class_basis(cls)
    sq, rowsum_sq, _, proj = _within_pass(z, cls, basis=basis)
    K, P, N = cls.K, cls.P, cls.N
    # Tr(Σ_W Σ_B⁺) = Σ_j λ_j⁻¹ v_jᵀ Σ_W v_j with v_jᵀ Σ_W v_j = (1/N) Σ_i (r_i·v_j)².
    nc1 = float((proj / N / lam).sum() / K) if lam.numel() else float("nan")
    norms = M.norm(dim=1)
    mean_norm = norms.mean()
    equinorm = float(norms.std(correction=1) / mean_norm) if mean_norm > 0 else float("nan")
    if bool((norms > 0).all()):
        U = M / norms[:, None]
        iu = torch.triu_indices(K, K, 1, device=z.device)
        cos = (U @ U.T)[iu[0], iu[1]]
        equiangularity = float(cos.std(correction=1)) if cos.numel() > 1 else 0.0
        max_angle = float((cos + 1.0 / (K - 1)).abs().mean())
    else:
        equiangularity = max_angle = float("nan")
    out = {
        "nc1": nc1,
        "nc1_per_dim": nc1 / P,
        "equinorm": equinorm,
        "equiangularity": equiangularity,
        "max_angle": max_angle,
    }
    if W is not None:
        Wk = W[cls.labels].to(torch.float64)
        wn, mn = Wk.norm(), M.norm()
        out["nc3"] = float((Wk / wn - M / mn).norm()) if wn > 0 and mn > 0 else float("nan")
    if logits is not None:
        ncc = _ncc_predictions(z, cls, M)
        out["nc4"] = float((ncc != logits.argmax(1)).to(torch.float64).mean())
    stats = {"sq": sq, "rowsum_sq": rowsum_sq}
    return out, stats


def _prepare_nc_inputs(z, y, W, logits, group_by):
    z = _check_z(z)
    N, P = z.shape
    y = _check_labels(y, N, z.device)
    if group_by not in ("true", "predicted"):
        raise ValueError(f"group_by must be 'true' or 'predicted'; got {group_by!r}")
    if logits is not None:
        logits = _check_matrix(logits, "logits", f"(N={N}, C)", N, None, z.device)
    if W is not None:
        W = _check_matrix(W, "W", f"(C, P={P})", None, P, z.device)
    if group_by == "predicted":
        if logits is None:
            raise ValueError("group_by='predicted' needs logits (groups are argmax(logits))")
        groups = logits.argmax(1)
    else:
        groups = y
    for arr, name, size in ((W, "W", W.shape[0] if W is not None else 0),
                            (logits, "logits", logits.shape[1] if logits is not None else 0)):
        lo, hi = int(groups.min()), int(groups.max())
        if arr is not None and (lo < 0 or hi >= size):
            raise ValueError(f"labels must lie in [0, {size}) to index the classes of {name}; got [{lo}, {hi}]")
    return z, groups, W, logits


def neural_collapse(z, y, W=None, logits=None, *, group_by="true"):
    r"""Neural-collapse metrics NC1–NC4 (Papyan et al. 2020; paper Appendix E, Eqs. 28–29, Fig. 3).

    With class means :math:`\mu_k`, the global mean :math:`\mu_G` of **all samples**
    (Papyan's choice; equal to the mean of class means only for balanced classes),
    centred means :math:`M_k = \mu_k - \mu_G` and

    .. math::

        \Sigma_W = \frac{1}{N}\sum_i (z_i-\mu_{y_i})(z_i-\mu_{y_i})^\top,\qquad
        \Sigma_B = \frac{1}{K}\sum_k M_k M_k^\top ,

    the returned quantities are

    * ``nc1`` = :math:`\mathrm{Tr}(\Sigma_W\Sigma_B^{+})/K` and ``nc1_per_dim`` =
      ``nc1``/P, the renormalised form of the paper's Fig. 3 (Eqs. 28–29 write
      the class index as p and the class count as P).  :math:`\Sigma_B^{+}`
      comes from the float64 eigen-decomposition of :math:`\Sigma_B` (taken as
      the SVD of the K × P matrix M: eigenvalues :math:`s^2/K`) keeping its top
      :math:`\min(K-1, P)` components (and none below max(K,P)·eps·λ_max): a
      float32 ``pinv`` with default tolerance keeps noise eigenvalues when P > K
      and inflates NC1.  NaN if all class means coincide (Σ_B = 0).
    * NC2: ``equinorm`` = std/mean of :math:`\|M_k\|`; ``equiangularity`` = std of the
      :math:`K(K-1)/2` pairwise cosines :math:`\cos(M_k, M_l)`, k < l (0 for K = 2);
      both stds use the unbiased estimator (``torch.std``'s default, as in Papyan's
      reference code).  ``max_angle`` = mean over pairs of
      :math:`|\cos(M_k,M_l) + 1/(K-1)|`.  Cosines are NaN if some :math:`M_k = 0`.
    * ``nc3`` (only if ``W`` given) = :math:`\|W/\|W\|_F - M/\|M\|_F\|_F`, **not
      squared** (the widely copied reference notebook of Papyan & Han reports its
      square: compare with ``nc3**2``).  Rows of ``W`` are indexed by label.
    * ``nc4`` (only if ``logits`` given) = fraction of samples whose
      nearest-class-mean label (Euclidean, ties → lowest label) differs from
      ``argmax(logits)``.  Class means come from the same ``z``.

    Parameters
    ----------
    z : array-like of shape (N, P)
        Latents.
    y : array-like of shape (N,)
        Integer labels.  With ``W`` or ``logits`` they index its rows/columns, so
        they must lie in [0, C).
    W : array-like of shape (C, P), optional
        Last-layer classifier weights.
    logits : array-like of shape (N, C), optional
        Network outputs for the same samples.
    group_by : {"true", "predicted"}, default "true"
        "true" groups samples by ``y`` (Papyan).  "predicted" groups them by
        ``argmax(logits)`` as the authors' code does; it needs ``logits``.

    Returns
    -------
    dict of float
        ``nc1``, ``nc1_per_dim``, ``equinorm``, ``equiangularity``, ``max_angle``,
        plus ``nc3`` / ``nc4`` when ``W`` / ``logits`` are given.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.repeat(np.eye(3) - 1 / 3, 4, axis=0)      # a collapsed simplex
    >>> out = neural_collapse(z, np.repeat([0, 1, 2], 4))
    >>> round(out["nc1"], 12), round(out["max_angle"], 12)
    (0.0, 0.0)
    """
    z, groups, W, logits = _prepare_nc_inputs(z, y, W, logits, group_by)
    out, _ = _nc_from_classes(z, _Classes(z, groups), W, logits)
    return out


# --------------------------------------------------------------------------- norm spread


def _norm_cv(z):
    norms = torch.cat([z[sl].to(torch.float64).norm(dim=1) for sl in _row_slices(z.shape[0], z.shape[1])])
    mean = norms.mean()
    return float(norms.std(correction=0) / mean) if mean > 0 else float("nan")


def norm_coeff_var(z):
    r"""Coefficient of variation of the latent norms (paper Table 1, second column).

    .. math:: \mathrm{CV} = \frac{\mathrm{std}_i \|z_i\|}{\mathrm{mean}_i \|z_i\|}

    with the population standard deviation (ddof = 0).  Collapse points at a
    common distance from the origin give CV → 0 (paper Sec. 3.1, App. A).

    Parameters
    ----------
    z : array-like of shape (N, P)

    Returns
    -------
    float
        NaN only if every ``z_i`` is exactly zero (the ratio is 0/0).

    Examples
    --------
    >>> import numpy as np
    >>> norm_coeff_var(np.array([[3.0, 4.0], [0.0, 5.0]]))
    0.0
    """
    return _norm_cv(_check_z(z))


# --------------------------------------------------------------------------- entropy

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


# Up to this dimension a KD-tree beats the all-pairs sweep on CPU (measured: at
# N = 50,000, k = 100 the tree takes ~8 s at d = 8 and ~37 s at d = 32).
_TREE_MAX_DIM = 16


def _knn_distances(z, k, metric):
    """k-th nearest-other-point distance of every row (float64, exact), on the best path for z."""
    if z.device.type == "cpu" and z.shape[1] <= _TREE_MAX_DIM:
        # scipy's KD-tree measures differences directly in float64, so it is exact; the
        # query returns the point itself among k + 1 neighbours (one distance 0 more, so
        # the (k+1)-th value is the k-th nearest *other* point even with duplicates)
        x = z.to(torch.float64).numpy()
        p = 2 if metric == "euclidean" else math.inf
        dist = cKDTree(x).query(x, k + 1, p=p, workers=torch.get_num_threads())[0]
        return torch.from_numpy(np.ascontiguousarray(dist[:, -1]))
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


def _kl_entropy(z, k, metric, min_distance):
    N, d = z.shape
    eps = _knn_distances(z, k, metric)
    n_small = int((eps < min_distance).sum()) if min_distance > 0 else int((eps == 0).sum())
    if n_small and min_distance == 0:
        raise ValueError(f"{n_small} of {N} samples have k-th neighbour distance 0 (duplicates); "
                         "the estimate is -inf — pass min_distance > 0 to floor it")
    if n_small:
        warnings.warn(f"kl_entropy: {n_small} of {N} k-th neighbour distances are below "
                      f"min_distance={min_distance:g} and were floored; the estimate reflects the floor",
                      RuntimeWarning, stacklevel=3)
    log_eps = eps.clamp(min=min_distance).log() if min_distance > 0 else eps.log()
    if metric == "euclidean":
        log_vd = 0.5 * d * math.log(math.pi) - math.lgamma(1.0 + 0.5 * d)
    else:
        log_vd = d * math.log(2.0)
    return float(digamma(N) - digamma(k) + log_vd + d * float(log_eps.mean()))


def kl_entropy(z, k=100, metric="euclidean", *, min_distance=1e-10):
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

    Neighbour distances are exact (to float64 rounding).  On CPU with d ≤ 16 they
    come from scipy's KD-tree (``workers`` = torch's thread count), which is the
    fastest exact method there.  Otherwise, on z's device: candidates from a
    blocked matmul that visits each pair once (float32 when a probe shows its
    rigorous error bound is tight enough, else float64), ranked by a *lower
    bound* of the squared distance; candidates whose bracket straddles the k-th
    are recomputed as ‖a − b‖ in float64 (difference first), and a row whose k-th
    distance is not provably below every non-candidate's lower bound is redone
    exhaustively in float64.  (``torch.cdist``'s ‖a‖² + ‖b‖² − 2ab shortcut loses
    small distances in float32.)  The point itself is excluded by index, never by
    value.  Chebyshev beyond d = 16 is computed directly, O(N²d): minutes at
    N = 50,000 and d in the hundreds.

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
        Absolute floor on :math:`\varepsilon_i`, in the units of ``z``.  With 0 a
        zero distance raises ``ValueError`` instead of returning −inf.

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
    return _kl_entropy(z, k, metric, float(min_distance))


# --------------------------------------------------------------------------- binarity


def _column_blocks(z, width=64):
    """Yield (x, mean, var): x is the float64 (Pc, N) transpose of ≤ ``width`` columns of z.

    Dimension-major blocks make every per-dimension reduction contiguous; the
    width keeps each (Pc, N) temporary near ``_BLOCK`` elements.
    """
    N, P = z.shape
    step = max(1, min(width, _BLOCK // N))
    for p0 in range(0, P, step):
        x = z[:, p0:p0 + step].T.to(torch.float64).contiguous()
        mean = x.mean(1)
        yield x, mean, (x - mean[:, None]).square_().mean(1)


def _two_means(x, mean, var, max_iter=300, tol=1e-4):
    """Batched 1-D 2-means (Lloyd) on the rows of x; returns centres (Pc, 2) with c0 ≤ c1.

    Deterministic start at mean ± std; a row stops, as in sklearn's KMeans, when
    its squared centre shift ≤ tol·var.  Converged rows drop out of the passes.
    """
    Pc, N = x.shape
    std = var.sqrt()
    c = torch.stack([mean - std, mean + std], 1)
    total = mean * N
    idx, xa = torch.arange(Pc, device=x.device), x
    for _ in range(max_iter):
        ca = c[idx]
        upper = xa > ca.mean(1)[:, None]
        n1 = upper.sum(1).to(torch.float64)
        s1 = torch.where(upper, xa, 0.0).sum(1)
        n0 = N - n1
        new = torch.stack([
            torch.where(n0 > 0, (total[idx] - s1) / n0.clamp(min=1), ca[:, 0]),
            torch.where(n1 > 0, s1 / n1.clamp(min=1), ca[:, 1]),
        ], 1)
        c[idx] = new
        moving = ((new - ca) ** 2).sum(1) > tol * var[idx]
        if not bool(moving.any()):
            break
        if not bool(moving.all()):
            idx, xa = idx[moving], xa[moving]
    return c.sort(1).values


def _gmm2_fit(xx, var, reg_covar, tol, max_iter):
    """Batched EM of a 2-component 1-D Gaussian mixture on each row, float64.

    ``xx`` is (Pc, 2, N): row-centred values and their squares; ``var`` their
    per-row variance.  Mirrors sklearn's GaussianMixture (init_params='kmeans',
    'full' covariance in 1-D): hard 2-means responsibilities → M-step → loop
    {E-step, M-step} until the mean log-likelihood evaluated at the E-step
    changes by < tol.  Converged rows are frozen and dropped from later passes.
    Returns weights, means, variances (Pc, 2), the final mean log-likelihood
    (Pc,), iteration counts and convergence flags.
    """
    Pc, _, N = xx.shape
    tiny = 10 * torch.finfo(torch.float64).eps   # sklearn's guard on empty components
    sx, sx2 = xx.sum(2).unbind(1)

    def m_step(sel, n1, s1, q1):
        nk1 = n1 + tiny
        nk0 = (N - n1) + tiny
        s0, q0 = sx[sel] - s1, sx2[sel] - q1
        mu0, mu1 = s0 / nk0, s1 / nk1
        # Σ r (x−μ)² = q − 2μs + μ²n: on row-centred data, and with reg_covar
        # added, the cancellation stays far below anything that matters
        v0 = (q0 - 2 * mu0 * s0 + mu0 * mu0 * (N - n1)).clamp(min=0) / nk0 + reg_covar
        v1 = (q1 - 2 * mu1 * s1 + mu1 * mu1 * n1).clamp(min=0) / nk1 + reg_covar
        tot = nk0 + nk1
        return (torch.stack([nk0 / tot, nk1 / tot], 1), torch.stack([mu0, mu1], 1),
                torch.stack([v0, v1], 1))

    def e_step(sel, xa, w, mu, v):
        # log(w_c N(x; μ_c, v_c)) = α_c x² + β_c x + γ_c, so t = d₁ − d₀ is quadratic in x
        a = -0.5 / v
        b = mu / v
        g = w.log() - 0.5 * torch.log(2 * math.pi * v) - 0.5 * mu * mu / v
        t = torch.addcmul((g[:, 1] - g[:, 0])[:, None], xa[:, 1], (a[:, 1] - a[:, 0])[:, None])
        t.addcmul_(xa[:, 0], (b[:, 1] - b[:, 0])[:, None])
        relu = t.clamp(min=0).sum(1)
        r1 = torch.sigmoid_(t)
        # log p(x) = d₀ + softplus(t) and softplus(t) = relu(t) − log max(r₁, 1 − r₁):
        # one transcendental pass fewer than softplus, no underflow (the max is ≥ ½),
        # and Σ d₀ comes from the moments
        log_max = (r1 - 0.5).abs_().add_(0.5).log_().sum(1)
        ll = (a[:, 0] * sx2[sel] + b[:, 0] * sx[sel] + N * g[:, 0] + relu - log_max) / N
        return ll, r1

    def sums(r, xa):
        s = torch.bmm(r.unsqueeze(1), xa.transpose(1, 2)).squeeze(1)
        return r.sum(1), s[:, 0], s[:, 1]

    every = torch.arange(Pc, device=xx.device)
    c = _two_means(xx[:, 0], torch.zeros_like(var), var)
    upper = (xx[:, 0] > c.mean(1)[:, None]).to(torch.float64)
    w, mu, v = m_step(every, *sums(upper, xx))
    del upper

    n_iter = torch.zeros(Pc, dtype=torch.long, device=xx.device)
    converged = torch.zeros(Pc, dtype=torch.bool, device=xx.device)
    prev = torch.full((Pc,), -math.inf, dtype=torch.float64, device=xx.device)
    sel, xa = every, xx
    for it in range(1, max_iter + 1):
        ll, r1 = e_step(sel, xa, w[sel], mu[sel], v[sel])
        w[sel], mu[sel], v[sel] = m_step(sel, *sums(r1, xa))
        del r1
        n_iter[sel] = it
        done = (ll - prev[sel]).abs() < tol
        prev[sel] = ll
        converged[sel[done]] = True
        if bool(done.all()):
            break
        if bool(done.any()):
            sel, xa = sel[~done], xa[~done]
    score, _ = e_step(every, xx, w, mu, v)
    return w, mu, v, score, n_iter, converged


def _binarity(z, standardize, max_iter, tol, reg_covar):
    res = {key: [] for key in ("w", "mu", "var", "ll", "n_iter", "conv", "center", "scale")}
    for x, center, var in _column_blocks(z):
        scale = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
        xx = torch.empty(x.shape[0], 2, x.shape[1], dtype=torch.float64, device=x.device)
        torch.sub(x, center[:, None], out=xx[:, 0])
        del x
        if standardize:
            xx[:, 0].div_(scale[:, None])
            var = var / scale**2
            offset = torch.zeros_like(center)
        else:
            offset = center
            center, scale = torch.zeros_like(center), torch.ones_like(scale)
        torch.mul(xx[:, 0], xx[:, 0], out=xx[:, 1])
        w, mu, v, ll, n_iter, conv = _gmm2_fit(xx, var, reg_covar, tol, max_iter)
        del xx
        order = mu.argsort(1)
        for key, val in (("w", w.gather(1, order)), ("mu", mu.gather(1, order) + offset[:, None]),
                         ("var", v.gather(1, order)), ("ll", ll), ("n_iter", n_iter),
                         ("conv", conv), ("center", center), ("scale", scale)):
            res[key].append(val)
    cat = {key: torch.cat(val).cpu() for key, val in res.items()}
    std = cat["var"].sqrt()
    sig = std.mean(1)
    peak = (cat["mu"][:, 1] - cat["mu"][:, 0]).abs() / sig
    return {
        "loglik": float(cat["ll"].mean()),
        "sigma": float(sig.mean()),
        "peak_distance": float(peak.mean()),
        "loglik_per_dim": cat["ll"].tolist(),
        "sigma_per_dim": sig.tolist(),
        "peak_distance_per_dim": peak.tolist(),
        "means": cat["mu"].numpy(),
        "stds": std.numpy(),
        "weights": cat["w"].numpy(),
        "center": cat["center"].numpy(),
        "scale": cat["scale"].numpy(),
        "n_iter": cat["n_iter"].numpy(),
        "converged_fraction": float(cat["conv"].to(torch.float64).mean()),
    }


def binarity(z, *, standardize=True, max_iter=100, tol=1e-3, reg_covar=1e-6, seed=0):
    r"""Binarity of each latent dimension: a 2-component 1-D Gaussian mixture per dimension (App. D).

    For every dimension p a mixture :math:`w_1\mathcal N(\mu_1,\sigma_1^2) +
    w_2\mathcal N(\mu_2,\sigma_2^2)` (ordered :math:`\mu_1 \le \mu_2`) is fitted
    to the N values :math:`z^{(n)}_p`, and

    .. math::

        \bar\ell = \frac{1}{NP}\sum_{n}\sum_{p}\log\Big(\sum_{c=1}^{2}
            w_{p,c}\,\mathcal N(z^{(n)}_p;\mu_{p,c},\sigma_{p,c}^2)\Big)
            \quad\text{(Eq. 25)}

        \bar\sigma = \frac{1}{P}\sum_p \frac{\sigma_{p,1}+\sigma_{p,2}}{2}
            \quad\text{(Eq. 26)},\qquad
        \bar\mu = \frac{1}{P}\sum_p \frac{|\mu_{p,2}-\mu_{p,1}|}{(\sigma_{p,1}+\sigma_{p,2})/2}
            \quad\text{(Eq. 27)} .

    The fit reproduces ``sklearn.mixture.GaussianMixture(n_components=2,
    reg_covar, tol, max_iter, init_params='kmeans')`` run on each dimension
    separately: hard 1-D 2-means initial responsibilities, then EM with
    :math:`\sigma^2 = \widehat{\mathrm{var}} + \text{reg\_covar}` and stop when the
    mean log-likelihood changes by < ``tol``.  All P dimensions are fitted at
    once (batched EM in float64; converged dimensions drop out).  The 2-means
    initialisation is deterministic (centres start at mean ± std), so ``seed`` is
    accepted for API symmetry but has no effect.  On bimodal dimensions
    sklearn's k-means++ seeding reaches the same split and the fits agree to
    rounding; on unimodal or many-mode dimensions EM has several local optima
    and either initialisation may land in a different one.

    ``reg_covar`` is added to each component's variance (sklearn's
    regularisation), so :math:`\sigma \ge \sqrt{\text{reg\_covar}}`.

    **standardize (default True)** — each dimension is first mapped to zero mean
    and unit (population) variance, as the authors' code does.  Then the results
    are scale free: the floor is :math:`\sigma \ge 10^{-3}` *of the dimension's
    spread*, so a perfectly collapsed balanced binary dimension scores
    :math:`\bar\sigma \approx 10^{-3}` and :math:`\bar\mu \approx 2000`;
    :math:`\bar\sigma` and :math:`\bar\mu` compare across layers and epochs
    whatever the latent scale; and :math:`\bar\ell` is the log-density of the
    standardised values (the raw-unit value is
    :math:`\bar\ell - \frac1P\sum_p\log s_p` for per-dimension stds
    :math:`s_p`).  With ``standardize=False`` the floor is absolute: IB latents
    at ~1e-4 scale have variances ~1e-8, 1e-6 is added to them, so
    :math:`\bar\sigma \approx 10^{-3}` measures the floor, not the data, and the
    two modes are not resolved.  A constant dimension is only centred (scale 1).

    Parameters
    ----------
    z : array-like of shape (N, P)
    standardize : bool, default True
    max_iter : int, default 100
    tol : float, default 1e-3
    reg_covar : float, default 1e-6
    seed : int, default 0
        Unused (deterministic initialisation); kept for a stable signature.

    Returns
    -------
    dict
        ``loglik`` (:math:`\bar\ell`), ``sigma`` (:math:`\bar\sigma`),
        ``peak_distance`` (:math:`\bar\mu`) as floats; ``loglik_per_dim``,
        ``sigma_per_dim``, ``peak_distance_per_dim`` as lists of P floats;
        ``means``, ``stds``, ``weights`` as (P, 2) float64 arrays in the fitted
        (standardised, if so) units; ``center``, ``scale`` (P,) arrays of the
        standardisation (0 and 1 if none); ``n_iter`` (P,) int array and
        ``converged_fraction`` float.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = np.sign(rng.standard_normal((400, 3))) + 0.01 * rng.standard_normal((400, 3))
    >>> out = binarity(z)
    >>> out["sigma"] < 0.05 and out["peak_distance"] > 50
    True
    """
    z = _check_z(z)
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
    if not (tol > 0):
        raise ValueError(f"tol must be > 0; got {tol!r}")
    if not (reg_covar >= 0):
        raise ValueError(f"reg_covar must be >= 0; got {reg_covar!r}")
    N, P = z.shape
    if N < 2:
        raise ValueError(f"binarity needs at least 2 samples; got N={N}")
    return _binarity(z, standardize, int(max_iter), float(tol), float(reg_covar))


# --------------------------------------------------------------------------- hypercube codes


def _code_from_classes(z, cls):
    thr = torch.cat([_two_means(x, mean, var).mean(1) for x, mean, var in _column_blocks(z)])
    codes = (cls.means > thr).to(torch.float32)  # (K, P)
    ones = torch.ones_like(codes)
    agree = 0
    correct = 0
    for sl in _row_slices(cls.N, max(cls.P, cls.K)):
        pat = (z[sl].to(torch.float64) > thr).to(torch.float32)
        inv = cls.inv[sl]
        agree += int((pat == codes[inv]).all(1).sum())
        # Hamming = p·(1−c) + (1−p)·c, exact in float32 for P < 2²⁴
        ham = pat @ (ones - codes).T + (1.0 - pat) @ codes.T
        correct += int((torch.argmin(ham, dim=1) == inv).sum())
    ci = codes.to(torch.int64)
    hamming = (ci[:, None, :] != ci[None, :, :]).sum(-1)
    return {
        "classes": cls.labels.cpu().tolist(),
        "midpoints": thr.cpu().numpy(),
        "codes": ci.cpu().numpy(),
        "code_vertices": int(torch.unique(ci, dim=0).shape[0]),
        "hamming": hamming.cpu().numpy(),
        "sample_code_agreement": agree / cls.N,
        "decode_accuracy": correct / cls.N,
    }


def hypercube_code(z, y):
    r"""Read the latent layer as a binary code: which hypercube vertex each class occupies (Sec. 2.2, App. D).

    For each dimension p the threshold :math:`m_p` is the midpoint of the two
    centres of a 1-D 2-means fit (the same deterministic 2-means that initialises
    :func:`binarity`; for two tight modes it is the midpoint between them and it
    does not depend on EM converging).  Then

    * class code :math:`c_{k,p} = [\mu_{k,p} > m_p] \in \{0, 1\}` (class mean
      above the threshold; a value exactly at the threshold maps to 0);
    * ``code_vertices`` = number of distinct codes among the K classes (K when
      every class sits on its own vertex);
    * ``hamming`` = K × K matrix of pairwise Hamming distances between class codes;
    * ``sample_code_agreement`` = fraction of samples whose own pattern
      :math:`[z_{i,p} > m_p]` equals the code of their class;
    * ``decode_accuracy`` = fraction of samples whose pattern is nearest in
      Hamming distance to their own class's code.  Ties go to the lowest class
      label, so when two classes share a code the higher-labelled one can never
      be decoded (``code_vertices < K`` signals it).

    Parameters
    ----------
    z : array-like of shape (N, P)
    y : array-like of shape (N,)
        Integer labels; rows of ``codes`` follow ``classes`` (sorted labels).

    Returns
    -------
    dict
        ``classes`` (list), ``midpoints`` (P,), ``codes`` (K, P) int array,
        ``code_vertices`` int, ``hamming`` (K, K) int array,
        ``sample_code_agreement`` float, ``decode_accuracy`` float.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[1.0, -1.0], [0.9, -1.1], [-1.0, 1.0], [-1.1, 0.9]])
    >>> hypercube_code(z, np.array([0, 0, 1, 1]))["codes"].tolist()
    [[1, 0], [0, 1]]
    """
    z = _check_z(z)
    y = _check_labels(y, z.shape[0], z.device)
    return _code_from_classes(z, _Classes(z, y))


# --------------------------------------------------------------------------- summary


def geometry_summary(z, y, *, logits=None, W=None, entropy=True, entropy_k=100, binarity=True, code=True):
    r"""All scalar geometry metrics of one latent matrix, as a flat dict of Python numbers.

    Class statistics are computed once and shared; the P × P Σ_W matrix is never
    formed.  Keys (the trainer appends ``_train`` / ``_test``):

    ========================== ============================================================
    ``sigma_w``                 Table 1 "Σ_W": authors' scalar, see :func:`within_class_covariance`
    ``sigma_w_trace``           Tr(Σ_W)/P (Eq. 7)
    ``nc1``, ``nc1_per_dim``    Tr(Σ_W Σ_B⁺)/K and its /P form (Eqs. 28–29, Fig. 3)
    ``equinorm``,               NC2 (Papyan et al. 2020), see :func:`neural_collapse`
    ``equiangularity``,
    ``max_angle``
    ``nc3``                     only if ``W`` is given (unsquared)
    ``nc4``                     only if ``logits`` is given
    ``norm_coeff_var``          Table 1 coefficient of variation
    ``entropy``                 only if ``entropy``; Euclidean KL estimate, nats
    ``binarity_loglik``,        Eqs. 25–27 with the defaults of :func:`binarity`
    ``binarity_sigma``,         (standardised dimensions); only if ``binarity``
    ``binarity_peak_distance``
    ``code_vertices``,          from :func:`hypercube_code`; only if ``code``
    ``code_decode_accuracy``
    ========================== ============================================================

    Groups are the true labels (at least two classes are needed).  ``entropy``
    uses ``k = min(entropy_k, N − 1)`` so small evaluation sets still get a
    value, with the default floor ``min_distance = 1e-10``.  No value is ever
    None; one is NaN only where the quantity is undefined (documented in the
    function that computes it: all class means equal, a zero centred class
    mean, all-zero latents).

    Parameters
    ----------
    z : array-like of shape (N, P)
    y : array-like of shape (N,)
    logits : array-like of shape (N, C), optional
    W : array-like of shape (C, P), optional
    entropy, binarity, code : bool, default True
        Skip the costlier metrics when False.
    entropy_k : int, default 100

    Returns
    -------
    dict
        str → float | int | None.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(4), 50)
    >>> z = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])[y] + 1e-3 * rng.standard_normal((200, 2))
    >>> s = geometry_summary(z, y, entropy_k=10)
    >>> s["code_vertices"], s["code_decode_accuracy"]
    (4, 1.0)
    """
    z_t, groups, W_t, logits_t = _prepare_nc_inputs(z, y, W, logits, "true")
    cls = _Classes(z_t, groups)
    nc, stats = _nc_from_classes(z_t, cls, W_t, logits_t)
    out = {
        "sigma_w": _authors_sigma_w(cls, stats["rowsum_sq"]),
        "sigma_w_trace": float(stats["sq"] / (cls.N * cls.P)),
    }
    out.update(nc)
    out["norm_coeff_var"] = _norm_cv(z_t)
    if entropy:
        out["entropy"] = _kl_entropy(z_t, min(_check_k(entropy_k, "entropy_k"), cls.N - 1), "euclidean", 1e-10)
    if binarity:
        b = _binarity(z_t, True, 100, 1e-3, 1e-6)
        out["binarity_loglik"] = b["loglik"]
        out["binarity_sigma"] = b["sigma"]
        out["binarity_peak_distance"] = b["peak_distance"]
    if code:
        c = _code_from_classes(z_t, cls)
        out["code_vertices"] = c["code_vertices"]
        out["code_decode_accuracy"] = c["decode_accuracy"]
    return out
