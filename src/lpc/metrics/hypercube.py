"""Binarity of each latent dimension (a 2-component GMM per dimension) and the hypercube code the classes spell.

Paper references: Section 2.2 and Appendix D, Eqs. 25–27.

Sign conventions: ``binarity`` σ̄ shrinks as the latent collapses onto two
values per dimension; ℓ̄, μ̄ and the code's decoding accuracy grow.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._base import _BLOCK, _Classes, _check_labels, _check_z, _row_slices

__all__ = ["binarity", "hypercube_code"]


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

