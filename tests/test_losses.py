"""The loss terms: the compression term, the paper's γ schedule's values, the L1 penalty and IBLoss, checked
against sums written out here."""
import math

import pytest
import torch
from torch import nn

import lpc
from lpc import AutoGamma, GammaSchedule, IBLoss, compression_loss
from lpc.losses import l1_penalty

_BATCH = (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))  # the paper schedule counts steps, ignores batches


def test_compression_loss_sum_is_batch_mean_of_squared_norms():
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    # ||z||^2 = 25, 1, 4 -> mean 10
    assert compression_loss(z).item() == pytest.approx(10.0)
    assert compression_loss(z, reduction="sum").item() == pytest.approx(10.0)


def test_compression_loss_mean_divides_by_width_like_mse_against_zero():
    z = torch.randn(7, 5, dtype=torch.float64)
    assert compression_loss(z, "mean").item() == pytest.approx(torch.nn.functional.mse_loss(z, torch.zeros_like(z)).item())
    assert compression_loss(z, "sum").item() == pytest.approx(5 * compression_loss(z, "mean").item())


def test_compression_loss_keeps_tiny_latents_under_bfloat16():
    # gamma = 1e6 and z ~ 1e-4: gamma * ||z||^2 ~ 1e-2 * P must survive the squaring
    z = torch.full((4, 8), 1e-4, dtype=torch.bfloat16)
    value = 1e6 * compression_loss(z).item()
    expected = 1e6 * 8 * float(z[0, 0]) ** 2
    assert value == pytest.approx(expected, rel=1e-6)
    assert compression_loss(z).dtype == torch.float32


def test_compression_loss_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction"):
        compression_loss(torch.zeros(2, 2), "max")


def test_gamma_schedule_hand_values():
    s = GammaSchedule(init=1e-2, factor=1.05, max=1e6)
    assert s.at(0) == pytest.approx(1e-2)
    assert s.at(1) == pytest.approx(1.05e-2)
    assert s.at(10) == pytest.approx(1e-2 * 1.05 ** 10)
    # 1e-2 * 1.05^e reaches 1e6 after log(1e8)/log(1.05) = 377.5 epochs
    assert s.at(377) < 1e6 and s.at(378) == 1e6 and s.at(10**6) == 1e6


def test_gamma_schedule_every_and_stepping():
    s = GammaSchedule(init=2.0, factor=3.0, max=100.0, every=2)
    assert [s.at(e) for e in range(6)] == pytest.approx([2, 2, 6, 6, 18, 18])
    values = []
    for _ in range(9):
        values.append(s.value)
        s.step(*_BATCH)
    assert values[-1] == 100.0 and values[6] == pytest.approx(54.0)


def test_gamma_schedule_state_round_trip():
    s = GammaSchedule(init=1e-2, factor=1.5, max=10.0)
    for _ in range(7):
        s.step(*_BATCH)
    restored = GammaSchedule()
    restored.load_state_dict(s.state_dict())
    assert restored.value == s.value == pytest.approx(1e-2 * 1.5 ** 7)
    assert restored.at(100) == 10.0


@pytest.mark.parametrize("field", ["init", "factor", "max", "every", "steps_per_epoch"])
def test_gamma_schedule_rejects_non_positive(field):
    with pytest.raises(ValueError, match=field):
        GammaSchedule(**{field: 0})


def test_l1_penalty_is_sum_of_absolute_weights():
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, -0.25, 3.0]]))
    assert l1_penalty(layer).item() == pytest.approx(6.75)
    assert math.isfinite(l1_penalty(layer).item())


def _cross_entropy(logits, y):
    """Mean -log softmax(logits)[y], written out."""
    return sum(math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(logits.tolist(), y.tolist())) / len(y)


def _case(seed=0, n=6, classes=4, width=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes, generator=g), torch.randn(n, width, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ib_loss_is_cross_entropy_plus_gamma_times_the_squared_norms(reduction):
    logits, z, y = _case()
    squares = [sum(v * v for v in row) for row in z.tolist()]
    compression = sum(squares) / len(squares) / (1 if reduction == "sum" else z.shape[1])
    loss = IBLoss(gamma=2.5, reduction=reduction)(logits, z, y)
    assert loss.item() == pytest.approx(_cross_entropy(logits, y) + 2.5 * compression, rel=1e-6)
    assert IBLoss(0.0)(logits, z, y).item() == pytest.approx(_cross_entropy(logits, y), rel=1e-6)


def test_ib_loss_steps_its_controller_after_reading_gamma_and_only_in_training():
    controller = AutoGamma(20, floor=1e-2, max=1e3, target=0.2, accuracy=0.0)
    twin = AutoGamma(20, floor=1e-2, max=1e3, target=0.2, accuracy=0.0)
    criterion = IBLoss(controller)
    assert criterion.controller is controller and dict(criterion.named_children()) == {"controller": controller}
    for seed in range(3):
        logits, z, y = _case(seed)
        gamma = twin.value
        loss = criterion(logits, z, y)
        expected = _cross_entropy(logits, y) + gamma * sum(sum(v * v for v in r) for r in z.tolist()) / len(z)
        assert loss.item() == pytest.approx(expected, rel=1e-6)  # γ before this batch's step
        twin.step(logits, y)
        assert criterion.gamma == twin.value  # then stepped on this batch
    assert criterion.gamma != pytest.approx(1e-2)
    before = criterion.gamma
    with torch.no_grad():
        criterion(*_case(5))  # a validation loss under no_grad
    criterion.eval()
    criterion(*_case(6))  # or in eval mode
    assert criterion.gamma == before and int(controller.num_steps) == 3


def test_ib_loss_state_and_device_moves_carry_the_controller():
    criterion = IBLoss(AutoGamma(10, floor=0.2, target=0.2, accuracy=0.0))
    for seed in range(4):
        criterion(*_case(seed))
    assert set(criterion.state_dict()) == {f"controller.{name}" for name in (
        "log_gamma", "num_steps", "_extra_state", "log_low", "log_cap", "best_val", "backoffs")}
    fresh = IBLoss(AutoGamma(99))
    fresh.load_state_dict(criterion.state_dict())
    assert fresh.gamma == criterion.gamma and fresh.controller.total_steps == 10
    fresh.to("meta")
    assert fresh.controller.log_gamma.device.type == "meta"
    paper = IBLoss(GammaSchedule(init=1.0, factor=2.0, max=100.0, steps_per_epoch=2))
    for seed in range(5):
        paper(*_case(seed))
    assert paper.gamma == 4.0 and paper.state_dict()["controller.num_steps"].item() == 5


def test_ib_loss_adds_the_heads_own_terms():
    logits, z, y = _case(n=5, width=4)
    l1 = lpc.build_head("nonlin_pen_l1", 6, 4, {"intermediate": 4}, l1_weight=0.01)
    weights = sum(abs(v) for row in l1.penultimate.weight.tolist() for v in row)
    loss = IBLoss(gamma=1e3, head=l1)(logits, z, y)  # no compression for this head: γ does not enter
    assert loss.item() == pytest.approx(_cross_entropy(logits, y) + 0.01 * weights, rel=1e-6)
    plain = lpc.build_head("no_pen", 6, 4)
    assert IBLoss(gamma=1e3, head=plain)(logits, z, y).item() == pytest.approx(_cross_entropy(logits, y), rel=1e-6)
    model = lpc.attach(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)), latent_dim=4)
    found = IBLoss(gamma=0.5, head=model)
    assert found.head is model[2] and found.head.uses_compression
    assert "head" not in dict(found.named_modules()) and not list(found.parameters())  # the model owns the head
    squares = sum(sum(v * v for v in r) for r in z.tolist()) / len(z)
    assert found(logits, z, y).item() == pytest.approx(_cross_entropy(logits, y) + 0.5 * squares, rel=1e-6)


def test_ib_loss_rejects_what_it_cannot_use():
    with pytest.raises(TypeError, match="gamma must be"):
        IBLoss(gamma="auto")
    with pytest.raises(TypeError):
        IBLoss()  # γ has no default that fits every model: it is required
    with pytest.raises(ValueError, match=">= 0"):
        IBLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        IBLoss(gamma=1.0, reduction="max")
    with pytest.raises(ValueError, match="found none"):
        IBLoss(gamma=1.0, head=nn.Linear(2, 2))
