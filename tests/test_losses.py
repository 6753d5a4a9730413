import math

import pytest
import torch

from lpc import GammaSchedule, compression_loss
from lpc.losses import l1_penalty


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
        s.step()
    assert values[-1] == 100.0 and values[6] == pytest.approx(54.0)


def test_gamma_schedule_state_round_trip():
    s = GammaSchedule(init=1e-2, factor=1.5, max=10.0)
    for _ in range(7):
        s.step()
    restored = GammaSchedule()
    restored.load_state_dict(s.state_dict())
    assert restored.value == s.value == pytest.approx(1e-2 * 1.5 ** 7)
    assert restored.at(100) == 10.0


@pytest.mark.parametrize("field", ["init", "factor", "max", "every"])
def test_gamma_schedule_rejects_non_positive(field):
    with pytest.raises(ValueError, match=field):
        GammaSchedule(**{field: 0})


def test_l1_penalty_is_sum_of_absolute_weights():
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, -0.25, 3.0]]))
    assert l1_penalty(layer).item() == pytest.approx(6.75)
    assert math.isfinite(l1_penalty(layer).item())
