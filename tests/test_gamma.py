"""The γ schedules: the paper's per-epoch ramp and the feedback controller (``gamma.schedule: auto``), alone and in
the training loop: analytic trajectories, budget scaling, checkpoint round trips, DDP agreement, diagnostics."""
import doctest
import json
import math

import pytest
import torch

from conftest import tiny_config
from lpc import AutoGamma, GammaSchedule
import lpc.heads
import lpc.losses
from lpc.losses import build_gamma_schedule, true_class_probability
import lpc.train as loop
from lpc.data import load_data
from lpc.model import build_model
from lpc.train import _pad_fill, accuracy_drop, make_optimizer, steps_per_epoch, train, train_epoch


def _batch(q: float, n: int = 4):
    """Two-class logits whose softmax gives the true class probability ``q`` exactly (up to float32)."""
    margin = math.log(q / (1 - q))
    return torch.tensor([[margin, 0.0]] * n), torch.zeros(n, dtype=torch.long)


def test_auto_rises_at_its_budget_rate_while_confident():
    s = AutoGamma(200, init=1e-2, max=1e4, target=0.9, width=0.05, ramp=0.5)
    assert s.rate == pytest.approx(math.log(1e6) / 100)
    logits, y = _batch(0.95)
    for _ in range(30):
        s.update(logits, y)
    expected = math.log(1e-2) + 30 * s.rate * math.tanh((0.95 - 0.9) / 0.05)
    assert math.log(s.value) == pytest.approx(expected, rel=1e-6)


def test_auto_backs_off_below_target_and_stays_within_init_and_max():
    s = AutoGamma(100, init=1e-2, max=1.0, target=0.9)
    high, low = _batch(0.999), _batch(0.6)
    for _ in range(200):
        s.update(*high)
    assert s.value == pytest.approx(1.0)  # capped at max
    values = []
    for _ in range(5):
        s.update(*low)
        values.append(s.value)
    assert all(b < a for a, b in zip([1.0] + values, values))  # strictly backing off
    for _ in range(500):
        s.update(*low)
    assert s.value == pytest.approx(1e-2)  # floored at init


def test_auto_reaches_max_within_the_ramp_whatever_the_budget():
    """The same fraction of the run, not the same number of steps: a budget transfers between datasets."""
    for total in (40, 4000):
        s = AutoGamma(total, init=1e-2, max=1e2, target=0.5, width=1e-3, ramp=0.5)  # tanh saturates: full speed
        logits, y = _batch(0.99)
        steps = 0
        while s.value < 1e2 * (1 - 1e-9):
            s.update(logits, y)
            steps += 1
        assert steps == pytest.approx(total / 2, abs=1)


def test_auto_state_round_trip_resumes_bit_identically():
    rng = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 5, generator=rng) * 3, torch.randint(0, 5, (16,), generator=rng)) for _ in range(40)]
    a = AutoGamma(50, init=1e-2, max=1e3, target=0.15, accuracy=0.0)  # random logits: the gate would hold γ
    for logits, y in batches[:20]:
        a.update(logits, y)
    b = AutoGamma(1, init=1.0, max=2.0)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # through JSON: plain numbers only
    for logits, y in batches[20:]:
        a.update(logits, y)
        b.update(logits, y)
        assert a.value == b.value
    assert a.value != pytest.approx(1e-2)


def test_auto_all_reduce_uses_the_global_batch():
    """Two ranks with different shards and a summing all_reduce move γ exactly as one process on the whole batch."""
    logits = torch.randn(12, 3, generator=torch.Generator().manual_seed(1)) * 4
    y = torch.arange(12) % 3
    single = AutoGamma(10, init=1e-2, max=1e3, target=0.5)
    single.update(logits, y)

    def stats(part):
        q = logits[part].softmax(1).gather(1, y[part, None])
        correct = (logits[part].argmax(1) == y[part]).sum()
        return torch.stack([q.sum().double(), correct.double(), torch.tensor(float(len(q)), dtype=torch.float64)])

    other = {0: stats(slice(8, 12)), 1: stats(slice(0, 8))}
    ranks = []
    for rank, part in ((0, slice(0, 8)), (1, slice(8, 12))):
        s = AutoGamma(10, init=1e-2, max=1e3, target=0.5, all_reduce=lambda t, r=rank: t.add_(other[r]))
        s.update(logits[part], y[part])
        ranks.append(s.value)
    assert ranks[0] == ranks[1] == pytest.approx(single.value, rel=1e-6)  # float32 softmax, summed in another order


def test_the_accuracy_gate_backs_off_on_unfitted_batches_whatever_their_confidence():
    """Mean true-class probability above the target 0.3, but the argmax is wrong on half the batch: γ falls at
    the rate tanh((accuracy − gate) / width); once every prediction is right, the confidence decides again."""
    lead = math.log(2.0)  # three classes: the true class at twice the third's probability
    right, wrong = [lead, 0.0, -0.7], [lead, lead + 0.5, -0.7]  # the second row predicts class 1
    logits, y = torch.tensor([right, wrong] * 2), torch.zeros(4, dtype=torch.long)
    q = true_class_probability(logits, y).mean().item()
    assert q > 0.3
    gated = AutoGamma(100, init=1e-3, max=1e3, target=0.3, accuracy=0.99)
    gated._log_gamma.fill_(0.0)  # γ = 1, halfway between floor and cap
    gated.update(logits, y)
    assert math.log(gated.value) == pytest.approx(gated.rate * math.tanh((0.5 - 0.99) / 0.05), rel=1e-9)
    open_gate = AutoGamma(100, init=1e-3, max=1e3, target=0.3, accuracy=0.0)
    open_gate._log_gamma.fill_(0.0)
    open_gate.update(logits, y)
    assert math.log(open_gate.value) == pytest.approx(open_gate.rate * math.tanh((q - 0.3) / 0.05), rel=1e-6)
    before = gated.value
    gated.update(*_batch(0.8))  # every prediction right and q above the target: γ rises again
    assert gated.value > before and gated.state_dict()["accuracy"] == 0.99


def test_schedules_share_one_interface_and_the_paper_one_ignores_batches():
    paper = GammaSchedule(init=1e-2, factor=2.0, max=1.0)
    paper.update(*_batch(0.99))
    assert paper.weight() == paper.value == pytest.approx(1e-2)
    paper.step()
    assert paper.value == pytest.approx(2e-2)
    config = tiny_config(**{"gamma.schedule": "auto"}).gamma
    auto = build_gamma_schedule(config, 100)
    assert isinstance(auto, AutoGamma) and auto.max == config.max and auto.target == config.target
    assert isinstance(build_gamma_schedule(tiny_config().gamma, 100), GammaSchedule)


@pytest.mark.parametrize("bad, message", [({"target": 1.0}, "target"), ({"init": 0}, "init"),
                                          ({"max": 1e-3, "init": 1e-2}, "below init")])
def test_auto_rejects_bad_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        AutoGamma(10, **bad)


def test_steps_per_epoch_matches_the_loop(tiny_npz):
    for batch_size in (8, 32, 179, 500):
        config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 1, "optim.batch_size": batch_size,
                                "gamma.schedule": "auto"})
        data = load_data(config.data)
        model = build_model(config, data.in_shape, data.num_classes)
        optimizer, _ = make_optimizer(model, config)
        sums = train_epoch(model, model, data, optimizer, config, gamma=GammaSchedule(), pad_fill=_pad_fill(data, config),
                           epoch=0)
        assert sums["batches"] == steps_per_epoch(len(data.x_train), config)


def test_history_and_summary_carry_the_pressure_diagnostics(tmp_path, tiny_npz):
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 4, "gamma.schedule": "auto"})
    summary = train(config, tmp_path / "run", progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    W = state["head.classifier.weight"].double()
    assert summary["classifier_scale"] == pytest.approx(W.norm(dim=1).mean().item(), rel=1e-12)
    for record in history:
        assert record["pressure"] == pytest.approx(record["gamma"] / record["classifier_scale"] ** 2, rel=1e-12)
        assert 0 < record["true_class_prob"] <= 1
    assert summary["gamma_schedule"] == "auto" and summary["accuracy_drop_epoch"] is None
    # γ moved: the separable blobs are learned at once, so the controller raised it above its floor
    assert history[-1]["gamma"] > config.gamma.init


def test_auto_run_resumes_bit_identically(tmp_path, tiny_npz, monkeypatch):
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 6, "gamma.schedule": "auto",
                            "gamma.max": 1e3, "gamma.target": 0.8})
    full = train(config, tmp_path / "full", progress=False)
    original, calls = loop.train_epoch, []

    def stop_after_three(*args, **kwargs):  # a crash in epoch 4: the checkpoint of epoch 3 remains
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(loop, "train_epoch", original)
    resumed = train(config, tmp_path / "resumed", progress=False)
    assert {k: v for k, v in resumed.items() if k != "wall_seconds"} == \
        {k: v for k, v in full.items() if k != "wall_seconds"}
    assert (tmp_path / "full" / "history.jsonl").read_text() == (tmp_path / "resumed" / "history.jsonl").read_text()


def _record(epoch, accuracy, gamma):
    return {"epoch": epoch, "train_accuracy": accuracy, "gamma": gamma}


def test_accuracy_drop_names_the_first_fall_while_gamma_rose():
    history = [_record(1, 0.90, 0.1), _record(2, 0.97, 1.0), _record(3, 0.93, 10.0), _record(4, 0.91, 100.0),
               _record(5, 0.80, 1e3)]
    drop = accuracy_drop(history)
    assert drop == {"epoch": 4, "gamma": 100.0, "train_accuracy": 0.91, "best_epoch": 2, "best_train_accuracy": 0.97}
    # a fall while γ stays put (the paper's γ at its maximum) is not the compression outrunning the classifier
    assert accuracy_drop([_record(1, 0.99, 1e3), _record(2, 0.90, 1e3)]) is None
    assert accuracy_drop([_record(1, 0.5, 1.0), _record(2, 0.99, 2.0)]) is None


def test_a_collapsing_paper_run_is_logged_once_and_recorded(tmp_path, tiny_npz, capsys):
    # γ doubles each epoch from 1e2 to 1e8: the classifier cannot follow and training accuracy collapses
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 12, "optim.lr": 3e-2, "gamma.init": 1e-2,
                            "gamma.factor": 20.0, "gamma.max": 1e9})
    summary = train(config, tmp_path / "run", progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    expected = accuracy_drop(history)
    assert expected is not None, [r["train_accuracy"] for r in history]
    assert summary["accuracy_drop_epoch"] == expected["epoch"]
    assert summary["accuracy_drop_gamma"] == expected["gamma"]
    logged = capsys.readouterr().err
    assert logged.count("training accuracy fell") == 1 and f"epoch {expected['epoch']}" in logged


@pytest.mark.parametrize("module", [lpc.losses, lpc.heads], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
