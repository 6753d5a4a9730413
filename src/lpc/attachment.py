"""Putting an lpc head into a model someone else built: :func:`attach` replaces its final linear classifier, and
:func:`latents` returns the latents of its last forward pass.

The model's output does not change kind: ``model(x)`` still returns logits, so attacks, metrics and trainers
that expect a classifier (foolbox, torchattacks, torchmetrics, Lightning) keep working, and the latents z that
the compression term needs are kept by the head on the side.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import check_choice
from .heads import HEADS, Head, auto_width, classifier_lr_scale, head_arguments

# where torchvision and timm keep the final classifier, tried in this order after timm's own record of it
_CLASSIFIER_ATTRIBUTES = ("fc", "classifier", "heads.head", "heads", "head", "head.fc")


class AttachedHead(Head):
    """A :class:`~lpc.heads.Head` in a foreign model's classifier slot: ``forward(h)`` returns the logits only and
    keeps ``z`` for :func:`latents`.

    Examples
    --------
    >>> head = AttachedHead(in_features=16, num_classes=3, latent_dim=2, compression=True)
    >>> logits = head(torch.randn(5, 16))
    >>> logits.shape, head.latents.shape
    (torch.Size([5, 3]), torch.Size([5, 2]))
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.latents: torch.Tensor | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits, self.latents = super().forward(h)
        return logits

    def __getstate__(self):
        # copies (deepcopy for an EMA model, pickling) leave the last batch behind: a tensor inside an autograd
        # graph cannot be deep-copied
        state = self.__dict__.copy()
        state["latents"] = None
        return state


def attach(model: nn.Module, latent_dim: int | None = None, head: str = "ib", *, num_classes: int | None = None,
           **head_options) -> nn.Module:
    """Replaces the final ``nn.Linear`` classifier of ``model`` by the lpc head ``head``, in place.

    The head gets the replaced layer's input width, and its number of classes unless ``num_classes`` is given
    (to re-target a pretrained model), and sits on the replaced layer's device and dtype. ``model(x)`` still
    returns logits; :func:`latents` gives the head's z of the last forward pass, for :class:`lpc.IBLoss`.

    Parameters
    ----------
    model : nn.Module
        A torchvision classifier (``fc`` on ResNets; ``classifier``, a Linear or a Sequential ending in one, on
        VGG, EfficientNet, MobileNet, DenseNet; ``heads.head`` on ViT), a timm classifier (found through its
        ``pretrained_cfg["classifier"]`` or ``get_classifier()``), or an ``nn.Sequential`` ending in a Linear.
    latent_dim : int, optional
        Width of the head's latent layer. Default: :func:`lpc.heads.auto_width` of the number of classes for
        the intermediate heads (8 for 10 classes, 64 for 100), its ``narrow`` rule for ``narrow_ib``, and the
        replaced layer's input width for ``wide_ib`` (the paper's WIDE IB). Heads without a latent layer
        (``no_pen``, ``no_pen_dropout``) take none; they start from the replaced layer's weights when the
        number of classes is kept.
    head : str
        Any name in :data:`lpc.HEADS`.
    num_classes : int, optional
        The head's number of classes; default: the replaced layer's ``out_features``.
    **head_options
        ``dropout``, ``l1_weight``, ``l1_on`` (as :func:`lpc.build_head`).

    Returns
    -------
    nn.Module
        ``model`` itself.

    Examples
    --------
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> model = attach(model)                  # 10 classes: an 8-wide IB layer
    >>> logits = model(torch.randn(4, 3, 4))
    >>> logits.shape, latents(model).shape
    (torch.Size([4, 10]), torch.Size([4, 8]))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lpc.attach: expected an nn.Module, got {type(model).__name__}")
    already = [name for name, m in model.named_modules() if isinstance(m, AttachedHead)]
    if already:
        raise ValueError(f"lpc.attach: {type(model).__name__} already has an lpc head at '{already[0]}'")
    path = _classifier_path(model)
    linear = model.get_submodule(path)
    if linear.in_features == 0:
        raise ValueError(f"lpc.attach: '{path}' is a lazy Linear without inputs yet; run one forward pass first")
    classes = linear.out_features if num_classes is None else int(num_classes)
    check_choice("lpc.attach head", head, HEADS)
    if classes < 2:
        raise ValueError(f"lpc.attach: a classifier needs at least 2 classes, got {classes} ('{path}')")
    spec = HEADS[head]
    if spec.width is None and latent_dim is not None:
        raise ValueError(f"lpc.attach: the {head} head has no latent layer; latent_dim={latent_dim} does not apply")
    if latent_dim is None and spec.width is not None:
        latent_dim = linear.in_features if spec.width == "wide" else auto_width(classes, spec.width)
    widths = {spec.width: latent_dim} if spec.width else None
    arguments = head_arguments(head, linear.in_features, classes, widths, where="lpc.attach head", **head_options)
    new = AttachedHead(**arguments).to(device=linear.weight.device, dtype=linear.weight.dtype)
    if spec.width is None and classes == linear.out_features:
        with torch.no_grad():  # a head without a latent layer is the replaced classifier itself
            new.classifier.weight.copy_(linear.weight)
            if linear.bias is not None:
                new.classifier.bias.copy_(linear.bias)
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path), name, new)
    if isinstance(getattr(model, "num_classes", None), int):  # timm's and torchvision's record of it
        model.num_classes = classes
    return model


def param_groups(model: nn.Module, lr: float, *, weight_decay: float = 5e-4,
                 classifier_weight_decay: float = 0.1) -> list[dict]:
    """Optimizer parameter groups for a model :func:`attach` changed: the head's final classifier at
    ``lr`` × :func:`~lpc.heads.classifier_lr_scale` with ``classifier_weight_decay``, everything else at ``lr`` with
    ``weight_decay``.

    This is the recipe of the embedded default: the scaled lr lets the classifier behind a narrow IB layer grow
    its scale as fast as one on the backbone's features would, and AdamW's decoupled decay of 0.1 settles its
    weights at ±1/0.1, so its rows become sign vectors and the latents settle on two values per node
    (docs, *Choosing γ*). Pass the result to ``torch.optim.AdamW``.

    Examples
    --------
    >>> model = attach(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)))
    >>> [(len(g["params"]), g["lr"], g["weight_decay"]) for g in param_groups(model, 1e-3)]
    [(4, 0.001, 0.0005), (2, 0.002, 0.1)]
    """
    head = _attached_head(model, "lpc.param_groups")
    classifier = list(head.classifier.parameters())
    rest = [p for p in model.parameters() if all(p is not c for c in classifier)]
    return [{"params": rest, "lr": lr, "weight_decay": weight_decay},
            {"params": classifier, "lr": lr * classifier_lr_scale(head), "weight_decay": classifier_weight_decay}]


def _attached_head(model: nn.Module, caller: str) -> AttachedHead:
    heads = [m for m in model.modules() if isinstance(m, AttachedHead)]
    if not heads:
        raise ValueError(f"{caller}: {type(model).__name__} has no lpc head; call lpc.attach(model) first")
    if len(heads) > 1:
        raise ValueError(f"{caller}: {type(model).__name__} has {len(heads)} lpc heads; pass the one you mean")
    return heads[0]


def latents(model: nn.Module) -> torch.Tensor:
    """The latents z (N, latent_dim) of the last forward pass of a model that :func:`attach` changed.

    The tensor is the one the forward pass computed, still in its autograd graph: pass it to
    :class:`lpc.IBLoss` with that pass's logits.
    """
    head = _attached_head(model, "lpc.latents")
    if head.latents is None:
        raise RuntimeError("lpc.latents: the model has not run a forward pass since its head was attached")
    return head.latents


def _classifier_path(model: nn.Module) -> str:
    """The dotted path of the final nn.Linear of ``model``; ValueError saying what was looked for."""
    candidates = []
    for record in ("pretrained_cfg", "default_cfg"):  # timm records where its classifier is
        cfg = getattr(model, record, None)
        if isinstance(cfg, dict) and cfg.get("classifier"):
            names = cfg["classifier"]
            candidates += [names] if isinstance(names, str) else list(names)
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        try:
            found = get_classifier()
        except Exception:  # noqa: BLE001 — a foreign model's method: any failure just means no answer
            found = None
        candidates += [name for name, m in model.named_modules() if found is not None and m is found and name]
    candidates += list(_CLASSIFIER_ATTRIBUTES)
    for candidate in candidates:
        try:
            module = model.get_submodule(candidate)
        except AttributeError:
            continue
        path = _final_linear(module, candidate)
        if path is not None:
            return path
    if isinstance(model, nn.Sequential):
        path = _final_linear(model, "")
        if path:
            return path
    raise ValueError(
        f"lpc.attach: found no final nn.Linear classifier in {type(model).__name__}. Looked for timm's "
        f"pretrained_cfg['classifier'] and get_classifier(), the attributes {', '.join(_CLASSIFIER_ATTRIBUTES)} "
        "(a Linear, or a Sequential ending in one), and the last Linear of an nn.Sequential; a classifier that is "
        "a convolution, or is followed by a layer with parameters, cannot be replaced")


def _final_linear(module: nn.Module, path: str) -> str | None:
    """``path`` if ``module`` is a Linear; in a Sequential, the last Linear with only parameter-free layers
    (activations, dropout) after it; else None."""
    if isinstance(module, nn.Linear):
        return path
    if not isinstance(module, nn.Sequential):
        return None
    for name, child in reversed(list(module.named_children())):
        if isinstance(child, (nn.Linear, nn.Sequential)):
            found = _final_linear(child, f"{path}.{name}" if path else name)
            if found is not None or any(True for _ in child.parameters()):
                return found
        elif any(True for _ in child.parameters()):
            return None
    return None
