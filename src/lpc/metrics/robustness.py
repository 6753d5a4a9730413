"""Adversarial robustness of a trained classifier: DeepFool (the paper's score), PGD-L2 and bisection radii, local Lipschitz constants.

The paper's robustness score (Table 2, central column; Sec. 3.2) is the DeepFool
perturbation norm divided by the input norm, averaged over 100 random test inputs
(Moosavi-Dezfooli et al., 2016). DeepFool is a linearisation, so this module also
measures two independent upper bounds on the minimal adversarial radius (targeted
PGD-L2 attacks inside a per-input search over the radius, and a gradient-free bisection
along fixed directions) and the local Lipschitz constant the paper links robustness to
(Eq. 4).

Sign conventions
----------------
* Every radius and every ``robustness_*`` value: **higher = more robust** (a larger
  perturbation is needed to change the prediction).
* ``lipschitz_*``: higher = less smooth (larger worst-case logit change per unit
  input change). Lower is "better" but it is not a loss, so it keeps the plain name.

Contract with models
--------------------
A model is any ``nn.Module`` whose ``forward(x)`` returns ``(logits, z)`` (the lpc
convention) or plain ``logits``. Every function here

* puts the model in eval mode and restores each submodule's own ``training`` flag
  afterwards -- eval mode is also what makes a batch of inputs independent (BatchNorm
  uses running statistics), which the batched gradients below rely on;
* differentiates with respect to the inputs only (``torch.autograd.grad(..., inputs)``),
  so parameters' ``.grad`` are never touched;
* runs on the device of the model's parameters (inputs are moved there) and returns
  tensors on that device.

References
----------
Moosavi-Dezfooli, Fawzi, Frossard (2016). DeepFool: a simple and accurate method to
fool deep neural networks. CVPR. Reference code: github.com/LTS4/DeepFool (Python/deepfool.py).
Madry et al. (2018). Towards deep learning models resistant to adversarial attacks. ICLR.
Gowal et al. (2019). An alternative surrogate loss for PGD-based adversarial testing
(MultiTargeted attack). arXiv:1910.09338.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "DeepFoolResult",
    "RadiusResult",
    "deepfool",
    "select_inputs",
    "robustness_deepfool_score",
    "pgd_l2_radius",
    "bisection_radius",
    "lipschitz_estimate",
    "robustness_summary",
    "SUMMARY_KEYS",
]

# The reference implementation adds this to the DeepFool step so that it lands just
# past the linearised boundary instead of exactly on it.
_DEEPFOOL_STEP_SLACK = 1e-4
_GRID_STEPS = 12  # bisection_radius's doubling grid, from max_scale * 2**-11 (0.002 ||x||) up to max_scale

SUMMARY_KEYS = (
    "robustness_deepfool",
    "deepfool_flip_rate",
    "robustness_pgd_l2",
    "robustness_bisection",
    "lipschitz_mean",
    "lipschitz_max",
    "robustness_inputs",
)


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _no_progress(name: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


def _filled(progress):
    """``progress`` whose phases are advanced to their total at the end (a search may stop early)."""
    @contextlib.contextmanager
    def phase(name: str, total: int) -> Iterator[Callable[[int], None]]:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            step(n)

        with progress(name, total) as step:
            yield advance
            step(total - done)
    return phase


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode with gradients enabled; restore every submodule's own mode after.

    Restoring per submodule (not ``model.train(flag)``) keeps deliberately frozen
    parts, e.g. a BatchNorm left in eval inside a training model, as they were.
    Gradients are enabled because callers may hold ``torch.no_grad()``.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def _device_of(model: nn.Module, fallback: torch.device) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return fallback


def _prepare(model: nn.Module, x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"{name}: x must be a batch tensor of shape (B, ...), got "
                         f"{type(x).__name__} with shape {tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: x must be floating point, got dtype {x.dtype}")
    # clone() also turns an inference-mode tensor into one autograd accepts
    return x.detach().to(_device_of(model, x.device)).clone()


def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-row vector (B,) to broadcast against a batch (B, ...)."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> Tensor:
    return _logits(model, x).argmax(dim=1)


def _generator(seed: int) -> torch.Generator:
    # Random draws are made on the CPU and then moved, so a seed gives the same
    # directions on every device.
    return torch.Generator().manual_seed(int(seed))


def _randn(shape, gen: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=like.dtype).to(like.device)


# --------------------------------------------------------------------------- DeepFool


@dataclass(frozen=True)
class DeepFoolResult:
    """Per-input output of :func:`deepfool` (all tensors have leading dimension B).

    Attributes
    ----------
    r : Tensor, shape like ``x``
        Returned perturbation ``(1 + overshoot) * r_tot``; the adversarial input is ``x + r``.
    relative_norm : Tensor (B,)
        ``||r||_2 / ||x||_2`` (flattened). Higher = more robust.
    iterations : Tensor (B,), long
        DeepFool iterations taken (linearisation steps).
    flipped : Tensor (B,), bool
        Whether ``argmax f(x + r) != original_label``, checked by a final forward pass.
    original_label : Tensor (B,), long
        The network's own prediction at ``x`` (not the true label).
    new_label : Tensor (B,), long
        ``argmax f(x + r)``.
    """

    r: Tensor
    relative_norm: Tensor
    iterations: Tensor
    flipped: Tensor
    original_label: Tensor
    new_label: Tensor


def deepfool(
    model: nn.Module,
    x: Tensor,
    *,
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int = 10,
    callback: Callable[[int], None] | None = None,
) -> DeepFoolResult:
    r"""Multi-class DeepFool perturbations, batched over inputs.

    Follows the authors' reference implementation (LTS4/DeepFool, ``Python/deepfool.py``)
    step for step, for every input independently:

    * reference class :math:`y = \arg\max_k f_k(x)` -- the network's own prediction;
    * candidates :math:`\mathcal{C}` = the ``num_candidates`` largest classes of the
      *original* logits (fixed for all iterations; ``min(num_candidates, K)`` classes);
    * at the current point :math:`x_i = x + (1+\eta)\, r_{tot}` (:math:`\eta` = overshoot),
      for :math:`k \in \mathcal{C} \setminus \{y\}`:
      :math:`w_k = \nabla f_k(x_i) - \nabla f_y(x_i)`, :math:`f'_k = f_k(x_i) - f_y(x_i)`,

      .. math:: l = \arg\min_k \frac{|f'_k|}{\|w_k\|_2}, \qquad
                r_i = \Big(\frac{|f'_l|}{\|w_l\|_2} + 10^{-4}\Big) \frac{w_l}{\|w_l\|_2},
                \qquad r_{tot} \leftarrow r_{tot} + r_i ;

    * stop when :math:`\arg\max f(x + (1+\eta) r_{tot}) \neq y` or after ``max_iter``
      iterations; return :math:`r = (1+\eta)\, r_{tot}`.

    The overshoot multiplies the accumulated total, not each step, and nothing is
    clipped (lpc inputs are normalised, not in [0, 1]). Peers differ and give different
    numbers: torchattacks' ``DeepFool`` uses the true label, applies the overshoot per
    step and clamps to [0, 1]; ART's default overshoot is 1e-6.

    Batching: all active inputs go through the network together, and the gradient of
    each candidate class is one backward pass of :math:`\sum_b f_{c_b}(x_b)` over the
    batch. This equals the per-sample gradients only because samples do not interact,
    which holds in eval mode (BatchNorm on running statistics) -- the model is put in
    eval mode here. Inputs that have flipped (or hit ``max_iter``) leave the batch and
    stop changing.

    Parameters
    ----------
    model : nn.Module
        Returns ``(logits, z)`` or ``logits``.
    x : Tensor, shape (B, ...)
        Inputs (normalised as the model expects).
    overshoot : float, default 0.02
        :math:`\eta` above.
    max_iter : int, default 50
        Maximum number of linearisation steps per input.
    num_candidates : int, default 10
        Number of top classes (including the predicted one) considered.
    callback : callable, optional
        Called with the number of inputs that finished, after each iteration (``B`` in all), e.g. to
        advance a progress bar.

    Returns
    -------
    DeepFoolResult

    Notes
    -----
    If every candidate gradient difference is zero (or not finite) the linearisation
    gives no direction; that input stops with its current ``r`` and ``flipped=False``.
    With ``K = 1`` class nothing can flip: ``r = 0``, ``iterations = 0``.

    Examples
    --------
    >>> model = torch.nn.Linear(4, 3)
    >>> res = deepfool(model, torch.randn(5, 4))
    >>> bool(res.flipped.all())
    True
    """
    if overshoot < 0:
        raise ValueError(f"deepfool: overshoot must be >= 0, got {overshoot}")
    if int(max_iter) != max_iter or max_iter < 0:
        raise ValueError(f"deepfool: max_iter must be an integer >= 0, got {max_iter}")
    if int(num_candidates) != num_candidates or num_candidates < 2:
        raise ValueError(f"deepfool: num_candidates must be an integer >= 2, got {num_candidates}")
    x = _prepare(model, x, "deepfool")
    scale = 1.0 + overshoot
    with _evaluating(model):
        with torch.no_grad():
            logits0 = _logits(model, x)
        batch, num_classes = logits0.shape
        n_cand = min(int(num_candidates), num_classes)
        cand = logits0.topk(n_cand, dim=1).indices  # sorted: cand[:, 0] is the prediction
        orig = cand[:, 0]
        r_tot = torch.zeros_like(x)
        iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
        active = torch.full((batch,), n_cand >= 2, dtype=torch.bool, device=x.device)
        finished = 0  # inputs reported to callback

        while bool(active.any()):
            idx = active.nonzero().squeeze(1)
            if callback is not None:
                callback(batch - idx.numel() - finished)
                finished = batch - idx.numel()
            xa = (x[idx] + scale * r_tot[idx]).requires_grad_(True)
            fa = _logits(model, xa)
            # This forward is both the previous iteration's stopping test and this
            # iteration's linearisation point, as in the reference loop.
            keep = (fa.detach().argmax(dim=1) == orig[idx]) | (iterations[idx] == 0)
            keep &= iterations[idx] < max_iter
            if not bool(keep.all()):
                active[idx[~keep]] = False
                idx = idx[keep]
                if idx.numel() == 0:
                    break
                # Re-run the smaller batch rather than back-propagating through rows
                # that are already done (one forward is cheaper than C wasted backwards).
                xa = (x[idx] + scale * r_tot[idx]).requires_grad_(True)
                fa = _logits(model, xa)

            cand_a = cand[idx]
            # Gradients of f_c and f_y separately, then their difference, as the
            # reference does (rather than the gradient of the difference).
            grads = [
                torch.autograd.grad(fa.gather(1, cand_a[:, j : j + 1]).sum(), xa,
                                    retain_graph=j < n_cand - 1)[0]
                for j in range(n_cand)
            ]
            g = torch.stack(grads, dim=1)  # (Ba, C, ...)
            w = g[:, 1:] - g[:, :1]
            fc = fa.detach().gather(1, cand_a)
            f_prime = fc[:, 1:] - fc[:, :1]
            w_norm = w.flatten(2).norm(dim=2)  # (Ba, C-1)
            pert = f_prime.abs() / w_norm
            pert = torch.where((w_norm > 0) & pert.isfinite(), pert, torch.full_like(pert, math.inf))
            best, l = pert.min(dim=1)  # first minimum on ties, like the reference's strict '<'
            rows = torch.arange(idx.numel(), device=x.device)
            stuck = ~best.isfinite()
            coef = torch.where(stuck, torch.zeros_like(best), (best + _DEEPFOOL_STEP_SLACK) / w_norm[rows, l])
            r_tot[idx] = r_tot[idx] + _bcast(coef, xa) * w[rows, l]
            iterations[idx] += 1
            active[idx[stuck]] = False

        r = scale * r_tot
        new_label = _predict(model, x + r)
        if callback is not None:
            callback(batch - finished)
    return DeepFoolResult(
        r=r,
        relative_norm=_flat_norm(r) / _flat_norm(x),
        iterations=iterations,
        flipped=new_label != orig,
        original_label=orig,
        new_label=new_label,
    )


def select_inputs(n: int, num_available: int, *, seed: int = 0) -> Tensor:
    """Indices of ``min(n, num_available)`` distinct inputs drawn uniformly at random.

    Uses a private ``torch.Generator`` seeded with ``seed`` (global RNG untouched), so
    every model in a study is attacked on the same inputs. The paper uses n = 100
    test inputs per experiment (Table 2).

    Returns
    -------
    Tensor (min(n, num_available),), long, on the CPU.

    Examples
    --------
    >>> select_inputs(3, 10, seed=0).tolist() == select_inputs(3, 10, seed=0).tolist()
    True
    """
    if n < 1 or num_available < 1:
        raise ValueError(f"select_inputs: n and num_available must be >= 1, got n={n}, "
                         f"num_available={num_available}")
    return torch.randperm(int(num_available), generator=_generator(seed))[: min(int(n), int(num_available))]


def robustness_deepfool_score(
    model: nn.Module,
    x: Tensor,
    *,
    n: int = 100,
    seed: int = 0,
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int = 10,
) -> float:
    r"""The paper's robustness score: mean DeepFool :math:`\|r\|_2 / \|x\|_2` (Table 2).

    ``n`` inputs are drawn from ``x`` with :func:`select_inputs` (paper: 100 test inputs).
    Inputs DeepFool fails to flip within ``max_iter`` still count with their final
    ``r`` (see :func:`robustness_summary` for the flip rate). Higher = more robust.
    """
    idx = select_inputs(n, len(x), seed=seed)
    res = deepfool(model, x[idx], overshoot=overshoot, max_iter=max_iter, num_candidates=num_candidates)
    return float(res.relative_norm.mean())


# --------------------------------------------------------------------------- radii


@dataclass(frozen=True)
class RadiusResult:
    """Per-input output of :func:`pgd_l2_radius` and :func:`bisection_radius`.

    Attributes
    ----------
    radius : Tensor (B,)
        Absolute L2 norm of the smallest label-changing perturbation found; ``+inf``
        where none was found within the search bound. Higher = more robust. Always an
        upper bound on the true minimal radius, since a flipping point was evaluated.
    relative_radius : Tensor (B,)
        ``radius / ||x||_2``.
    flipped : Tensor (B,), bool
        Whether a label-changing perturbation was found.
    perturbation : Tensor, shape like ``x``
        A perturbation of norm ``radius`` with ``argmax f(x + perturbation) != argmax f(x)``;
        zero where none was found.
    """

    radius: Tensor
    relative_radius: Tensor
    flipped: Tensor
    perturbation: Tensor


def _radius_result(radius: Tensor, perturbation: Tensor, x: Tensor) -> RadiusResult:
    return RadiusResult(radius=radius, relative_radius=radius / _flat_norm(x), flipped=radius.isfinite(),
                        perturbation=perturbation)


def _pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor,
    eps: Tensor,
    start: Tensor,
    group: Tensor,
    *,
    steps: int,
    restarts: int,
    step_size_factor: float,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""Targeted PGD-L2 runs, one per row: maximise :math:`f_t - f_y` over :math:`\|\delta\|_2 \le \varepsilon`.

    Rows that share a ``group`` id (the same input) stop together at the first success of any of them:
    the run has shown a flip within its radius, and looking for smaller radii is the search's job.

    Returns per row: the norm of the first flipping iterate (``inf`` if none) and that iterate, whether
    the row ran all its steps without a flip (a failure, evidence that no flip exists within ``eps``), and
    the best margin reached with the gradient norm there (a failure's Newton step towards the boundary).
    """
    rows_total = x.shape[0]
    found = torch.full((rows_total,), math.inf, dtype=x.dtype, device=x.device)
    found_delta = torch.zeros_like(x)
    ran_out = torch.zeros(rows_total, dtype=torch.bool, device=x.device)
    best_margin = torch.full_like(found, -math.inf)
    best_grad_norm = torch.zeros_like(found)
    groups = int(group.max()) + 1 if rows_total else 0
    for restart in range(restarts):
        if restart == 0:
            delta = start.clone()
        else:
            u = _randn(x.shape, gen, x)
            u = u / _bcast(_flat_norm(u), u)
            # radius eps * U^(1/d) makes the start uniform in the ball
            rad = torch.rand(rows_total, generator=gen, dtype=x.dtype).to(x.device)
            delta = u * _bcast(eps * rad ** (1.0 / x[0].numel()), u)
        for step in range(steps + 1):
            hit = torch.zeros(groups, dtype=torch.bool, device=x.device)
            hit[group[found.isfinite()]] = True
            rows = (~hit[group]).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            d = delta[rows].requires_grad_(True)
            f = _logits(model, x[rows] + d)
            flip = f.detach().argmax(dim=1) != y[rows]
            found[rows] = torch.where(flip, _flat_norm(d.detach()), found[rows])
            found_delta[rows] = torch.where(_bcast(flip, d), d.detach(), found_delta[rows])
            if step == steps:
                ran_out[rows] = ~flip
                break
            margin = f.gather(1, target[rows, None]) - f.gather(1, y[rows, None])
            (grad,) = torch.autograd.grad(margin.sum(), d)
            g_norm = _flat_norm(grad)
            better = margin.detach().squeeze(1) > best_margin[rows]
            best_margin[rows] = torch.where(better, margin.detach().squeeze(1), best_margin[rows])
            best_grad_norm[rows] = torch.where(better, g_norm, best_grad_norm[rows])
            # a zero gradient gives a zero step (not NaN)
            g_norm = _bcast(g_norm, grad)
            grad = torch.where(g_norm > 0, grad / g_norm.clamp_min(torch.finfo(grad.dtype).tiny),
                               torch.zeros_like(grad))
            e = _bcast(eps[rows], grad)
            d = d.detach() + (step_size_factor / steps) * e * grad
            d_norm = _bcast(_flat_norm(d), d)
            delta[rows] = d * torch.where(d_norm > e, e / d_norm, torch.ones_like(d_norm))
    ran_out &= ~found.isfinite()
    return found, found_delta, ran_out, best_margin, best_grad_norm


def _group_min(values: Tensor, group: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """Per group: the smallest value and the row that holds it (``inf`` and row -1 for a group without rows)."""
    low = torch.full((groups,), math.inf, dtype=values.dtype, device=values.device)
    low = low.scatter_reduce(0, group, values, reduce="amin")
    at = torch.full((groups,), -1, dtype=torch.long, device=values.device)
    is_min = values == low[group]
    at[group[is_min]] = is_min.nonzero().squeeze(1)  # any row attaining the minimum
    return low, at


def _linearised_distances(model: nn.Module, x: Tensor, orig: Tensor, targets: Tensor) -> Tensor:
    r""":math:`|f_t - f_y| / \|\nabla f_t - \nabla f_y\|_2` at ``x`` for every target column (DeepFool's first step)."""
    xg = x.clone().requires_grad_(True)
    f = _logits(model, xg)
    n_t = targets.shape[1]
    grads = [torch.autograd.grad(f.gather(1, c[:, None]).sum(), xg, retain_graph=True)[0]
             for c in [orig] + list(targets.T)]
    margins = f.detach().gather(1, targets) - f.detach().gather(1, orig[:, None])
    w_norm = torch.stack([_flat_norm(grads[j + 1] - grads[0]) for j in range(n_t)], dim=1)
    dist = margins.abs() / w_norm
    return torch.where(dist.isfinite(), dist, torch.full_like(dist, math.inf))


def pgd_l2_radius(
    model: nn.Module,
    x: Tensor,
    *,
    steps: int = 20,
    restarts: int = 1,
    step_size_factor: float = 2.5,
    num_targets: int = 9,
    eps_low: float = 1e-3,
    eps_high: float = 4.0,
    search_steps: int = 10,
    rtol: float = 0.005,
    per_round: int = 4,
    init: Tensor | None = None,
    exhaustive: bool = False,
    seed: int = 0,
    callback: Callable[[int], None] | None = None,
) -> RadiusResult:
    r"""Smallest L2 radius at which a targeted PGD-L2 attack changes the prediction, searched per input and target.

    For a radius :math:`\varepsilon` and a target :math:`t` among the ``num_targets`` classes with the
    largest original logits after the predicted class :math:`y`, a run is projected gradient ascent on
    the targeted margin

    .. math:: \max_{\|\delta\|_2 \le \varepsilon} f_t(x+\delta) - f_y(x+\delta),\qquad
              \delta \leftarrow \Pi_\varepsilon\Big(\delta + \alpha
              \frac{\nabla_\delta}{\|\nabla_\delta\|_2}\Big),\quad
              \alpha = \text{step\_size\_factor}\cdot\varepsilon/\text{steps}

    (Madry et al. 2018 step rule; one targeted run per class is the MultiTargeted attack of Gowal
    et al. 2019). A targeted margin makes each run aim at one decision boundary: an untargeted loss
    follows the runner-up logit, whose boundary need not be the nearest one. Every iterate is checked,
    and any iterate whose prediction differs from :math:`y` (to any class) is a success whose norm is
    recorded. The returned radius is the smallest such norm -- an upper bound on the minimal radius (a
    flipping point exists there); a failure at :math:`\varepsilon` is only evidence, not proof, that no
    smaller radius exists.

    The radius of an input is :math:`\min_t \varepsilon_t`, the smallest radius at which some target's
    run succeeds, found as follows:

    1. upper end ``hi``: the norm of ``init`` (default: DeepFool's perturbation, :func:`deepfool`) where
       ``x + init`` flips and lies within :math:`\text{eps\_high}\,\|x\|_2`; elsewhere one run of every
       target at that radius;
    2. then in rounds, up to ``per_round`` targets not yet settled run once each: the one that holds
       ``hi``, then the nearest by their current estimates. A target's radius is a Newton step
       :math:`\varepsilon + |m| / \|\nabla m\|` from its last failure (:math:`m < 0` the best margin
       that run reached; at first DeepFool's linearised distance :math:`|f_t - f_y| / \|\nabla f_t -
       \nabla f_y\|` from :math:`x`), raised by ``rtol / 2``; without one, bisection of
       :math:`\log\varepsilon`; always above the bracket's lower quarter point and at most
       :math:`\text{hi}/(1+\text{rtol})`. The target that holds ``hi`` starts from ``hi``'s
       perturbation scaled into its ball, so that a success takes a few steps; the others start from
       :math:`\delta = 0`, so that their failures are their own evidence. A success lowers ``hi``; a
       target is settled once it has failed at :math:`\text{hi}/(1+\text{rtol})` or above.

    An input is done when all its targets are settled, or after ``search_steps`` rounds. A target far
    from the boundary costs one failing run, the nearest two or three. Where several targets are about
    equally near (a network whose logits hardly depend on the input) the rounds run out first, and the
    radius is the smallest flip found by then.

    ``exhaustive=True`` is the search of lpc before this one, kept for comparison: every target at every
    radius from :math:`\delta = 0`, plain bisection of :math:`\log\varepsilon` in
    ``[eps_low, eps_high]`` :math:`\cdot\|x\|_2` over ``search_steps`` steps (relative resolution
    :math:`(\text{eps\_high}/\text{eps\_low})^{2^{-\text{search\_steps}}}`, 0.8% with the defaults;
    ``rtol`` and ``init`` unused). On the embedded MNIST ``ib`` and ``no_pen`` models (100 test inputs)
    the default search agrees with it within 0.15% in the mean and from -1.5% to +0.5% per input (one
    input 7.9% lower, where DeepFool's own perturbation is smaller than anything the exhaustive search
    found), at a fifth of its forward and backward passes.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, ...)
    steps : int, default 20
        PGD iterations per run.
    restarts : int, default 1
        Runs per target and radius (the first from the start above, the others uniformly in the ball).
    step_size_factor : float, default 2.5
        :math:`\alpha = \text{step\_size\_factor} \cdot \varepsilon / \text{steps}`.
    num_targets : int, default 9
        Target classes per input (top logits after the prediction; capped at K - 1).
        With 10 classes, 9 targets cover every class.
    eps_low, eps_high : float, default 1e-3, 4.0
        Search range for :math:`\varepsilon / \|x\|_2`.
    search_steps : int, default 10
        Most search rounds after the upper end.
    rtol : float, default 0.005
        Relative width below ``hi`` within which every target must have failed.
    per_round : int, default 4
        Most targets per input and round (fewer: cheaper where many targets are near, but the rounds
        may run out before the nearest is searched).
    init : Tensor like ``x``, optional
        Perturbations whose flipping norms give the first upper ends; default DeepFool's (which costs
        one DeepFool run; :func:`robustness_summary` passes the one it has).
    exhaustive : bool, default False
        The exhaustive search described above.
    seed : int, default 0
        Seed of the random starts (unused when ``restarts == 1``).
    callback : callable, optional
        Called with 1 after each round (at most ``1 + search_steps``), e.g. to advance a progress bar.

    Returns
    -------
    RadiusResult
        ``radius = +inf`` and ``flipped = False`` for inputs not flipped at ``eps_high``.

    Notes
    -----
    Cost on the embedded MNIST MLPs with the defaults: 250-320 forward and backward passes per input,
    mostly one failing run of ``steps`` per target (the exhaustive search: about 1,550, every target
    failing at each radius tried below the radius).
    """
    for name, val in (("steps", steps), ("restarts", restarts), ("num_targets", num_targets)):
        if int(val) != val or val < 1:
            raise ValueError(f"pgd_l2_radius: {name} must be an integer >= 1, got {val}")
    if int(search_steps) != search_steps or search_steps < 0:
        raise ValueError(f"pgd_l2_radius: search_steps must be an integer >= 0, got {search_steps}")
    if not 0 < eps_low < eps_high:
        raise ValueError(f"pgd_l2_radius: need 0 < eps_low < eps_high, got {eps_low}, {eps_high}")
    if step_size_factor <= 0:
        raise ValueError(f"pgd_l2_radius: step_size_factor must be > 0, got {step_size_factor}")
    if not rtol > 0:
        raise ValueError(f"pgd_l2_radius: rtol must be > 0, got {rtol}")
    if int(per_round) != per_round or per_round < 1:
        raise ValueError(f"pgd_l2_radius: per_round must be an integer >= 1, got {per_round}")
    x = _prepare(model, x, "pgd_l2_radius")
    if init is not None and (not isinstance(init, Tensor) or init.shape != x.shape):
        raise ValueError(f"pgd_l2_radius: init must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(getattr(init, 'shape', ()))}")
    if init is not None and exhaustive:
        raise ValueError("pgd_l2_radius: init is not used by the exhaustive search; pass one of them")
    if init is None and not exhaustive:
        init = deepfool(model, x).r
    gen = _generator(seed)
    tick = callback or (lambda n: None)
    with _evaluating(model):
        with torch.no_grad():
            logits0 = _logits(model, x)
        batch, num_classes = logits0.shape
        n_t = min(int(num_targets), num_classes - 1)
        if n_t < 1:
            none = torch.full((batch,), math.inf, dtype=x.dtype, device=x.device)
            return _radius_result(none, torch.zeros_like(x), x)
        top = logits0.topk(n_t + 1, dim=1).indices
        orig, targets = top[:, 0], top[:, 1:]
        x_norm = _flat_norm(x)

        def attack(inp: Tensor, col: Tensor, eps: Tensor, start: Tensor | None = None, *,
                   stop_together: bool = True) -> tuple[Tensor, ...]:
            """Runs of rows (input ``inp``, target column ``col``) at radius ``eps`` from ``start`` (default
            delta = 0); with ``stop_together`` the rows of one input stop at its first success."""
            xr = x[inp]
            group = inp if stop_together else torch.arange(len(inp), device=x.device)
            return _pgd_attack(model, xr, orig[inp], targets[inp, col], eps,
                               torch.zeros_like(xr) if start is None else start, group, steps=steps,
                               restarts=restarts, step_size_factor=step_size_factor, gen=gen)

        if exhaustive:
            return _radius_result(*_exhaustive_search(attack, x, n_t, eps_low, eps_high, search_steps, tick), x)

        # per input: the smallest flipping norm so far (hi), its perturbation and the target column whose
        # run found it (the lead); per input and target: the Newton estimate of its radius (first DeepFool's
        # linearised distance from x) and the largest radius at which its run failed
        newton = _linearised_distances(model, x, orig, targets)
        hi = torch.full((batch,), math.inf, dtype=x.dtype, device=x.device)
        hi_delta = torch.zeros_like(x)
        lead = newton.argmin(dim=1)
        if init is not None:
            init = init.detach().to(x)
            with torch.no_grad():
                label = _logits(model, x + init).argmax(dim=1)
            ok = (label != orig) & (_flat_norm(init) <= eps_high * x_norm)
            hi = torch.where(ok, _flat_norm(init), hi)
            hi_delta[ok] = init[ok]
            hit = targets == label[:, None]  # init's class leads where it is a target
            lead = torch.where(hit.any(dim=1), hit.int().argmax(dim=1), lead)
        failed_at = torch.zeros((batch, n_t), dtype=x.dtype, device=x.device)

        def record(inp, col, eps, found, found_delta, ran_out) -> None:
            failed_at[inp[ran_out], col[ran_out]] = eps[ran_out]
            low, at = _group_min(found, inp, batch)
            better = (low < hi).nonzero().squeeze(1)
            hi[better] = low[better]
            hi_delta[better] = found_delta[at[better]]
            lead[better] = col[at[better]]

        # 1. the upper end, where init gave none: every target at eps_high, from delta = 0
        need = (~hi.isfinite()).nonzero().squeeze(1)
        if need.numel() > 0:
            inp = need.repeat_interleave(n_t)
            col = torch.arange(n_t, device=x.device).repeat(need.numel())
            eps = eps_high * x_norm[inp]
            found, found_delta, ran_out, _, _ = attack(inp, col, eps)
            record(inp, col, eps, found, found_delta, ran_out)
        tick(1)

        # 2. every target still open (not failed within a factor 1 + rtol below hi) takes one run per round
        floor = eps_low * x_norm
        for _ in range(int(search_steps)):
            goal = hi / (1 + rtol)  # a failure here settles a target
            open_ = (failed_at < goal[:, None]) & hi.isfinite()[:, None]
            if not bool(open_.any()):
                break
            # at most `per_round` targets per input: the lead, then the nearest by estimate (a target whose
            # estimate a success has refuted is near); a far target fails once, late
            rank = torch.where(newton.isnan(), hi[:, None], newton)
            rank[torch.arange(batch, device=x.device), lead] = -math.inf
            rank = torch.where(open_, rank, torch.full_like(rank, math.inf))
            chosen = rank.argsort(dim=1)[:, :per_round]
            keep = open_.gather(1, chosen)
            inp = torch.arange(batch, device=x.device)[:, None].expand_as(chosen)[keep]
            col = chosen[keep]
            lo = torch.maximum(failed_at[inp, col], floor[inp])
            h = hi[inp]
            # a Newton step lands just above the estimate; without one, bisect (hi / 2 stands in for a
            # lower end that is far or untried); either stays above the bracket's lower quarter point
            est = newton[inp, col]
            guess = torch.where(est.isfinite(), est * (1 + rtol / 2), torch.sqrt(torch.maximum(lo, h / 2) * h))
            eps = torch.minimum(torch.maximum(guess, lo ** 0.75 * h ** 0.25), goal[inp])
            # the lead starts from the best flipping perturbation scaled into its ball (a success then takes
            # a few steps); the others from delta = 0, so that their failures are evidence of their own
            scale = torch.where(col == lead[inp], eps / h, torch.zeros_like(eps))
            start = hi_delta[inp] * _bcast(scale, hi_delta[inp])
            found, found_delta, ran_out, margin, grad_norm = attack(inp, col, eps, start, stop_together=False)
            record(inp, col, eps, found, found_delta, ran_out)
            # a failure gives the next Newton step eps + |m| / ||grad m||; a success keeps the last step
            # while it is still below hi
            step = eps + (-margin) / grad_norm.clamp_min(torch.finfo(x.dtype).tiny)
            usable = ran_out & (margin < 0) & (grad_norm > 0)
            kept = ~ran_out & (newton[inp, col] <= hi[inp])
            newton[inp, col] = torch.where(usable, step, torch.where(kept, newton[inp, col], torch.nan))
            tick(1)
    return _radius_result(hi, hi_delta, x)


def _exhaustive_search(attack, x: Tensor, n_t: int, eps_low: float, eps_high: float, search_steps: int,
                       tick: Callable[[int], None]) -> tuple[Tensor, Tensor]:
    """Every target at every radius from delta = 0; bisection of log(eps) in [eps_low, eps_high] * ||x||."""
    x_norm = _flat_norm(x)
    best_delta = torch.zeros_like(x)

    def every_target(sel: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        inp = sel.repeat_interleave(n_t)
        col = torch.arange(n_t, device=sel.device).repeat(sel.numel())
        found, found_delta = attack(inp, col, eps.repeat_interleave(n_t))[:2]
        low, at = found.view(-1, n_t).min(dim=1)
        return low, found_delta.view(-1, n_t, *x.shape[1:])[torch.arange(sel.numel(), device=x.device), at]

    best, best_delta = every_target(torch.arange(len(x), device=x.device), eps_high * x_norm)
    tick(1)
    lo = torch.full_like(best, eps_low) * x_norm
    for _ in range(int(search_steps)):
        sel = (best.isfinite() & (lo < best)).nonzero().squeeze(1)
        if sel.numel() == 0:
            break
        mid = torch.sqrt(lo[sel] * best[sel])
        got, got_delta = every_target(sel, mid)
        better = got < best[sel]
        best_delta[sel[better]] = got_delta[better]
        best[sel] = torch.minimum(best[sel], got)
        lo[sel] = torch.where(got.isfinite(), lo[sel], mid)
        tick(1)
    return best, best_delta


def bisection_radius(
    model: nn.Module,
    x: Tensor,
    directions: Tensor,
    *,
    search_steps: int = 16,
    max_scale: float = 4.0,
    grid_steps: int = _GRID_STEPS,
    callback: Callable[[int], None] | None = None,
) -> RadiusResult:
    r"""Gradient-free radius along given directions: smallest flipping scale by bracketing and bisection.

    For each input :math:`x` and unit direction :math:`d` (directions are normalised
    here), find the smallest :math:`t > 0` with :math:`\arg\max f(x + t d) \neq y`,
    :math:`y = \arg\max f(x)`:

    1. bracket: test :math:`t = T\,2^{-(G-1)}, T\,2^{-(G-2)}, \dots, T` with
       :math:`T = \text{max\_scale}\cdot\|x\|_2`, :math:`G` = ``grid_steps``, stopping
       at the first flip;
    2. bisect the last non-flipping / first flipping pair ``search_steps`` times.

    The radius of an input is the minimum over its directions of the flipping end of
    the final bracket. A direction whose non-flipping end already lies at or beyond another
    direction's flipping end cannot lower that minimum, so it is dropped (this changes no
    result and saves most of the passes). It is an upper bound on the true minimal radius: only the given
    directions are searched, and if the prediction changes and changes back inside a
    bracket the crossing found need not be the first. The bracket width after bisection
    is :math:`2^{-\text{search\_steps}}` of the first flipping grid scale (2e-5 relative
    with the defaults). A crossing below the first grid point is found by bisecting
    :math:`[0, T\,2^{-(G-1)}]`.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, ...)
    directions : Tensor (D, ...) or (B, D, ...)
        Shared directions, or D directions per input. Need not be normalised; zero
        directions are an error.
    search_steps : int, default 16
        Bisection steps.
    max_scale : float, default 4.0
        Largest scale searched, in units of :math:`\|x\|_2`.
    grid_steps : int, default 12
        Points of the doubling bracket grid (smallest scale ``max_scale * 2**-(grid_steps-1)``).
    callback : callable, optional
        Called with 1 after each grid point and bisection step (at most ``grid_steps + search_steps``).

    Returns
    -------
    RadiusResult
        ``radius = +inf`` where no direction flips within ``max_scale * ||x||``.

    Notes
    -----
    Cost: at most ``grid_steps + search_steps`` forward passes over ``B * D`` inputs, no
    gradients; the bisection steps mostly over one direction per input.
    """
    if int(search_steps) != search_steps or search_steps < 0:
        raise ValueError(f"bisection_radius: search_steps must be an integer >= 0, got {search_steps}")
    if int(grid_steps) != grid_steps or grid_steps < 1:
        raise ValueError(f"bisection_radius: grid_steps must be an integer >= 1, got {grid_steps}")
    if not max_scale > 0:
        raise ValueError(f"bisection_radius: max_scale must be > 0, got {max_scale}")
    x = _prepare(model, x, "bisection_radius")
    batch, shape = x.shape[0], x.shape[1:]
    d = directions.detach().to(device=x.device, dtype=x.dtype)
    if d.shape[1:] == shape:
        d = d.unsqueeze(0).expand(batch, *d.shape)
    if d.dim() != x.dim() + 1 or d.shape[0] != batch or d.shape[2:] != shape:
        raise ValueError(f"bisection_radius: directions must have shape (D, {tuple(shape)}) or "
                         f"({batch}, D, {tuple(shape)}), got {tuple(directions.shape)}")
    n_dir = d.shape[1]
    d = d.reshape(batch * n_dir, *shape)
    d_norm = _flat_norm(d)
    if not bool((d_norm > 0).all()):
        raise ValueError("bisection_radius: directions contain a zero vector")
    d = d / _bcast(d_norm, d)

    with _evaluating(model):
        orig = _predict(model, x)
        xr = x.repeat_interleave(n_dir, dim=0)
        yr = orig.repeat_interleave(n_dir)

        def flips(rows: Tensor, t: Tensor) -> Tensor:
            return _predict(model, xr[rows] + _bcast(t, d[rows]) * d[rows]) != yr[rows]

        t_max = (max_scale * _flat_norm(x)).repeat_interleave(n_dir)
        lo = torch.zeros_like(t_max)
        hi = torch.full_like(t_max, math.inf)

        def useful() -> Tensor:
            """Directions whose bracket still reaches below the input's smallest flipping end."""
            return lo < hi.view(batch, n_dir).min(dim=1).values.repeat_interleave(n_dir)

        for j in range(int(grid_steps)):
            rows = (~hi.isfinite() & useful()).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            t = t_max[rows] * 2.0 ** -(grid_steps - 1 - j)
            hit = flips(rows, t)
            hi[rows[hit]] = t[hit]
            lo[rows[~hit]] = t[~hit]
            if callback is not None:
                callback(1)
        for _ in range(int(search_steps)):
            rows = (hi.isfinite() & useful()).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            mid = 0.5 * (lo[rows] + hi[rows])
            hit = flips(rows, mid)
            hi[rows] = torch.where(hit, mid, hi[rows])
            lo[rows] = torch.where(hit, lo[rows], mid)
            if callback is not None:
                callback(1)
    radius, best = hi.view(batch, n_dir).min(dim=1)
    direction = d.view(batch, n_dir, *shape)[torch.arange(batch, device=x.device), best]
    perturbation = torch.where(_bcast(radius.isfinite(), x), _bcast(radius, x) * direction, torch.zeros_like(x))
    return _radius_result(radius, perturbation, x)


# --------------------------------------------------------------------------- Lipschitz


def lipschitz_estimate(model: nn.Module, x: Tensor, *, iters: int = 20, seed: int = 0, tol: float = 1e-4,
                       callback: Callable[[int], None] | None = None) -> Tensor:
    r"""Local Lipschitz constant: spectral norm of the input-to-logits Jacobian at each input.

    .. math:: L(x) = \|J_f(x)\|_2 = \max_{\|v\|_2 = 1} \|J_f(x)\, v\|_2,

    estimated by power iteration on :math:`J^\top J`:
    :math:`v \leftarrow J^\top J v / \|J^\top J v\|`, batched over inputs (valid because
    samples are independent in eval mode). One forward pass builds the graph once;
    :math:`J^\top u` is a backward pass through it, and :math:`J v` uses the
    double-backward trick: :math:`g(u) = J^\top u` is linear in :math:`u`, so
    :math:`J v = \partial (g(u) \cdot v) / \partial u`. Unlike ``torch.func.jvp`` this
    needs no forward-mode AD support from the model and no functorch warm-up (about a
    second on a CPU). Returns :math:`\|J v\|_2` for the final unit :math:`v`.

    This is the local counterpart of the constant :math:`L` in the paper's Eq. (4): the
    global constant is at least :math:`\max_x L(x)`. Power iteration approaches
    :math:`\|J\|_2` from below, at rate :math:`(\sigma_2/\sigma_1)^{2\,\text{iters}}`.
    Higher = less smooth.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, ...)
    iters : int, default 20
        Most power iterations.
    seed : int, default 0
        Seed of the random start vector.
    tol : float, default 1e-4
        Stop early once no input's estimate changed by more than this fraction in the last
        iteration (0: always run ``iters``). Smooth, well-separated spectra converge in about 10.
    callback : callable, optional
        Called with 1 after each iteration (at most ``iters``), e.g. to advance a progress bar.

    Returns
    -------
    Tensor (B,)
    """
    if int(iters) != iters or iters < 1:
        raise ValueError(f"lipschitz_estimate: iters must be an integer >= 1, got {iters}")
    if not tol >= 0:
        raise ValueError(f"lipschitz_estimate: tol must be >= 0, got {tol}")
    x = _prepare(model, x, "lipschitz_estimate")
    v = _randn(x.shape, _generator(seed), x)
    v = v / _bcast(_flat_norm(v), v)
    with _evaluating(model):
        xg = x.requires_grad_(True)
        out = _logits(model, xg)
        u = torch.zeros_like(out, requires_grad=True)
        (jt_u,) = torch.autograd.grad(out, xg, u, create_graph=True)  # J^T u as a function of u

        def jvp(vec: Tensor) -> Tensor:
            return torch.autograd.grad(jt_u, u, vec, retain_graph=True)[0]

        sigma = previous = None
        for k in range(int(iters) + 1):
            jv = jvp(v)
            sigma = _flat_norm(jv.detach())
            if k == iters or (previous is not None and bool(((sigma - previous).abs() <= tol * sigma).all())):
                break
            previous = sigma
            (w,) = torch.autograd.grad(out, xg, jv, retain_graph=True)
            w_norm = _bcast(_flat_norm(w), w)
            # a zero Jacobian leaves v = 0 and the estimate 0, not NaN
            v = torch.where(w_norm > 0, w / w_norm.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))
            if callback is not None:
                callback(1)
    return sigma


# --------------------------------------------------------------------------- summary


def robustness_summary(
    model: nn.Module,
    x: Tensor,
    *,
    n: int = 100,
    seed: int = 0,
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int = 10,
    pgd: bool = True,
    pgd_steps: int = 20,
    pgd_restarts: int = 1,
    pgd_step_size_factor: float = 2.5,
    pgd_num_targets: int | None = None,
    pgd_eps_low: float = 1e-3,
    pgd_eps_high: float = 4.0,
    pgd_search_steps: int = 10,
    pgd_per_round: int = 4,
    pgd_exhaustive: bool = False,
    bisection: bool = True,
    bisection_directions: int = 4,
    bisection_search_steps: int = 16,
    bisection_max_scale: float = 4.0,
    lipschitz: bool = True,
    lipschitz_iters: int = 20,
    details: bool = False,
    progress: Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]] | None = None,
) -> dict[str, float]:
    r"""All robustness numbers of one model on the same ``n`` random inputs, as a flat dict of floats.

    Inputs are ``x[select_inputs(n, len(x), seed=seed)]`` (paper: 100 test inputs).

    Keys (exactly these, :data:`SUMMARY_KEYS`; relative values are divided by
    :math:`\|x\|_2` per input and then averaged):

    ``robustness_deepfool``
        Mean DeepFool :math:`\|r\|/\|x\|` (the paper's Table 2 score), over all chosen
        inputs whether flipped or not. Higher = more robust.
    ``deepfool_flip_rate``
        Fraction of chosen inputs whose DeepFool perturbation really changes the label.
    ``robustness_pgd_l2``
        Mean PGD-L2 radius / :math:`\|x\|` (:func:`pgd_l2_radius`). Inputs not flipped
        at ``pgd_eps_high`` count as ``pgd_eps_high`` (censored, so the mean is finite
        and a lower bound of the uncensored one); a ``RuntimeWarning`` gives their count.
    ``robustness_bisection``
        Mean over inputs of the smallest :func:`bisection_radius` / :math:`\|x\|` over
        ``bisection_directions`` seeded random unit directions plus the DeepFool
        direction :math:`r/\|r\|`; censored at ``bisection_max_scale`` like PGD.
    ``lipschitz_mean``, ``lipschitz_max``
        Mean and max of :func:`lipschitz_estimate` over the inputs. Higher = less smooth.
    ``robustness_inputs``
        Number of inputs used, ``min(n, len(x))``.

    A disabled part (``pgd=False``, ``bisection=False``, ``lipschitz=False``) reports
    ``nan``. With ``details=True`` three more keys are added: ``pgd_unflipped``,
    ``bisection_unflipped`` (counts of censored inputs) and ``deepfool_mean_iterations``.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (N, ...)
        Pool of (test) inputs to draw from; may live on another device than the model.
    n, seed :
        Number of inputs and the seed for choosing them (also seeds PGD restarts,
        bisection directions and the power-iteration start).
    overshoot, max_iter, num_candidates :
        DeepFool options (:func:`deepfool`); ``num_candidates - 1`` is also the default
        number of PGD targets.
    pgd, pgd_steps, pgd_restarts, pgd_step_size_factor, pgd_num_targets :
        Whether to run :func:`pgd_l2_radius`, and its options.
    pgd_eps_low, pgd_eps_high, pgd_search_steps, pgd_per_round, pgd_exhaustive :
        More :func:`pgd_l2_radius` options; ``pgd_eps_*`` in units of :math:`\|x\|`. The search starts from
        the DeepFool perturbations computed here (``pgd_exhaustive=True``: the exhaustive search).
    bisection_directions, bisection_search_steps, bisection_max_scale :
        Number of random directions (the DeepFool direction is added) and
        :func:`bisection_radius` options.
    lipschitz_iters :
        Power iterations of :func:`lipschitz_estimate`.
    details : bool, default False
        Add the diagnostic keys listed above.
    progress : callable, optional
        ``progress(name, total)`` returns a context manager that yields ``advance(n)``; each part
        (``"DeepFool"``, ``"PGD-L2"``, ``"bisection"``, ``"Lipschitz"``) runs inside one and advances
        it to ``total``, e.g. for progress bars and timings.

    Returns
    -------
    dict[str, float]

    Notes
    -----
    With the defaults, an MNIST MLP on 100 inputs takes about two seconds on a CPU, a
    ResNet-18 on 32x32 inputs a few minutes on two CPU cores (docs/benchmarks.md lists the parts).
    """
    idx = select_inputs(n, len(x), seed=seed)
    x = _prepare(model, x[idx], "robustness_summary")
    phase = _filled(progress) if progress is not None else _no_progress
    with phase("DeepFool", len(x)) as advance:
        df = deepfool(model, x, overshoot=overshoot, max_iter=max_iter, num_candidates=num_candidates,
                      callback=advance)
    out = {
        "robustness_deepfool": float(df.relative_norm.mean()),
        "deepfool_flip_rate": float(df.flipped.double().mean()),
        "robustness_pgd_l2": math.nan,
        "robustness_bisection": math.nan,
        "lipschitz_mean": math.nan,
        "lipschitz_max": math.nan,
        "robustness_inputs": float(len(idx)),
    }
    extra = {"pgd_unflipped": math.nan, "bisection_unflipped": math.nan,
             "deepfool_mean_iterations": float(df.iterations.double().mean())}

    def censored_mean(res: RadiusResult, cap: float, what: str) -> tuple[float, float]:
        unflipped = int((~res.flipped).sum())
        if unflipped:
            warnings.warn(f"robustness_summary: {what} found no label change for {unflipped} of "
                          f"{len(res.flipped)} inputs within {cap} * ||x||; they count as {cap}",
                          RuntimeWarning, stacklevel=3)
        return float(res.relative_radius.clamp(max=cap).mean()), float(unflipped)

    if pgd:
        with phase("PGD-L2", 1 + pgd_search_steps) as advance:
            res = pgd_l2_radius(
                model, x, steps=pgd_steps, restarts=pgd_restarts, step_size_factor=pgd_step_size_factor,
                num_targets=pgd_num_targets if pgd_num_targets is not None else max(num_candidates - 1, 1),
                eps_low=pgd_eps_low, eps_high=pgd_eps_high, search_steps=pgd_search_steps, seed=seed,
                per_round=pgd_per_round, init=None if pgd_exhaustive else df.r, exhaustive=pgd_exhaustive,
                callback=advance)
        out["robustness_pgd_l2"], extra["pgd_unflipped"] = censored_mean(res, pgd_eps_high, "PGD-L2")
    if bisection:
        gen = _generator(seed)
        rand = _randn((len(x), bisection_directions + 1) + tuple(x.shape[1:]), gen, x)
        r_norm = _bcast(_flat_norm(df.r), df.r)
        # where DeepFool returned r = 0 (no usable gradient) the spare random draw stands in
        df_dir = torch.where(r_norm > 0, df.r / r_norm.clamp_min(torch.finfo(x.dtype).tiny), rand[:, -1])
        dirs = torch.cat([rand[:, :-1], df_dir.unsqueeze(1)], dim=1)
        with phase("bisection", _GRID_STEPS + bisection_search_steps) as advance:
            res = bisection_radius(model, x, dirs, search_steps=bisection_search_steps,
                                   max_scale=bisection_max_scale, callback=advance)
        out["robustness_bisection"], extra["bisection_unflipped"] = censored_mean(
            res, bisection_max_scale, "bisection")
    if lipschitz:
        with phase("Lipschitz", lipschitz_iters) as advance:
            lip = lipschitz_estimate(model, x, iters=lipschitz_iters, seed=seed, callback=advance)
        out["lipschitz_mean"] = float(lip.mean())
        out["lipschitz_max"] = float(lip.max())
    if details:
        out.update(extra)
    return out
