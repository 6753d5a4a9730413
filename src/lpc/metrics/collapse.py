"""Collapse of the latent classes: within-class covariance Σ_W, neural collapse NC1–NC4, norm spread.

Paper references are to "Latent point collapse induces an information bottleneck
in deep neural network classifiers": Eq. 7 (Σ_W), Appendix E Eqs. 28–29 (NC1),
Table 1 (Σ_W, coefficient of variation).  Neural-collapse conventions follow
Papyan, Han & Donoho (2020), "Prevalence of neural collapse during the terminal
phase of deep learning training".

Sign conventions: every quantity here shrinks as the latent collapses.
"""
from __future__ import annotations

import torch

from ._base import _Classes, _check_labels, _check_matrix, _check_z, _row_slices

__all__ = ["within_class_covariance", "within_class_variance_share", "neural_collapse", "norm_coeff_var"]


# --------------------------------------------------------------------------- Σ_W


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


def _within_share(cls, within_sq):
    # N·Tr(Σ_T) = Σ‖r_i‖² + Σ_k N_k‖μ_k − μ_G‖² (exact for the exact class means); summing the two
    # non-negative parts rather than a third pass keeps the share in [0, 1] and a collapsed layer at 0 exactly
    between_sq = (cls.counts * (cls.means - cls.global_mean).square().sum(1)).sum()
    total_sq = within_sq + between_sq
    return float(within_sq / total_sq) if total_sq > 0 else float("nan")


def within_class_variance_share(z, y):
    r"""Share of the latent variance that lies within classes: a scale-free Σ_W (``sigma_w_rel`` in summaries).

    .. math::

        \frac{\mathrm{Tr}(\Sigma_W)}{\mathrm{Tr}(\Sigma_T)}
        = 1 - \frac{\mathrm{Tr}(\Sigma_B^{(N)})}{\mathrm{Tr}(\Sigma_T)},\qquad
        \Sigma_T = \frac1N\sum_i (z_i-\mu_G)(z_i-\mu_G)^\top,\quad
        \Sigma_B^{(N)} = \frac1N\sum_k N_k(\mu_k-\mu_G)(\mu_k-\mu_G)^\top ,

    with :math:`\Sigma_W` of Eq. 7 (normalised by N, as in
    :func:`within_class_covariance`), :math:`\mu_G` the mean of all samples and
    :math:`\Sigma_T = \Sigma_W + \Sigma_B^{(N)}` the total covariance.  The
    between-class part here weights each class by its size (the variance
    decomposition), unlike the equal-weight :math:`\Sigma_B` of
    :func:`neural_collapse`.  It is :math:`1 - \eta^2`, the fraction of variance
    the class means leave unexplained.

    Where the paper's Σ_W (Table 1) changes by :math:`c^2` when a network
    rescales its latents z → c·z, this share does not; nor does it change under
    z → z + b or a rotation.  0 when every class is a single point, 1 when all
    class means coincide; for labels drawn at random (a random permutation of
    fixed class sizes) its expectation is exactly :math:`(N-K)/(N-1)`.  The
    denominator is computed as the sum of the two non-negative parts, so the
    value always lies in [0, 1].  NaN if all rows of z are equal (0/0).

    Parameters
    ----------
    z : array-like of shape (N, P)
    y : array-like of shape (N,)
        Integer class labels.

    Returns
    -------
    float
        In [0, 1]; lower is more collapsed.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[0.0, -1.0], [0.0, 1.0], [4.0, -1.0], [4.0, 1.0]])
    >>> within_class_variance_share(z, np.array([0, 0, 1, 1]))        # within 1, between 4 per sample
    0.2
    """
    z = _check_z(z)
    y = _check_labels(y, z.shape[0], z.device)
    cls = _Classes(z, y)
    return _within_share(cls, _within_pass(z, cls)[0])


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
