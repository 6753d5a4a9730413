"""Reliability of predictions: Mahalanobis, ODIN and MSP confidence scores, and their AUROC for misclassification and OOD detection.

The paper (Sec. 3.2, Table 2, right column) scores each test prediction with the
Mahalanobis distance of its penultimate latent ``z`` to the predicted class's mean
(Lee et al., 2018) and with ODIN's temperature-scaled softmax (Liang et al., 2018;
T = 100, no input perturbation), and reports the AUROC of separating correct from
wrong predictions. This module computes those scores from already collected outputs
(collect once, score many times, as pytorch-ood does) and adds the max-softmax
baseline (MSP; Hendrycks & Gimpel, 2017) and the same AUROCs for OOD detection.

Reference set
-------------
Every Mahalanobis score here measures distances to class Gaussians fitted on the latents
of the **correctly classified training samples**, with their labels: "the latent
representations of well-classified points in the training set" (paper, Sec. 3.2; Lee
et al., 2018). :func:`fit_reference_gaussians` is that fit; the misclassification and
the OOD AUROCs use it alike, and a caller that needs both fits once and passes
``fitted`` to each.

Sign convention
---------------
Every score is **higher = more confident / more in-distribution**:
``msp_score`` and ``odin_score`` are probabilities, ``mahalanobis_score`` is the
*negative* distance. Distances (``mahalanobis_distance``) are lower = closer. Every
AUROC takes the positives to be the "good" samples: correctly classified test samples
(misclassification) or in-distribution samples (OOD). 0.5 = chance, 1 = perfect.

Inputs may be torch tensors (any device) or array-likes; vector outputs are float64
tensors on the input's device.

References
----------
Lee, Lee, Lee, Shin (2018). A simple unified framework for detecting out-of-distribution
samples and adversarial attacks. NeurIPS.
Liang, Li, Srikant (2018). Enhancing the reliability of out-of-distribution image
detection in neural networks (ODIN). ICLR.
Hendrycks, Gimpel (2017). A baseline for detecting misclassified and out-of-distribution
examples in neural networks. ICLR.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "auroc",
    "ClassGaussians",
    "fit_class_gaussians",
    "fit_reference_gaussians",
    "mahalanobis_distance",
    "mahalanobis_score",
    "msp_score",
    "odin_score",
    "misclassification_summary",
    "collect_outputs",
    "ood_auroc_from_outputs",
    "ood_auroc",
]

_COVARIANCES = ("tied", "per_class")
_OOD_SCORES = ("mahalanobis", "odin", "msp")


def _tensor(a, name: str, *, ndim: int | None = None, device=None) -> Tensor:
    t = a.detach() if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    if device is not None:
        t = t.to(device)
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


# --------------------------------------------------------------------------- AUROC


def auroc(scores, positives) -> float:
    r"""Area under the ROC curve of ``scores`` for detecting ``positives``.

    The Mann–Whitney statistic, exact and rank based (ties count one half, as in
    :func:`sklearn.metrics.roc_auc_score`): the probability that a random positive
    scores higher than a random negative,

    .. math::

        \mathrm{AUROC} = \frac{R_+ - n_+(n_+ + 1)/2}{n_+ n_-},

    :math:`R_+` the sum of the positives' average ranks among all scores. Higher
    scores must mean "more likely positive". Scores of
    :math:`\pm\infty` are allowed (e.g. a Mahalanobis score for a class without fitted
    Gaussian) and are ranked, not rejected; NaN scores are an error.

    Parameters
    ----------
    scores : array-like or Tensor (N,)
    positives : array-like or Tensor (N,), bool or {0, 1}

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        If the shapes differ, a score is NaN, or ``positives`` holds a single class
        (the AUROC is undefined).

    Examples
    --------
    >>> auroc([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    1.0
    """
    s = _numpy(scores).astype(np.float64).ravel()
    p = _numpy(positives).ravel()
    if s.shape != p.shape or s.size == 0:
        raise ValueError(f"auroc: scores and positives must be non-empty and of equal length, "
                         f"got {s.size} and {p.size}")
    if np.isnan(s).any():
        raise ValueError("auroc: scores contain NaN")
    if not np.isin(p, (0, 1)).all():
        raise ValueError("auroc: positives must be boolean or 0/1")
    p = p.astype(bool)
    if p.all() or not p.any():
        raise ValueError(f"auroc: positives are all {bool(p[0])}; "
                         "the AUROC needs both classes")
    n_pos = int(p.sum())
    n_neg = p.size - n_pos
    # U is a sum of half-integers below N², exact in float64 for N < 2**26, so the one division rounds once
    u = _average_ranks(s)[p].sum() - 0.5 * n_pos * (n_pos + 1)
    return float(u / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks (``scipy.stats.rankdata``'s default)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # a run of equal values spans ranks first..last; its members all get (first + last) / 2
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]              # exclusive, so the run's last 1-based rank is `ends`
    mean_rank = 0.5 * (starts + 1 + ends)
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


# --------------------------------------------------------------------------- Mahalanobis


@dataclass(frozen=True)
class ClassGaussians:
    r"""Class-conditional Gaussians fitted by :func:`fit_class_gaussians` (float64 tensors).

    Attributes
    ----------
    classes : Tensor (C,), long
        Sorted class labels that had training samples.
    means : Tensor (C, D)
        Class means :math:`\mu_c`, in the standardised space when ``standardize``.
    whitener : Tensor (D, D) or (C, D, D)
        :math:`W` with :math:`W^\top W = \Sigma^+` (symmetric pseudo-inverse), shared
        (``"tied"``) or per class (``"per_class"``); the distance is
        :math:`\|W(z - \mu_c)\|_2`.
    covariance : str
        ``"tied"`` or ``"per_class"``.
    shift, scale : Tensor (D,) or None
        Standardisation :math:`z \mapsto (z - \text{shift}) / \text{scale}` applied
        before everything else, or None.
    """

    classes: Tensor
    means: Tensor
    whitener: Tensor
    covariance: str
    shift: Tensor | None = None
    scale: Tensor | None = None

    def transform(self, z: Tensor) -> Tensor:
        """Features as the Gaussians see them: float64, standardised if fitted so."""
        z = z.to(device=self.means.device, dtype=torch.float64)
        return z if self.shift is None else (z - self.shift) / self.scale


@contextlib.contextmanager
def _one_cpu_thread(t: Tensor) -> Iterator[None]:
    """Run a small CPU LAPACK call on one thread, restoring the thread count after.

    The threaded symmetric eigensolver of a 512 x 512 matrix took 1-10 s instead of
    0.06 s on a 2-core machine whose other core was busy; one thread is never slow for
    matrices this size. (The thread count is process-wide for these milliseconds.)
    """
    threads = torch.get_num_threads()
    if t.device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pinv_sqrt(cov: Tensor) -> Tensor:
    r"""Rows :math:`\lambda_i^{-1/2} v_i^\top` of the eigendecomposition, zero for the null space.

    Eigenvalues at or below :math:`\lambda_{max} \cdot D \cdot \epsilon` count as zero,
    the rank tolerance of ``numpy.linalg.matrix_rank`` / ``pinv``; a symmetric
    eigendecomposition (not SVD) keeps tiny negative rounding eigenvalues out.
    """
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    with _one_cpu_thread(cov):
        evals, evecs = torch.linalg.eigh(cov)
    tol = evals.amax(dim=-1, keepdim=True).clamp_min(0) * cov.shape[-1] * torch.finfo(cov.dtype).eps
    keep = evals > tol
    inv_sqrt = torch.where(keep, evals.clamp_min(torch.finfo(cov.dtype).tiny).rsqrt(), torch.zeros_like(evals))
    return (evecs * inv_sqrt.unsqueeze(-2)).transpose(-1, -2)


def fit_class_gaussians(
    z_train,
    y_train,
    *,
    covariance: str = "tied",
    standardize: bool = False,
) -> ClassGaussians:
    r"""Fit one Gaussian per class to training latents (Lee et al., 2018).

    .. math::
        \mu_c = \frac{1}{N_c} \sum_{i: y_i = c} z_i, \qquad
        \Sigma = \frac{1}{N} \sum_c \sum_{i: y_i = c} (z_i - \mu_c)(z_i - \mu_c)^\top
        \ \text{(tied)}, \qquad
        \Sigma_c = \frac{1}{N_c} \sum_{i: y_i = c} (z_i - \mu_c)(z_i - \mu_c)^\top
        \ \text{(per class)}.

    Maximum-likelihood estimates (divide by :math:`N`, not :math:`N-1`). ``"tied"`` is
    Lee et al.'s shared covariance (LDA); ``"per_class"`` fits each class its own
    covariance, which is the option the LPC authors' code offers, there on
    standardised features. The inverse is the symmetric pseudo-inverse, in float64, so
    rank-deficient covariances -- expected after latent point collapse -- are handled:
    directions without training variance are ignored by the distance.

    Parameters
    ----------
    z_train : Tensor or array (N, D)
        Latents, e.g. of the correctly classified training samples.
    y_train : Tensor or array (N,)
        Integer class labels.
    covariance : {"tied", "per_class"}, default "tied"
    standardize : bool, default False
        Standardise each feature by the training mean and (population) standard
        deviation first; constant features keep scale 1.

    Returns
    -------
    ClassGaussians
    """
    if covariance not in _COVARIANCES:
        raise ValueError(f"fit_class_gaussians: covariance must be one of {_COVARIANCES}, got {covariance!r}")
    z = _tensor(z_train, "z_train", ndim=2).to(torch.float64)
    y = _tensor(y_train, "y_train", ndim=1, device=z.device)
    if len(z) != len(y) or len(z) == 0:
        raise ValueError(f"fit_class_gaussians: need as many labels as latents (> 0), got "
                         f"{len(z)} latents and {len(y)} labels")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"fit_class_gaussians: y_train must hold integer labels, got dtype {y.dtype}")
    shift = scale = None
    if standardize:
        shift = z.mean(dim=0)
        scale = z.std(dim=0, correction=0)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        z = (z - shift) / scale
    classes, inverse, counts = torch.unique(y.long(), return_inverse=True, return_counts=True)
    means = torch.zeros(len(classes), z.shape[1], dtype=z.dtype, device=z.device)
    means.index_add_(0, inverse, z)
    means /= counts.unsqueeze(1).to(z.dtype)
    centred = z - means[inverse]
    if covariance == "tied":
        cov = centred.T @ centred / len(z)
    else:
        cov = torch.stack([centred[inverse == c].T @ centred[inverse == c] / counts[c]
                           for c in range(len(classes))])
    return ClassGaussians(classes=classes, means=means, whitener=_pinv_sqrt(cov),
                          covariance=covariance, shift=shift, scale=scale)


def fit_reference_gaussians(
    z_train,
    y_train,
    logits_train,
    *,
    covariance: str = "tied",
    standardize: bool = False,
) -> ClassGaussians | None:
    r"""The class Gaussians of every Mahalanobis score: fitted on the correctly classified training latents.

    :func:`fit_class_gaussians` on the rows where ``argmax(logits_train) == y_train`` (the module's
    reference set: paper Sec. 3.2, Lee et al., 2018).

    Parameters
    ----------
    z_train, y_train, logits_train : (N, D), (N,), (N, K)
        Training latents, labels and logits.
    covariance, standardize :
        See :func:`fit_class_gaussians`.

    Returns
    -------
    ClassGaussians, or None when no training sample is classified correctly.
    """
    logits = _tensor(logits_train, "logits_train", ndim=2)
    y = _tensor(y_train, "y_train", ndim=1, device=logits.device)
    z = _tensor(z_train, "z_train", ndim=2, device=logits.device)
    if not len(z) == len(y) == len(logits):
        raise ValueError(f"fit_reference_gaussians: {len(z)} latents, {len(y)} labels and {len(logits)} logits")
    correct = logits.argmax(dim=1) == y
    if not bool(correct.any()):
        return None
    return fit_class_gaussians(z[correct], y[correct], covariance=covariance, standardize=standardize)


def mahalanobis_distance(z, fitted: ClassGaussians, classes=None) -> Tensor:
    r"""Mahalanobis distance of each latent to a class mean: :math:`\sqrt{(z-\mu_c)^\top \Sigma_c^+ (z-\mu_c)}`.

    Computed as :math:`\|W_c (z - \mu_c)\|_2` with the whitener of
    :func:`fit_class_gaussians` (one eigendecomposition per covariance, done at fit
    time; here only matrix products, one per covariance). Lower = closer.

    Parameters
    ----------
    z : Tensor or array (N, D)
    fitted : ClassGaussians
    classes : Tensor or array (N,), optional
        Class label per row (e.g. the predicted class). A label the Gaussians were not
        fitted on (no training samples) gets distance ``+inf``.

    Returns
    -------
    Tensor (N,) float64 if ``classes`` is given, else (N, C) -- the distance to every
    fitted class, columns in the order of ``fitted.classes``.
    """
    zt = fitted.transform(_tensor(z, "z", ndim=2))
    if zt.shape[1] != fitted.means.shape[1]:
        raise ValueError(f"mahalanobis_distance: z has {zt.shape[1]} features, the Gaussians "
                         f"{fitted.means.shape[1]}")
    tied = fitted.covariance == "tied"
    n_cls = len(fitted.classes)
    if classes is None:
        if tied:
            zw, mw = zt @ fitted.whitener.T, fitted.means @ fitted.whitener.T
            # a difference per class rather than cdist's |a|^2 - 2ab + |b|^2, which
            # loses digits when classes sit far apart relative to their spread
            return torch.stack([(zw - mw[c]).norm(dim=1) for c in range(n_cls)], dim=1)
        return torch.stack([((zt - fitted.means[c]) @ fitted.whitener[c].T).norm(dim=1)
                            for c in range(n_cls)], dim=1)

    labels = _tensor(classes, "classes", ndim=1, device=zt.device).long()
    if len(labels) != len(zt):
        raise ValueError(f"mahalanobis_distance: {len(zt)} latents but {len(labels)} classes")
    pos = torch.searchsorted(fitted.classes, labels).clamp(max=n_cls - 1)
    known = fitted.classes[pos] == labels
    dist = torch.full((len(zt),), float("inf"), dtype=torch.float64, device=zt.device)
    if tied:
        diff = (zt - fitted.means[pos]) @ fitted.whitener.T
        dist = torch.where(known, diff.norm(dim=1), dist)
    else:
        for c in pos[known].unique().tolist():
            rows = known & (pos == c)
            dist[rows] = ((zt[rows] - fitted.means[c]) @ fitted.whitener[c].T).norm(dim=1)
    return dist


def mahalanobis_score(z, fitted: ClassGaussians, *, classes=None) -> Tensor:
    r"""Mahalanobis confidence: minus the distance. Higher = more confident / in-distribution.

    * ``classes`` given (e.g. the predicted classes): :math:`-d(z, \mu_{c})` -- the
      paper's misclassification score (Sec. 3.2).
    * ``classes=None``: :math:`-\min_c d(z, \mu_c)`, the closest class -- Lee et al.'s
      OOD score (without input pre-processing or feature ensembles).

    Returns
    -------
    Tensor (N,) float64
    """
    dist = mahalanobis_distance(z, fitted, classes)
    return -(dist if classes is not None else dist.min(dim=1).values)


# --------------------------------------------------------------------------- softmax scores


def msp_score(logits) -> Tensor:
    r"""Maximum softmax probability :math:`\max_k \mathrm{softmax}(f)_k` (Hendrycks & Gimpel, 2017).

    Higher = more confident. Computed in float64 so that near-one probabilities of
    different samples stay distinct for the AUROC.

    Returns
    -------
    Tensor (N,) float64
    """
    f = _tensor(logits, "logits", ndim=2).to(torch.float64)
    return torch.softmax(f, dim=1).amax(dim=1)


def odin_score(logits, *, temperature: float = 100.0) -> Tensor:
    r"""ODIN confidence without input perturbation: :math:`\max_k \mathrm{softmax}(f / T)_k`.

    Liang et al. (2018), Eq. (1), with the paper's :math:`T = 100` and, as in the paper
    (Table 2 caption), no input pre-processing. The LPC authors' code divides the
    *softmax output* by the temperature instead, which is a constant rescaling of MSP;
    we follow the paper and the ODIN definition. ``temperature=1`` gives
    :func:`msp_score`. Higher = more confident.

    Returns
    -------
    Tensor (N,) float64
    """
    if not temperature > 0:
        raise ValueError(f"odin_score: temperature must be > 0, got {temperature}")
    f = _tensor(logits, "logits", ndim=2).to(torch.float64)
    return torch.softmax(f / temperature, dim=1).amax(dim=1)


# --------------------------------------------------------------------------- misclassification


def _auroc_or_none(scores, positives, what: str) -> float | None:
    try:
        return auroc(scores, positives)
    except ValueError as err:
        warnings.warn(f"{what}: AUROC undefined, reported as None ({err})", RuntimeWarning, stacklevel=3)
        return None


def misclassification_summary(
    z_train,
    y_train,
    logits_train,
    z_test,
    y_test,
    logits_test,
    *,
    temperature: float = 100.0,
    covariance: str = "tied",
    standardize: bool = False,
    fitted: ClassGaussians | None = None,
) -> dict[str, float | None]:
    r"""AUROC of detecting correct predictions on the test set (paper, Table 2 right column).

    Positives are the correctly classified test samples. Scores:

    ``auroc_mahalanobis``
        :math:`-d(z, \mu_{\hat y})` to the *predicted* class :math:`\hat y`, Gaussians
        of :func:`fit_reference_gaussians` (correctly classified training latents).
    ``auroc_odin``
        :func:`odin_score` with ``temperature`` (paper: 100).
    ``auroc_msp``
        :func:`msp_score`.

    A value is ``None``, with a ``RuntimeWarning`` saying why, when it is undefined:
    all test predictions right (or all wrong), or -- Mahalanobis only -- no training
    sample classified correctly. Test predictions of a class without correctly
    classified training samples get score :math:`-\infty`.

    Parameters
    ----------
    z_train, y_train, logits_train : (N, D), (N,), (N, K)
    z_test, y_test, logits_test : (M, D), (M,), (M, K)
    temperature : float, default 100.0
    covariance : {"tied", "per_class"}, default "tied"
    standardize : bool, default False
        See :func:`fit_class_gaussians`.
    fitted : ClassGaussians, optional
        ``fit_reference_gaussians(z_train, y_train, logits_train)`` when the caller has fitted it
        already (``covariance`` and ``standardize`` are then those of the fit).

    Returns
    -------
    dict with keys ``auroc_mahalanobis``, ``auroc_odin``, ``auroc_msp``.
    """
    logits_train = _tensor(logits_train, "logits_train", ndim=2)
    y_train = _tensor(y_train, "y_train", ndim=1, device=logits_train.device)
    logits_test = _tensor(logits_test, "logits_test", ndim=2)
    y_test = _tensor(y_test, "y_test", ndim=1, device=logits_test.device)
    if len(y_test) != len(logits_test) or len(y_train) != len(logits_train):
        raise ValueError("misclassification_summary: labels and logits differ in length "
                         f"(train {len(y_train)} vs {len(logits_train)}, test {len(y_test)} vs {len(logits_test)})")
    pred_test = logits_test.argmax(dim=1)
    positives = pred_test == y_test
    out: dict[str, float | None] = {}
    if fitted is None:
        fitted = fit_reference_gaussians(z_train, y_train, logits_train, covariance=covariance,
                                         standardize=standardize)
    if fitted is not None:
        maha = mahalanobis_score(z_test, fitted, classes=pred_test)
        out["auroc_mahalanobis"] = _auroc_or_none(maha, positives, "auroc_mahalanobis")
    else:
        warnings.warn("auroc_mahalanobis: no correctly classified training sample to fit the "
                      "Gaussians on; reported as None", RuntimeWarning, stacklevel=2)
        out["auroc_mahalanobis"] = None
    out["auroc_odin"] = _auroc_or_none(odin_score(logits_test, temperature=temperature), positives, "auroc_odin")
    out["auroc_msp"] = _auroc_or_none(msp_score(logits_test), positives, "auroc_msp")
    return out


# --------------------------------------------------------------------------- OOD


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode without gradients; restore every submodule's own mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def collect_outputs(model: nn.Module, data, *, batch_size: int = 512) -> tuple[Tensor, Tensor | None]:
    """Run ``model`` over ``data`` in eval mode and concatenate ``(logits, z)``.

    Parameters
    ----------
    model : nn.Module
        Returns ``(logits, z)`` or plain ``logits`` (then ``z`` is None).
    data : Tensor (N, ...) or iterable of batches
        A tensor is split into ``batch_size`` chunks; an iterable (e.g. a DataLoader)
        may yield tensors or tuples whose first element is the input.
    batch_size : int, default 512

    Returns
    -------
    logits : Tensor (N, K), z : Tensor (N, D) or None -- on the model's device.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    batches: Iterable = data.split(batch_size) if isinstance(data, Tensor) else data
    logits, latents = [], []
    with _evaluating(model):
        for batch in batches:
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
            out = model(xb.to(device))
            if isinstance(out, (tuple, list)):
                logits.append(out[0])
                latents.append(out[1].flatten(1))
            else:
                logits.append(out)
    if not logits:
        raise ValueError("collect_outputs: data is empty")
    return torch.cat(logits), (torch.cat(latents) if latents else None)


def _score_names(score: str) -> tuple[str, ...]:
    if score == "all":
        return _OOD_SCORES
    if score not in _OOD_SCORES:
        raise ValueError(f"score must be 'all' or one of {_OOD_SCORES}, got {score!r}")
    return (score,)


def ood_auroc_from_outputs(
    logits_in,
    z_in,
    logits_out,
    z_out,
    fitted: ClassGaussians | None = None,
    *,
    score: str = "all",
    temperature: float = 100.0,
) -> dict[str, float]:
    r"""AUROC of telling in-distribution samples (positives) from OOD samples, from model outputs.

    Scores (higher = more in-distribution): ``mahalanobis`` = :math:`-\min_c d(z, \mu_c)`
    (Lee et al., closest class; needs ``fitted`` and latents), ``odin`` =
    :func:`odin_score` with ``temperature``, ``msp`` = :func:`msp_score`.

    Parameters
    ----------
    logits_in, z_in : (N, K), (N, D) or None
        Outputs on in-distribution (test) inputs.
    logits_out, z_out : (M, K), (M, D) or None
        Outputs on OOD inputs.
    fitted : ClassGaussians, optional
        Required for the Mahalanobis score: ``fit_reference_gaussians(z_train, y_train, logits_train)``.
    score : {"all", "mahalanobis", "odin", "msp"}, default "all"
    temperature : float, default 100.0

    Returns
    -------
    dict with ``ood_auroc_<score>`` for each requested score.
    """
    names = _score_names(score)
    positives = np.r_[np.ones(len(logits_in), bool), np.zeros(len(logits_out), bool)]
    out = {}
    for name in names:
        if name == "mahalanobis":
            if fitted is None or z_in is None or z_out is None:
                raise ValueError("ood_auroc: the Mahalanobis score needs fitted Gaussians and latents "
                                 "(fitted=, z_in=, z_out=; a model returning (logits, z))")
            s_in, s_out = mahalanobis_score(z_in, fitted), mahalanobis_score(z_out, fitted)
        elif name == "odin":
            s_in, s_out = odin_score(logits_in, temperature=temperature), odin_score(logits_out, temperature=temperature)
        else:
            s_in, s_out = msp_score(logits_in), msp_score(logits_out)
        out[f"ood_auroc_{name}"] = auroc(np.r_[_numpy(s_in), _numpy(s_out)], positives)
    return out


def ood_auroc(
    model: nn.Module,
    in_data,
    ood_data,
    *,
    z_train=None,
    y_train=None,
    logits_train=None,
    fitted: ClassGaussians | None = None,
    score: str = "all",
    temperature: float = 100.0,
    covariance: str = "tied",
    standardize: bool = False,
    batch_size: int = 512,
) -> dict[str, float]:
    r"""OOD-detection AUROC of a model: in-distribution inputs are the positives.

    Runs the model on both input sets (:func:`collect_outputs`) and calls
    :func:`ood_auroc_from_outputs`. For the Mahalanobis score the Gaussians are
    ``fitted``, or fitted here by :func:`fit_reference_gaussians` on the training
    outputs: the correctly classified training latents with their labels.

    Parameters
    ----------
    model : nn.Module
    in_data, ood_data : Tensor (N, ...) or iterable of batches
    z_train, y_train, logits_train : (N, D), (N,), (N, K), optional
        Training latents, labels and logits (needed for ``"mahalanobis"``/``"all"`` unless ``fitted``).
    fitted : ClassGaussians, optional
    score : {"all", "mahalanobis", "odin", "msp"}, default "all"
    temperature : float, default 100.0
    covariance, standardize :
        See :func:`fit_class_gaussians`.
    batch_size : int, default 512

    Returns
    -------
    dict with ``ood_auroc_mahalanobis``, ``ood_auroc_odin``, ``ood_auroc_msp`` (for ``"all"``),
    else the one requested key.
    """
    names = _score_names(score)
    if "mahalanobis" in names and fitted is None:
        if z_train is None or y_train is None or logits_train is None:
            raise ValueError("ood_auroc: the Mahalanobis score needs z_train, y_train and logits_train (or fitted=)")
        fitted = fit_reference_gaussians(z_train, y_train, logits_train, covariance=covariance,
                                         standardize=standardize)
        if fitted is None:
            raise ValueError("ood_auroc: no correctly classified training sample to fit the Gaussians on")
    logits_in, z_in = collect_outputs(model, in_data, batch_size=batch_size)
    logits_out, z_out = collect_outputs(model, ood_data, batch_size=batch_size)
    return ood_auroc_from_outputs(logits_in, z_in, logits_out, z_out, fitted, score=score,
                                  temperature=temperature)
