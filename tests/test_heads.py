import pytest
import torch
from torch import nn

from lpc import HEADS, IBHead, build_head
from lpc.config import ConfigError, WidthsConfig

WIDTHS = WidthsConfig(intermediate=8, wide=32, narrow=4)
# Table 3 of the paper, written out independently of the registry
TABLE3 = {  # name: (compression, linear penultimate, dropout, l1, width)
    "ib": (True, True, False, False, 8),
    "wide_ib": (True, True, False, False, 32),
    "narrow_ib": (True, True, False, False, 4),
    "no_pen": (False, None, False, False, None),
    "no_pen_dropout": (False, None, True, False, None),
    "lin_pen": (False, True, False, False, 8),
    "nonlin_pen": (False, False, False, False, 8),
    "nonlin_pen_l1": (False, False, False, True, 8),
}


def test_registry_has_the_eight_heads():
    assert set(HEADS) == set(TABLE3)


@pytest.mark.parametrize("name", sorted(TABLE3))
def test_head_structure(name):
    compression, linear, dropout, l1, width = TABLE3[name]
    head = build_head(name, 32, 10, WIDTHS)
    h = torch.randn(5, 32)
    logits, z = head.eval()(h)
    assert logits.shape == (5, 10)
    assert head.uses_compression is compression
    assert isinstance(head.dropout, nn.Dropout) is dropout
    if dropout:
        assert head.dropout.p == 0.5
    assert (head.l1_weight > 0) is l1
    if width is None:
        assert head.penultimate is None and torch.equal(z, h)  # z = backbone features
        assert head.classifier.in_features == 32
    else:
        assert head.penultimate.out_features == width == z.shape[1] == head.latent_dim
        pre = head.penultimate(h)
        expected = pre if linear else torch.nn.functional.silu(pre)
        torch.testing.assert_close(z, expected)
        # a linear head is affine in h: z(a+b) - z(0) = (z(a) - z(0)) + (z(b) - z(0))
        a, b, zero = torch.randn(1, 32), torch.randn(1, 32), torch.zeros(1, 32)
        f = lambda v: head(v)[1]
        additive = torch.allclose(f(a + b) - f(zero), f(a) - f(zero) + f(b) - f(zero), atol=1e-5)
        assert additive is linear


def test_logits_are_classifier_of_z():
    head = build_head("ib", 16, 3, WIDTHS)
    logits, z = head(torch.randn(4, 16))
    torch.testing.assert_close(logits, head.classifier(z))


def test_dropout_acts_between_z_and_classifier_only_in_training():
    torch.manual_seed(0)
    head = build_head("no_pen_dropout", 64, 3, WIDTHS)
    h = torch.randn(50, 64)
    logits_train, z_train = head.train()(h)
    assert torch.equal(z_train, h)  # z itself is never dropped
    assert not torch.allclose(logits_train, head.classifier(h))
    logits_eval, _ = head.eval()(h)
    torch.testing.assert_close(logits_eval, head.classifier(h))


def test_l1_penalty_on_weights_and_activations():
    head = build_head("nonlin_pen_l1", 16, 3, WIDTHS)
    z = torch.randn(6, 8)
    assert head.penalty(z).item() == pytest.approx(1e-4 * head.penultimate.weight.abs().sum().item(), rel=1e-6)
    head = build_head("nonlin_pen_l1", 16, 3, WIDTHS, l1_on="activations", l1_weight=0.1)
    assert head.penalty(z).item() == pytest.approx(0.1 * z.abs().sum(1).mean().item(), rel=1e-6)
    # the penalty reaches the weights through autograd
    head = build_head("nonlin_pen_l1", 16, 3, WIDTHS)
    head.penalty(z).backward()
    torch.testing.assert_close(head.penultimate.weight.grad, 1e-4 * head.penultimate.weight.sign())


@pytest.mark.parametrize("name", [n for n in TABLE3 if n != "nonlin_pen_l1"])
def test_other_heads_have_no_penalty(name):
    head = build_head(name, 16, 3, WIDTHS)
    assert head.penalty(torch.randn(2, head.latent_dim)).item() == 0.0


def test_ib_head_public_constructor():
    head = IBHead(512, 10, 8)
    logits, z = head(torch.randn(3, 512))
    assert logits.shape == (3, 10) and z.shape == (3, 8)
    assert head.uses_compression and isinstance(head.activation, nn.Identity)


def test_unknown_head_name_suggests():
    with pytest.raises(ConfigError, match="did you mean 'wide_ib'"):
        build_head("wide_ibb", 16, 3, WIDTHS)


def test_widths_from_dict():
    assert build_head("narrow_ib", 16, 3, {"intermediate": 8, "wide": 16, "narrow": 3}).latent_dim == 3


@pytest.mark.parametrize("classes, intermediate, narrow", [(2, 1, 1), (10, 8, 4), (26, 16, 5), (50, 32, 6),
                                                           (100, 64, 7), (1000, 512, 10)])
def test_auto_widths_follow_the_number_of_classes(classes, intermediate, narrow):
    """intermediate 2^(ceil(log2 K) - 1): the paper's 8 for 10 classes and 64 for 100; narrow ceil(log2 K),
    the fewest nodes that give every class its own hypercube vertex (checked by brute force here)."""
    auto = WidthsConfig(intermediate="auto", wide=32, narrow="auto")
    for name, width in (("ib", intermediate), ("lin_pen", intermediate), ("narrow_ib", narrow), ("wide_ib", 32)):
        assert build_head(name, 32, classes, auto).latent_dim == width
    assert 2 ** narrow >= classes > 2 ** (narrow - 1)


def test_width_settings_are_validated():
    from lpc.config import config_from_dict
    config = config_from_dict({"model": {"widths": {"intermediate": "auto", "narrow": "auto", "wide": 16}}})
    assert (config.model.widths.intermediate, config.model.widths.narrow) == ("auto", "auto")
    for bad in ({"intermediate": "big"}, {"wide": "big"}, {"narrow": 0}, {"intermediate": True}):
        with pytest.raises(ConfigError, match="model.widths"):
            config_from_dict({"model": {"widths": bad}})


def test_python_defaults_size_every_latent_layer_from_the_data():
    # the defaults are auto: the widths follow the classes, and WIDE IB reads as many features as it gets
    assert [build_head(n, 48, k).latent_dim for n in ("ib", "narrow_ib", "wide_ib") for k in (10, 100)] == \
        [8, 64, 4, 7, 48, 48]


def test_head_arguments_build_the_same_head_for_subclasses():
    from lpc.heads import Head, head_arguments
    arguments = head_arguments("nonlin_pen_l1", 32, 10, {"intermediate": "auto"}, l1_weight=0.5)
    assert arguments == {"in_features": 32, "num_classes": 10, "latent_dim": 8, "linear": False, "compression": False,
                         "dropout": 0.0, "l1_weight": 0.5, "l1_on": "weights"}
    torch.manual_seed(0)
    built = build_head("nonlin_pen_l1", 32, 10, {"intermediate": "auto"}, l1_weight=0.5)
    torch.manual_seed(0)
    again = Head(**arguments)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ConfigError, match="lpc.attach head: unknown value 'ibb'"):
        head_arguments("ibb", 32, 10, where="lpc.attach head")
