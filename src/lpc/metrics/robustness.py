"""Adversarial robustness of a trained classifier: DeepFool (the paper's score), PGD-L2 and bisection radii, local Lipschitz constants.

The paper's robustness score (Table 2, central column; Sec. 3.2) is the DeepFool
perturbation norm divided by the input norm, averaged over 100 random test inputs
(Moosavi-Dezfooli et al., 2016). DeepFool is a linearisation, so this module also
measures two independent upper bounds on the minimal adversarial radius (a PGD-L2
attack inside a binary search over the radius, and a gradient-free bisection along
fixed directions) and the local Lipschitz constant the paper links robustness to
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
from typing import Iterator

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

        while bool(active.any()):
            idx = active.nonzero().squeeze(1)
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
    """

    radius: Tensor
    relative_radius: Tensor
    flipped: Tensor


def _radius_result(radius: Tensor, x: Tensor) -> RadiusResult:
    return RadiusResult(radius=radius, relative_radius=radius / _flat_norm(x), flipped=radius.isfinite())


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
    seed: int = 0,
) -> RadiusResult:
    r"""Smallest L2 radius at which a PGD-L2 attack changes the prediction, by binary search.

    For a radius :math:`\varepsilon` the attack runs, for each target :math:`t` among
    the ``num_targets`` classes with the largest original logits after the predicted
    class :math:`y`, projected gradient ascent on the targeted margin

    .. math:: \max_{\|\delta\|_2 \le \varepsilon} f_t(x+\delta) - f_y(x+\delta),\qquad
              \delta \leftarrow \Pi_\varepsilon\Big(\delta + \alpha
              \frac{\nabla_\delta}{\|\nabla_\delta\|_2}\Big),\quad
              \alpha = \text{step\_size\_factor}\cdot\varepsilon/\text{steps}

    (Madry et al. 2018 step rule; one targeted run per class is the MultiTargeted
    attack of Gowal et al. 2019). A targeted margin is used instead of the cross-entropy
    because it makes each sub-problem aim at one decision boundary: an untargeted loss
    follows the runner-up logit, whose boundary need not be the nearest one. Restart 0
    starts at :math:`\delta = 0`; restarts 1, 2, ... start uniformly in the ball. Every
    iterate is checked, and any iterate whose prediction differs from :math:`y` (to any
    class) is a success whose norm :math:`\|\delta\|_2 \le \varepsilon` is recorded.

    The radius is searched per input, in units of :math:`\|x\|_2`, geometrically
    (bisection of :math:`\log\varepsilon`) in ``[eps_low, eps_high]``: first at
    ``eps_high``, then ``search_steps`` bisections, where a success sets the upper end
    to the smallest successful norm found. The returned radius is that norm -- an upper
    bound on the minimal radius (a flipping point exists there); a failure at
    :math:`\varepsilon` is only evidence, not proof, that no smaller radius exists.
    Relative resolution ≈ :math:`(\text{eps\_high}/\text{eps\_low})^{2^{-\text{search\_steps}}}`
    (0.8% with the defaults).

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, ...)
    steps : int, default 20
        PGD iterations per run.
    restarts : int, default 1
        Runs per target and radius (the first from :math:`\delta = 0`).
    step_size_factor : float, default 2.5
        :math:`\alpha = \text{step\_size\_factor} \cdot \varepsilon / \text{steps}`.
    num_targets : int, default 9
        Target classes per input (top logits after the prediction; capped at K - 1).
        With 10 classes, 9 targets cover every class.
    eps_low, eps_high : float, default 1e-3, 4.0
        Search bracket for :math:`\varepsilon / \|x\|_2`.
    search_steps : int, default 10
        Bisection steps after the initial test at ``eps_high``.
    seed : int, default 0
        Seed of the random starts (unused when ``restarts == 1``).

    Returns
    -------
    RadiusResult
        ``radius = +inf`` and ``flipped = False`` for inputs not flipped at ``eps_high``.

    Notes
    -----
    Cost: ``(1 + search_steps) * restarts * num_targets`` PGD runs of ``steps`` forward
    and backward passes over the B inputs -- about 2,000 batched passes with the
    defaults. Cheap for an MLP on a CPU; use a GPU for ResNets.
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
    x = _prepare(model, x, "pgd_l2_radius")
    gen = _generator(seed)
    with _evaluating(model):
        with torch.no_grad():
            logits0 = _logits(model, x)
        batch, num_classes = logits0.shape
        n_t = min(int(num_targets), num_classes - 1)
        x_norm = _flat_norm(x)
        best = torch.full((batch,), math.inf, dtype=x.dtype, device=x.device)
        if n_t < 1:
            return _radius_result(best, x)
        top = logits0.topk(n_t + 1, dim=1).indices
        orig, targets = top[:, 0], top[:, 1:]

        def attack(sel: Tensor, eps: Tensor) -> Tensor:
            """Smallest flipping ||delta|| per selected input at absolute radius eps (inf if none)."""
            xr = x[sel].repeat_interleave(n_t, dim=0)
            yr = orig[sel].repeat_interleave(n_t)
            tr = targets[sel].reshape(-1)
            er = eps.repeat_interleave(n_t)
            found = torch.full((xr.shape[0],), math.inf, dtype=x.dtype, device=x.device)
            for restart in range(restarts):
                if restart == 0:
                    delta = torch.zeros_like(xr)
                else:
                    u = _randn(xr.shape, gen, xr)
                    u = u / _bcast(_flat_norm(u), u)
                    # radius eps * U^(1/d) makes the start uniform in the ball
                    rad = torch.rand(xr.shape[0], generator=gen, dtype=x.dtype).to(x.device)
                    delta = u * _bcast(er * rad ** (1.0 / xr[0].numel()), u)
                for step in range(steps + 1):
                    # An input stops at its first success (any target): the attack
                    # has shown a flip within eps, and looking for smaller radii is
                    # the binary search's job, not this run's.
                    done = found.view(-1, n_t).isfinite().any(dim=1).repeat_interleave(n_t)
                    rows = (~done).nonzero().squeeze(1)
                    if rows.numel() == 0:
                        break
                    d = delta[rows].requires_grad_(True)
                    f = _logits(model, xr[rows] + d)
                    flip = f.detach().argmax(dim=1) != yr[rows]
                    found[rows] = torch.where(flip, _flat_norm(d.detach()), found[rows])
                    if step == steps:
                        break
                    margin = f.gather(1, tr[rows, None]) - f.gather(1, yr[rows, None])
                    (grad,) = torch.autograd.grad(margin.sum(), d)
                    g_norm = _bcast(_flat_norm(grad), grad)
                    # a zero gradient gives a zero step (not NaN)
                    grad = torch.where(g_norm > 0, grad / g_norm.clamp_min(torch.finfo(grad.dtype).tiny),
                                       torch.zeros_like(grad))
                    e = _bcast(er[rows], grad)
                    d = d.detach() + (step_size_factor / steps) * e * grad
                    d_norm = _bcast(_flat_norm(d), d)
                    delta[rows] = d * torch.where(d_norm > e, e / d_norm, torch.ones_like(d_norm))
            return found.view(-1, n_t).min(dim=1).values

        everyone = torch.arange(batch, device=x.device)
        best = attack(everyone, eps_high * x_norm)
        lo = torch.full_like(best, eps_low) * x_norm
        for _ in range(int(search_steps)):
            sel = (best.isfinite() & (lo < best)).nonzero().squeeze(1)
            if sel.numel() == 0:
                break
            mid = torch.sqrt(lo[sel] * best[sel])
            got = attack(sel, mid)
            best[sel] = torch.minimum(best[sel], got)
            lo[sel] = torch.where(got.isfinite(), lo[sel], mid)
    return _radius_result(best, x)


def bisection_radius(
    model: nn.Module,
    x: Tensor,
    directions: Tensor,
    *,
    search_steps: int = 20,
    max_scale: float = 4.0,
    grid_steps: int = 16,
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
    the final bracket. It is an upper bound on the true minimal radius: only the given
    directions are searched, and if the prediction changes and changes back inside a
    bracket the crossing found need not be the first. The bracket width after bisection
    is :math:`2^{-\text{search\_steps}}` of the first flipping grid scale (1e-6 relative
    with the defaults).

    Parameters
    ----------
    model : nn.Module
    x : Tensor (B, ...)
    directions : Tensor (D, ...) or (B, D, ...)
        Shared directions, or D directions per input. Need not be normalised; zero
        directions are an error.
    search_steps : int, default 20
        Bisection steps.
    max_scale : float, default 4.0
        Largest scale searched, in units of :math:`\|x\|_2`.
    grid_steps : int, default 16
        Points of the doubling bracket grid (smallest scale ``max_scale * 2**-(grid_steps-1)``).

    Returns
    -------
    RadiusResult
        ``radius = +inf`` where no direction flips within ``max_scale * ||x||``.

    Notes
    -----
    Cost: at most ``grid_steps + search_steps`` forward passes over ``B * D`` inputs, no
    gradients.
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
        pending = torch.ones_like(t_max, dtype=torch.bool)
        for j in range(int(grid_steps)):
            rows = pending.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            t = t_max[rows] * 2.0 ** -(grid_steps - 1 - j)
            hit = flips(rows, t)
            hi[rows[hit]] = t[hit]
            lo[rows[~hit]] = t[~hit]
            pending[rows[hit]] = False
        rows = hi.isfinite().nonzero().squeeze(1)
        if rows.numel() > 0:
            for _ in range(int(search_steps)):
                mid = 0.5 * (lo[rows] + hi[rows])
                hit = flips(rows, mid)
                hi[rows] = torch.where(hit, mid, hi[rows])
                lo[rows] = torch.where(hit, lo[rows], mid)
    return _radius_result(hi.view(batch, n_dir).min(dim=1).values, x)


# --------------------------------------------------------------------------- Lipschitz


def lipschitz_estimate(model: nn.Module, x: Tensor, *, iters: int = 20, seed: int = 0) -> Tensor:
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
        Power iterations.
    seed : int, default 0
        Seed of the random start vector.

    Returns
    -------
    Tensor (B,)
    """
    if int(iters) != iters or iters < 1:
        raise ValueError(f"lipschitz_estimate: iters must be an integer >= 1, got {iters}")
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

        for _ in range(int(iters)):
            (w,) = torch.autograd.grad(out, xg, jvp(v), retain_graph=True)
            w_norm = _bcast(_flat_norm(w), w)
            # a zero Jacobian leaves v = 0 and the estimate 0, not NaN
            v = torch.where(w_norm > 0, w / w_norm.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))
        sigma = _flat_norm(jvp(v).detach())
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
    bisection: bool = True,
    bisection_directions: int = 4,
    bisection_search_steps: int = 20,
    bisection_max_scale: float = 4.0,
    lipschitz: bool = True,
    lipschitz_iters: int = 20,
    details: bool = False,
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
    pgd_* :
        :func:`pgd_l2_radius` options; ``pgd_eps_*`` in units of :math:`\|x\|`.
    bisection_directions, bisection_search_steps, bisection_max_scale :
        Number of random directions (the DeepFool direction is added) and
        :func:`bisection_radius` options.
    lipschitz_iters :
        Power iterations of :func:`lipschitz_estimate`.
    details : bool, default False
        Add the diagnostic keys listed above.

    Returns
    -------
    dict[str, float]

    Notes
    -----
    With the defaults, an MNIST MLP on 100 inputs takes a few seconds on a CPU. PGD
    dominates: about ``11 * 20 * (num_candidates - 1)`` forward+backward passes of
    the batch; for ResNets on a CPU pass ``pgd=False`` or a smaller ``n``.
    """
    idx = select_inputs(n, len(x), seed=seed)
    x = _prepare(model, x[idx], "robustness_summary")
    df = deepfool(model, x, overshoot=overshoot, max_iter=max_iter, num_candidates=num_candidates)
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
        res = pgd_l2_radius(
            model, x, steps=pgd_steps, restarts=pgd_restarts, step_size_factor=pgd_step_size_factor,
            num_targets=pgd_num_targets if pgd_num_targets is not None else max(num_candidates - 1, 1),
            eps_low=pgd_eps_low, eps_high=pgd_eps_high, search_steps=pgd_search_steps, seed=seed)
        out["robustness_pgd_l2"], extra["pgd_unflipped"] = censored_mean(res, pgd_eps_high, "PGD-L2")
    if bisection:
        gen = _generator(seed)
        rand = _randn((len(x), bisection_directions + 1) + tuple(x.shape[1:]), gen, x)
        r_norm = _bcast(_flat_norm(df.r), df.r)
        # where DeepFool returned r = 0 (no usable gradient) the spare random draw stands in
        df_dir = torch.where(r_norm > 0, df.r / r_norm.clamp_min(torch.finfo(x.dtype).tiny), rand[:, -1])
        dirs = torch.cat([rand[:, :-1], df_dir.unsqueeze(1)], dim=1)
        res = bisection_radius(model, x, dirs, search_steps=bisection_search_steps,
                               max_scale=bisection_max_scale)
        out["robustness_bisection"], extra["bisection_unflipped"] = censored_mean(
            res, bisection_max_scale, "bisection")
    if lipschitz:
        lip = lipschitz_estimate(model, x, iters=lipschitz_iters, seed=seed)
        out["lipschitz_mean"] = float(lip.mean())
        out["lipschitz_max"] = float(lip.max())
    if details:
        out.update(extra)
    return out
