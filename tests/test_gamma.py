"""The γ controllers: the paper's per-epoch ramp and the feedback controller (``gamma.schedule: auto``), alone and in
the training loop: analytic trajectories, budget scaling, lpc 0.1 compatibility, checkpoint round trips, device
moves, DDP agreement, diagnostics."""
import doctest
import io
import json
import math
import warnings

import pytest
import torch

from conftest import tiny_config
from lpc import AutoGamma, GammaSchedule
import lpc.heads
import lpc.losses
from lpc.losses import build_gamma_schedule, true_class_probability
import lpc.trainer as loop
from lpc.data import load_data
from lpc.model import build_model
from lpc.trainer import _pad_fill, accuracy_drop, make_optimizer, steps_per_epoch, train, train_epoch


def _batch(q: float, n: int = 4):
    """Two-class logits whose softmax gives the true class probability ``q`` exactly (up to float32)."""
    margin = math.log(q / (1 - q))
    return torch.tensor([[margin, 0.0]] * n), torch.zeros(n, dtype=torch.long)


def _random_batches(count: int, seed: int = 0, classes: int = 5, scale: float = 3.0):
    rng = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, classes, generator=rng) * scale, torch.randint(0, classes, (16,), generator=rng))
            for _ in range(count)]


def _lpc01_trajectory(batches, total_steps, init=0.1, max=1e6, target=0.3, width=0.05, ramp=0.5, accuracy=0.99):
    """lpc 0.1's AutoGamma.update, typed again from its formula: rate = log(max / init) / (ramp · total_steps)."""
    rate = math.log(max / init) / (ramp * total_steps)
    log_gamma = torch.tensor(math.log(init), dtype=torch.float64)
    values = []
    for logits, y in batches:
        p = logits.float().softmax(dim=1).gather(1, y[:, None]).squeeze(1)
        right = (logits.argmax(1) == y).sum().double()
        n = torch.tensor(float(len(y)), dtype=torch.float64)
        mean_p, acc = p.sum().double() / n, right / n
        error = torch.where(acc >= accuracy, mean_p - target, acc - accuracy) / width
        log_gamma = (log_gamma + rate * torch.tanh(error)).clamp(math.log(init), math.log(max))
        values.append(math.exp(log_gamma.item()))
    return values


def test_auto_defaults_move_gamma_bit_for_bit_as_lpc_0_1():
    """floor 0.1, max 1e6, speed 14 is lpc 0.1's init 0.1, max 1e6, ramp 0.5: 14 decades in the run. lpc 0.1's
    set point was 0.3; its runs saved it in their config, so they resume with it."""
    batches = _random_batches(60, scale=6.0) + [_batch(0.95, 16)] * 150 + [_batch(0.1, 16)] * 40
    for total in (250, 1000, 12345):
        s = AutoGamma(total, accuracy=0.0, target=0.3)
        values = []
        for logits, y in batches:
            s.step(logits, y)
            values.append(s.value)
        expected = _lpc01_trajectory(batches, total, accuracy=0.0)
        assert values == expected  # exactly: a resumed lpc 0.1 run continues on the same γ
        assert max(values) > 0.14 and values[-1] < max(values)  # it rose and fell back: the test saw both moves
    gated = AutoGamma(300, target=0.3)
    assert [gated.step(*b) or gated.value for b in batches] == _lpc01_trajectory(batches, 300)
    assert AutoGamma(300).target == 0.9  # today's default, chosen on validation (docs/gamma.md)


def test_auto_rises_at_speed_decades_per_run_while_confident():
    s = AutoGamma(200, floor=1e-2, max=1e4, target=0.9, width=0.05, speed=6.0)
    assert s.rate == pytest.approx(6 * math.log(10) / 200)
    logits, y = _batch(0.95)
    for _ in range(30):
        s.step(logits, y)
    expected = math.log(1e-2) + 30 * 6 * math.log(10) / 200 * math.tanh((0.95 - 0.9) / 0.05)
    assert math.log(s.value) == pytest.approx(expected, rel=1e-6)
    assert int(s.num_steps) == 30


def test_auto_backs_off_below_target_and_stays_within_floor_and_max():
    s = AutoGamma(100, floor=1e-2, max=1.0, target=0.9)
    high, low = _batch(0.999), _batch(0.6)
    for _ in range(200):
        s.step(*high)
    assert s.value == pytest.approx(1.0)  # capped at max
    values = []
    for _ in range(5):
        s.step(*low)
        values.append(s.value)
    assert all(b < a for a, b in zip([1.0] + values, values))  # strictly backing off
    for _ in range(500):
        s.step(*low)
    assert s.value == pytest.approx(1e-2)  # floored


def _steps_to_reach(s: AutoGamma, top: float) -> int:
    logits, y = _batch(0.99)
    steps = 0
    while s.value < top * (1 - 1e-9):
        s.step(logits, y)
        steps += 1
    return steps


def test_auto_speed_is_a_fraction_of_the_run_and_independent_of_max():
    """The same fraction of the run whatever its length (a budget transfers between datasets), and a lower max is
    reached sooner instead of climbing more slowly (lpc 0.1 tied the speed to max)."""
    for total in (40, 4000):
        four = AutoGamma(total, floor=1e-2, max=1e2, speed=8.0, target=0.5, width=1e-3)  # tanh saturates
        assert _steps_to_reach(four, 1e2) == pytest.approx(total * 4 / 8, abs=1)
        two = AutoGamma(total, floor=1e-2, max=1.0, speed=8.0, target=0.5, width=1e-3)
        assert two.rate == four.rate
        assert _steps_to_reach(two, 1.0) == pytest.approx(total * 2 / 8, abs=1)


def test_deprecated_init_and_ramp_still_mean_what_they_meant():
    with pytest.warns(DeprecationWarning, match="floor"):
        old = AutoGamma(100, init=1e-2, max=1e3)
    assert old.floor == 1e-2 and old.value == pytest.approx(1e-2)
    with pytest.warns(DeprecationWarning, match="speed"):
        old = AutoGamma(100, floor=1e-2, max=1e3, ramp=0.25)
    # lpc 0.1: from init to max (5 decades) in a quarter of the run at full speed
    assert old.speed == pytest.approx(5 / 0.25) and old.rate == pytest.approx(math.log(1e5) / 25, rel=1e-12)
    with pytest.warns(DeprecationWarning):
        assert old.ramp == pytest.approx(0.25) and old.init == 1e-2
    with pytest.raises(TypeError, match="floor only"):
        AutoGamma(100, floor=0.5, init=0.2)
    with pytest.raises(TypeError, match="speed only"):
        AutoGamma(100, speed=3.0, ramp=0.5)


def test_deprecated_calls_keep_their_lpc_0_1_meaning():
    batches = _random_batches(10, seed=3)
    new, old = AutoGamma(20, floor=1e-2, max=1e3, target=0.15, accuracy=0.0), \
        AutoGamma(20, floor=1e-2, max=1e3, target=0.15, accuracy=0.0)
    for logits, y in batches:
        new.step(logits, y)
        with pytest.warns(DeprecationWarning, match="update"):
            old.update(logits, y)
    with pytest.warns(DeprecationWarning, match="per-epoch"):
        old.step()  # lpc 0.1's end of an epoch: nothing
    assert old.value == new.value != pytest.approx(1e-2)

    paper = GammaSchedule(init=1e-2, factor=2.0, max=1.0)  # lpc 0.1's loop: update per step, step() per epoch
    for _ in range(5):
        with pytest.warns(DeprecationWarning, match="update"):
            paper.update(*_batch(0.9))
    assert paper.epoch == 0 and paper.value == pytest.approx(1e-2)
    with pytest.warns(DeprecationWarning, match="per-epoch"):
        paper.step()
    assert paper.epoch == 1 and paper.value == pytest.approx(2e-2)


def test_paper_schedule_counts_steps_and_epochs():
    s = GammaSchedule(init=1e-2, factor=2.0, max=1.0, steps_per_epoch=3)
    logits, y = _batch(0.9)
    seen = []
    for _ in range(8):
        seen.append(s.weight())
        s.step(logits, y)
    # steps 0-2 in epoch 0, 3-5 in epoch 1, 6-7 in epoch 2
    assert seen == pytest.approx([1e-2] * 3 + [2e-2] * 3 + [4e-2] * 2)
    assert (s.epoch, int(s.num_steps)) == (2, 8)
    with pytest.warns(DeprecationWarning):
        s.step()  # an lpc 0.1 epoch end in the middle of epoch 2: on to the first step of epoch 3
    assert (s.epoch, int(s.num_steps), s.value) == (3, 9, pytest.approx(8e-2))


def test_controllers_are_modules_whose_state_travels_with_state_dict():
    batches = _random_batches(40)
    a = AutoGamma(50, floor=1e-2, max=1e3, target=0.15, accuracy=0.0)  # random logits: the gate would hold γ
    for logits, y in batches[:20]:
        a.step(logits, y)
    guard = ["log_low", "log_cap", "best_val", "backoffs"]
    assert set(a.state_dict()) == {"log_gamma", "num_steps", "_extra_state", *guard}
    assert [name for name, _ in a.named_buffers()] == ["log_gamma", "num_steps", *guard]
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = AutoGamma(1, floor=1.0, max=2.0)
    b.load_state_dict(torch.load(buffer, weights_only=True))  # checkpoints are loaded with weights_only
    assert (b.floor, b.max, b.target, b.total_steps, int(b.num_steps)) == (1e-2, 1e3, 0.15, 50, 20)
    for logits, y in batches[20:]:
        a.step(logits, y)
        b.step(logits, y)
        assert a.value == b.value
    assert a.value != pytest.approx(1e-2)

    p = GammaSchedule(init=1e-2, factor=1.5, max=10.0, steps_per_epoch=4)
    for _ in range(7 * 4 + 1):
        p.step(*_batch(0.9))
    restored = GammaSchedule()
    restored.load_state_dict(p.state_dict())
    assert (restored.epoch, restored.steps_per_epoch, restored.factor) == (7, 4, 1.5)
    assert restored.value == p.value == pytest.approx(1e-2 * 1.5 ** 7)


def test_lpc_0_1_checkpoints_load():
    """lpc 0.1 wrote flat dicts of plain numbers; loading one resumes the same γ."""
    a = AutoGamma(50, floor=1e-2, max=1e3, speed=10.0, target=0.15, accuracy=0.0)  # speed 10 = ramp 0.5 here
    batches = _random_batches(30, seed=1)
    for logits, y in batches[:10]:
        a.step(logits, y)
    flat = {"total_steps": 50, "init": 1e-2, "max": 1e3, "target": 0.15, "width": 0.05, "ramp": 0.5,
            "accuracy": 0.0, "log_gamma": a.log_gamma.item()}
    b = AutoGamma(7)
    b.load_state_dict(json.loads(json.dumps(flat)))
    assert (b.floor, b.max, b.speed, b.total_steps, b.accuracy) == (1e-2, 1e3, 10.0, 50, 0.0)
    for logits, y in batches[10:]:
        a.step(logits, y)
        b.step(logits, y)
    assert b.value == a.value
    without_gate = {k: v for k, v in flat.items() if k != "accuracy"}  # the first 0.1 checkpoints had no gate
    c = AutoGamma(7)
    c.load_state_dict(without_gate)
    assert c.accuracy == 0.0

    paper = GammaSchedule(steps_per_epoch=5)  # the loop that resumes knows its steps per epoch
    paper.load_state_dict({"init": 2e-2, "factor": 1.5, "max": 1e3, "every": 2, "epoch": 7})
    assert (int(paper.num_steps), paper.epoch, paper.every) == (35, 7, 2)
    assert paper.value == pytest.approx(2e-2 * 1.5 ** 3)
    paper.step(*_batch(0.5))
    assert paper.epoch == 7


def test_state_stays_float64_through_dtype_and_device_moves():
    s = AutoGamma(10, floor=0.3)
    s.half()
    assert s.log_gamma.dtype == torch.float64 and s.log_gamma.item() == math.log(0.3)
    holder = torch.nn.Sequential(torch.nn.Linear(2, 2), s).to(torch.bfloat16)
    assert holder[0].weight.dtype == torch.bfloat16 and s.log_gamma.dtype == torch.float64
    s.to("meta")
    assert s.log_gamma.device.type == "meta" and s.log_gamma.dtype == torch.float64
    assert s.num_steps.dtype == torch.int64
    # MPS has no float64: there the state is float32
    assert lpc.losses._state_dtype(torch.device("mps")) == torch.float32
    assert lpc.losses._state_dtype(torch.device("cuda", 1)) == torch.float64


def test_auto_all_reduce_uses_the_global_batch():
    """Two ranks with different shards and a summing all_reduce move γ exactly as one process on the whole batch."""
    logits = torch.randn(12, 3, generator=torch.Generator().manual_seed(1)) * 4
    y = torch.arange(12) % 3
    single = AutoGamma(10, floor=1e-2, max=1e3, target=0.5)
    single.step(logits, y)

    def stats(part):
        q = logits[part].softmax(1).gather(1, y[part, None])
        correct = (logits[part].argmax(1) == y[part]).sum()
        return torch.stack([q.sum().double(), correct.double(), torch.tensor(float(len(q)), dtype=torch.float64)])

    other = {0: stats(slice(8, 12)), 1: stats(slice(0, 8))}
    ranks = []
    for rank, part in ((0, slice(0, 8)), (1, slice(8, 12))):
        s = AutoGamma(10, floor=1e-2, max=1e3, target=0.5, all_reduce=lambda t, r=rank: t.add_(other[r]))
        s.step(logits[part], y[part])
        ranks.append(s.value)
    assert ranks[0] == ranks[1] == pytest.approx(single.value, rel=1e-6)  # float32 softmax, summed in another order


def _rank(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    logits = torch.randn(12, 3, generator=torch.Generator().manual_seed(1)) * 4
    y = torch.arange(12) % 3
    part = slice(0, 8) if rank == 0 else slice(8, 12)
    s = AutoGamma(10, floor=1e-2, max=1e3, target=0.5, accuracy=0.0)  # all_reduce=None: found by itself
    s.step(logits[part], y[part])
    torch.save(s.log_gamma, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_auto_finds_the_process_group_by_itself(tmp_path):
    torch.multiprocessing.spawn(_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "gamma")), nprocs=2)
    logits = torch.randn(12, 3, generator=torch.Generator().manual_seed(1)) * 4
    single = AutoGamma(10, floor=1e-2, max=1e3, target=0.5, accuracy=0.0)
    single.step(logits, torch.arange(12) % 3)
    alone = AutoGamma(10, floor=1e-2, max=1e3, target=0.5, accuracy=0.0)
    alone.step(logits[:8], (torch.arange(12) % 3)[:8])
    assert single.value != pytest.approx(1e-2)  # γ moved
    ranks = [torch.load(tmp_path / f"gamma.{r}", weights_only=True).item() for r in (0, 1)]
    assert ranks[0] == ranks[1] == pytest.approx(single.log_gamma.item(), rel=1e-6)
    assert ranks[0] != pytest.approx(alone.log_gamma.item(), rel=1e-6)  # rank 0's own shard would move γ otherwise


def test_the_accuracy_gate_backs_off_on_unfitted_batches_whatever_their_confidence():
    """Mean true-class probability above the target 0.3, but the argmax is wrong on half the batch: γ falls at
    the rate tanh((accuracy − gate) / width); once every prediction is right, the confidence decides again."""
    lead = math.log(2.0)  # three classes: the true class at twice the third's probability
    right, wrong = [lead, 0.0, -0.7], [lead, lead + 0.5, -0.7]  # the second row predicts class 1
    logits, y = torch.tensor([right, wrong] * 2), torch.zeros(4, dtype=torch.long)
    q = true_class_probability(logits, y).mean().item()
    assert q > 0.3
    gated = AutoGamma(100, floor=1e-3, max=1e3, target=0.3, accuracy=0.99)
    gated.log_gamma.fill_(0.0)  # γ = 1, halfway between floor and cap
    gated.step(logits, y)
    assert math.log(gated.value) == pytest.approx(gated.rate * math.tanh((0.5 - 0.99) / 0.05), rel=1e-9)
    open_gate = AutoGamma(100, floor=1e-3, max=1e3, target=0.3, accuracy=0.0)
    open_gate.log_gamma.fill_(0.0)
    open_gate.step(logits, y)
    assert math.log(open_gate.value) == pytest.approx(open_gate.rate * math.tanh((q - 0.3) / 0.05), rel=1e-6)
    before = gated.value
    gated.step(*_batch(0.8))  # every prediction right and q above the target: γ rises again
    assert gated.value > before and gated.state_dict()["_extra_state"]["accuracy"] == 0.99


def test_the_guard_backs_off_a_decade_on_a_significant_fall_of_validation_accuracy():
    """n = 1,000 and best 0.90: the standard error is sqrt(0.9 · 0.1 / 1000) = 0.0095, so with guard 2 a fall to
    0.885 is noise and one to 0.88 backs γ and its cap off by a decade; the fall is the next reference."""
    s = AutoGamma(1000, floor=1e-2, max=1e3, target=0.5)
    confident = _batch(0.95)
    for _ in range(300):
        s.step(*confident)
    before = s.value
    assert before > 1.0
    assert [s.observe(a, 1000) for a in (0.85, 0.90, 0.885)] == [False, False, False]
    assert s.value == before
    assert s.observe(0.88, 1000) is True
    assert math.log(s.value) == pytest.approx(math.log(before) - math.log(10), rel=1e-12)
    for _ in range(300):  # confident batches no longer raise γ: it is capped where it backed off to
        s.step(*confident)
    assert s.value == pytest.approx(before / 10, rel=1e-12)
    assert s.observe(0.87, 1000) is False  # within noise of the new reference 0.88
    assert s.observe(0.85, 1000) is True  # a second fall: another decade
    assert s.value == pytest.approx(before / 100, rel=1e-12) and int(s.backoffs) == 2
    for _ in range(5):  # a fall takes γ below the floor, which follows it down
        s.observe(float(s.best_val) - 0.1, 1000)
    assert s.value == pytest.approx(before * 1e-7, rel=1e-9) and s.value < s.floor
    for _ in range(50):
        s.step(*_batch(0.1))  # below the set point: γ backs off towards the lowered floor, not the configured one
    assert s.value < before * 1e-7
    # the guard's state travels with the checkpoint
    restored = AutoGamma(7)
    restored.load_state_dict(s.state_dict())
    assert (int(restored.backoffs), float(restored.best_val), restored.value) == (7, float(s.best_val), s.value)
    # a best of 100% still needs a fall of more than guard examples' worth: 2 of 200
    perfect = AutoGamma(100, guard=2.0)
    perfect.observe(1.0, 200)
    assert not perfect.observe(0.99, 200) and perfect.observe(0.985, 200)
    off = AutoGamma(100, guard=0.0)
    off.observe(0.9, 1000)
    assert not off.observe(0.1, 1000) and int(off.backoffs) == 0


def test_states_from_before_the_guard_resume_without_it():
    a = AutoGamma(50, floor=1e-2, max=1e3, target=0.15, accuracy=0.0)
    batches = _random_batches(30, seed=2)
    for logits, y in batches[:10]:
        a.step(logits, y)
    old = {k: v for k, v in a.state_dict().items() if k not in ("log_low", "log_cap", "best_val", "backoffs")}
    old["_extra_state"] = {k: v for k, v in old["_extra_state"].items() if k != "guard"}
    b = AutoGamma(7)
    b.load_state_dict(old)
    assert b.guard == 0.0 and not b.observe(0.9, 100) and not b.observe(0.1, 100)
    for logits, y in batches[10:]:
        a.step(logits, y)
        b.step(logits, y)
    assert b.value == a.value


def test_schedules_share_one_interface_and_the_paper_one_ignores_batches():
    paper = GammaSchedule(init=1e-2, factor=2.0, max=1.0, steps_per_epoch=2)
    paper.step(*_batch(0.99))
    assert paper.weight() == paper.value == pytest.approx(1e-2)
    paper.step(*_batch(0.01))
    assert paper.value == pytest.approx(2e-2)
    config = tiny_config(**{"gamma.schedule": "auto", "gamma.floor": 0.05, "gamma.speed": 3.0}).gamma
    auto = build_gamma_schedule(config, 100)
    assert isinstance(auto, AutoGamma) and (auto.floor, auto.speed, auto.max, auto.target) == \
        (0.05, 3.0, config.max, config.target)
    assert auto.value == pytest.approx(0.05)  # the floor, not the paper's init
    built = build_gamma_schedule(tiny_config().gamma, 100, steps_per_epoch=7)
    assert isinstance(built, GammaSchedule) and built.steps_per_epoch == 7


@pytest.mark.parametrize("bad, message", [({"target": 1.0}, "target"), ({"floor": 0}, "floor"),
                                          ({"speed": -1.0}, "speed"), ({"max": 1e-3, "floor": 1e-2}, "below floor"),
                                          ({"guard": -1.0}, "guard"), ({"guard": float("nan")}, "guard")])
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
    assert history[-1]["gamma"] > config.gamma.floor


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
