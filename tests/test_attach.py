"""lpc.attach on torchvision, timm and plain models: where the head goes, what the model returns, that the latents
are the head's, that IBLoss trains through them, that attached models save and load, and the errors."""
import copy

import pytest
import torch
import torchvision
from torch import nn

import lpc
from lpc.attachment import AttachedHead


def _torchvision_resnet():
    return torchvision.models.resnet18(num_classes=10)


def _torchvision_vit():
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                                mlp_dim=64, num_classes=10)


def _timm_resnet():
    timm = pytest.importorskip("timm")
    return timm.create_model("resnet18", pretrained=False, num_classes=10)


def _timm_vit():
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=10,
                             depth=2)


def _sequential():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))


# constructor, where its final Linear is, that layer's input width
MODELS = {
    "torchvision-resnet18": (_torchvision_resnet, "fc", 512),
    "torchvision-vit": (_torchvision_vit, "heads.head", 32),
    "timm-resnet18": (_timm_resnet, "fc", 512),
    "timm-vit": (_timm_vit, "head", 192),
    "sequential": (_sequential, "4", 64),
}


def _inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10


@pytest.mark.parametrize("name", MODELS)
def test_the_head_replaces_the_final_linear_and_the_model_still_returns_logits(name):
    build, path, width = MODELS[name]
    torch.manual_seed(0)
    model = build()
    assert isinstance(model.get_submodule(path), nn.Linear)
    assert lpc.attach(model, latent_dim=5) is model
    head = model.get_submodule(path)
    assert isinstance(head, AttachedHead) and head.in_features == width and head.latent_dim == 5
    assert head.uses_compression and head.classifier.out_features == 10
    x, _ = _inputs()
    model.eval()
    logits = model(x)
    z = lpc.latents(model)
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 10) and z.shape == (4, 5)
    by_hand = z @ head.classifier.weight.T + head.classifier.bias  # the head's classifier, written out
    torch.testing.assert_close(logits, by_hand)


@pytest.mark.parametrize("name", MODELS)
def test_ib_loss_trains_through_the_latents(name):
    build, path, _ = MODELS[name]
    torch.manual_seed(0)
    model = lpc.attach(build())
    x, y = _inputs()
    model.train()
    criterion = lpc.IBLoss(gamma=100.0, head=model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)  # Adam: SGD diverges at once under γ = 100
    norms = []
    for _ in range(8):
        logits = model(x)
        z = lpc.latents(model)
        norms.append(z.detach().norm(dim=1).mean().item())
        loss = criterion(logits, z, y)
        optimizer.zero_grad()
        loss.backward()
        if len(norms) == 1:  # gradients reach the first layer of the backbone and both layers of the head
            first = next(p for p in model.parameters() if p.requires_grad)
            head = model.get_submodule(path)
            for p in (first, head.penultimate.weight, head.classifier.weight):
                assert p.grad is not None and p.grad.abs().sum() > 0
        optimizer.step()
    assert norms[-1] < 0.7 * norms[0], norms  # γ = 100 presses the latents towards the origin


@pytest.mark.parametrize("name", MODELS)
def test_an_attached_models_state_loads_into_a_freshly_attached_one(name):
    build, _, _ = MODELS[name]
    torch.manual_seed(0)
    trained = lpc.attach(build(), latent_dim=6).eval()
    torch.manual_seed(1)
    fresh = lpc.attach(build(), latent_dim=6).eval()
    x, _ = _inputs()
    assert not torch.allclose(trained(x), fresh(x))
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh(x), trained(x))
    torch.testing.assert_close(lpc.latents(fresh), lpc.latents(trained))


def test_a_sequential_classifier_and_the_default_widths():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)  # classifier: Linear, Hardswish, Dropout, Linear
    lpc.attach(model)
    head = model.classifier[3]
    assert isinstance(head, AttachedHead) and head.latent_dim == lpc.auto_width(10) == 8
    assert lpc.attach(_sequential(), head="narrow_ib")[4].latent_dim == 4  # ceil(log2 10)
    assert lpc.attach(_sequential(), head="wide_ib")[4].latent_dim == 64  # the replaced layer's input width
    wide = lpc.attach(_sequential(), head="ib", num_classes=100)[4]  # re-targeted: 100 classes, 64 wide
    assert (wide.latent_dim, wide.classifier.out_features) == (64, 100)


def test_every_head_by_name_and_its_options():
    for name, spec in lpc.HEADS.items():
        head = lpc.attach(_sequential(), head=name, dropout=0.3, l1_weight=1e-3)[4]
        assert head.uses_compression == spec.compression and (head.penultimate is None) == (spec.width is None)
        assert head.l1_weight == (1e-3 if spec.l1 else 0.0)
        assert isinstance(head.dropout, nn.Dropout) == spec.dropout
    with pytest.raises(ValueError, match="did you mean 'ib'"):
        lpc.attach(_sequential(), head="ibb")


def test_no_pen_keeps_the_replaced_classifier():
    torch.manual_seed(0)
    model = _sequential().eval()
    x, _ = _inputs()
    before = model(x)
    lpc.attach(model, head="no_pen")
    torch.testing.assert_close(model(x), before)
    torch.testing.assert_close(lpc.latents(model), model[:4](x))  # z: the features the classifier saw
    with pytest.raises(ValueError, match="no latent layer"):
        lpc.attach(_sequential(), latent_dim=4, head="no_pen")


def test_the_head_follows_the_replaced_layers_dtype_and_copies_drop_the_last_batch():
    model = lpc.attach(_sequential().double())
    x, y = _inputs()
    logits = model(x.double())
    assert logits.dtype == torch.float64 and lpc.latents(model).dtype == torch.float64
    lpc.IBLoss(gamma=1.0)(logits, lpc.latents(model), y).backward()
    twin = copy.deepcopy(model)  # e.g. an EMA copy; a tensor inside an autograd graph cannot be deep-copied
    with pytest.raises(RuntimeError, match="forward pass"):
        lpc.latents(twin)


def test_errors_say_what_is_missing():
    with pytest.raises(ValueError, match="fc, classifier, heads.head"):
        lpc.attach(torchvision.models.squeezenet1_1(num_classes=10))  # its classifier is a convolution
    with pytest.raises(ValueError, match="no final nn.Linear"):
        lpc.attach(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)))  # a layer with parameters after the Linear
    model = _sequential()
    with pytest.raises(ValueError, match="call lpc.attach"):
        lpc.latents(model)
    lpc.attach(model)
    with pytest.raises(RuntimeError, match="forward pass"):
        lpc.latents(model)
    with pytest.raises(ValueError, match="already has an lpc head at '4'"):
        lpc.attach(model)
    with pytest.raises(ValueError, match="at least 2 classes"):
        lpc.attach(nn.Sequential(nn.Linear(4, 1)))


def test_docstring_examples_run():
    import doctest
    import sys
    result = doctest.testmod(sys.modules["lpc.attachment"])
    assert result.attempted > 0 and result.failed == 0


def test_param_groups_give_the_attached_classifier_its_own_lr_and_decay():
    model = lpc.attach(torchvision.models.resnet18(num_classes=10))
    rest, classifier = lpc.param_groups(model, 1e-3, weight_decay=5e-4, classifier_weight_decay=0.1)
    # every parameter once; the classifier behind the 8-wide layer at sqrt(512 / 8) = 8 times the lr
    assert len(rest["params"]) + len(classifier["params"]) == len(list(model.parameters()))
    assert {id(p) for p in classifier["params"]} == {id(model.fc.classifier.weight), id(model.fc.classifier.bias)}
    assert classifier["lr"] == pytest.approx(8e-3) and classifier["weight_decay"] == 0.1
    assert rest["lr"] == 1e-3 and rest["weight_decay"] == 5e-4
    torch.optim.AdamW([rest, classifier])  # a valid set of groups: no parameter twice
    with pytest.raises(ValueError, match="call lpc.attach"):
        lpc.param_groups(torchvision.models.resnet18(), 1e-3)
