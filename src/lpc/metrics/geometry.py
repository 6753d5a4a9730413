"""The latent geometry of one penultimate layer in one call: every family's scalars, class statistics shared.

Sign conventions: every NC quantity, ``sigma_w``, ``sigma_w_rel``, ``norm_coeff_var``,
``entropy``, ``entropy_rel`` and ``binarity_sigma`` shrink as the latent collapses;
``binarity_loglik``, ``binarity_peak_distance`` and ``code_decode_accuracy`` grow.
"""
from __future__ import annotations

from ._base import _Classes
from .collapse import _authors_sigma_w, _nc_from_classes, _norm_cv, _prepare_nc_inputs, _within_share
from .entropy import _check_k, _kl_from_distances, _knn_distances, _rms
from .hypercube import _binarity, _code_from_classes

__all__ = ["geometry_summary"]


def geometry_summary(z, y, *, logits=None, W=None, entropy=True, entropy_k=100, binarity=True, code=True):
    r"""All scalar geometry metrics of one latent matrix, as a flat dict of Python numbers.

    Class statistics are computed once and shared; the P × P Σ_W matrix is never
    formed.  Keys (the trainer appends ``_train`` / ``_test``):

    ========================== ============================================================
    ``sigma_w``                 Table 1 "Σ_W": authors' scalar, see :func:`within_class_covariance`
    ``sigma_w_trace``           Tr(Σ_W)/P (Eq. 7)
    ``sigma_w_rel``             Tr(Σ_W)/Tr(Σ_T), the within-class share of the variance,
                                see :func:`within_class_variance_share`
    ``nc1``, ``nc1_per_dim``    Tr(Σ_W Σ_B⁺)/K and its /P form (Eqs. 28–29, Fig. 3)
    ``equinorm``,               NC2 (Papyan et al. 2020), see :func:`neural_collapse`
    ``equiangularity``,
    ``max_angle``
    ``nc3``                     only if ``W`` is given (unsquared)
    ``nc4``                     only if ``logits`` is given
    ``norm_coeff_var``          Table 1 coefficient of variation
    ``entropy``                 only if ``entropy``; Euclidean KL estimate, nats
    ``entropy_rel``             only if ``entropy``; the same estimate for z / rms(z), i.e.
                                ``entropy`` − P·log rms(z), rms about the mean of all samples
                                (:func:`kl_entropy` with ``scale_free=True``)
    ``binarity_loglik``,        Eqs. 25–27 with the defaults of :func:`binarity`
    ``binarity_sigma``,         (standardised dimensions); only if ``binarity``
    ``binarity_peak_distance``
    ``code_vertices``,          from :func:`hypercube_code`; only if ``code``
    ``code_decode_accuracy``
    ========================== ============================================================

    Scale: a network can shrink or grow its latents, z → c·z (c > 0), without
    changing what it computes.  ``sigma_w`` and ``sigma_w_trace`` then change by
    c² and ``entropy`` by P·log c; every other key, ``sigma_w_rel`` and
    ``entropy_rel`` among them, is unchanged (binarity because each dimension is
    standardised first).  Compare layers, runs and epochs on those.

    Groups are the true labels (at least two classes are needed).  ``entropy``
    and ``entropy_rel`` use ``k = min(entropy_k, N − 1)`` so small evaluation
    sets still get a value, with the default floor ``min_distance = 1e-10`` (in
    the units of z, resp. of z / rms(z)); the neighbour search runs once for
    both.  No value is ever
    None; one is NaN only where the quantity is undefined (documented in the
    function that computes it: all class means equal, a zero centred class
    mean, all-zero latents, all rows equal).

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
        "sigma_w_rel": _within_share(cls, stats["sq"]),
    }
    out.update(nc)
    out["norm_coeff_var"] = _norm_cv(z_t)
    if entropy:
        k = min(_check_k(entropy_k, "entropy_k"), cls.N - 1)
        eps = _knn_distances(z_t, k, "euclidean")
        out["entropy"] = _kl_from_distances(eps, cls.P, k, "euclidean", 1e-10)
        rms = _rms(z_t)
        out["entropy_rel"] = _kl_from_distances(eps, cls.P, k, "euclidean", 1e-10, rms) if rms > 0 else float("nan")
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
