"""The statistics the accuracy benchmarks print and the docs quote: the paired standard error of schedules.py and
the linear read-out of readout.py, each against an independent reference (scipy's paired t-test, scikit-learn's
logistic regression) and an analytic case; and schedules.py's bar and its choice on validation data."""
import math
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from readout import readout_accuracy  # noqa: E402
from schedules import _cell, choose, meets_bar, paired_standard_error  # noqa: E402


def test_paired_standard_error_is_the_one_behind_scipys_paired_t_statistic():
    rng = np.random.default_rng(0)
    ib, base = rng.normal(72, 1.5, 6), rng.normal(74, 1.5, 6)
    gaps = list(ib - base)
    t = stats.ttest_rel(ib, base).statistic  # t = mean(gap) / SE(gap)
    assert paired_standard_error(gaps) == pytest.approx(np.mean(gaps) / t, rel=1e-12)
    # two seeds, analytic: the SE of the mean of {a, b} is |a - b| / 2
    assert paired_standard_error([1.0, 4.0]) == pytest.approx(1.5)
    assert math.isnan(paired_standard_error([2.0]))


def _runs(dataset, head, schedule, val, test, nc1, seeds=2):
    return [{"dataset": dataset, "budget": 1.0, "head": head, "schedule": schedule, "seed": s, "epochs": 150,
             "val_accuracy": val, "test_accuracy": test, "nc1_train": nc1} for s in range(seeds)]


def _baselines(dataset, val=0.90, test=0.90):
    return _runs(dataset, "no_pen", "-", val, test, 0.2) + _runs(dataset, "lin_pen", "-", val, test, 0.2)


def test_the_bar_holds_ib_to_both_baselines_and_to_the_collapse():
    rows = _baselines("a", val=0.90) + _runs("a", "ib", "x", 0.896, 0.896, 0.059)
    # 0.4 points below both baselines (lin_pen's half allows 0.5), NC1 just under 0.3 x no_pen's: met
    assert meets_bar(_cell(rows, "a", 1.0, "x"), "val")
    # 0.6 points below lin_pen, or NC1 just over the ratio, however accurate: missed
    for ib in (_runs("a", "ib", "x", 0.894, 0.9, 0.059), _runs("a", "ib", "x", 0.95, 0.9, 0.061)):
        assert not meets_bar(_cell(_baselines("a") + ib, "a", 1.0, "x"), "val")


def test_the_schedule_is_chosen_on_validation_and_test_accuracy_never_enters():
    rows = _baselines("a") + _baselines("b")
    # "val" wins on validation in both cells; "test" is far better on test and misses the bar on validation
    rows += _runs("a", "ib", "val", 0.91, 0.80, 0.01) + _runs("b", "ib", "val", 0.92, 0.80, 0.01)
    rows += _runs("a", "ib", "test", 0.85, 0.99, 0.01) + _runs("b", "ib", "test", 0.85, 0.99, 0.01)
    assert choose(rows, ["test", "val"]) == "val"
    # as many cells on the bar and more accurate on validation run by run: the challenger replaces the incumbent
    rows += _runs("a", "ib", "more", 0.93, 0.50, 0.01) + _runs("b", "ib", "more", 0.93, 0.50, 0.01)
    assert choose(rows, ["val", "more"]) == "more"
    assert choose(rows, ["more", "val"]) == "more"  # and the incumbent stays where it is the better one


def _noisy(dataset, schedule, vals, nc1=0.01):
    return [{"dataset": dataset, "budget": 1.0, "head": "ib", "schedule": schedule, "seed": s, "epochs": 150,
             "val_accuracy": v, "test_accuracy": 0.9, "nc1_train": nc1} for s, v in enumerate(vals)]


def test_a_default_does_not_move_on_noise_or_for_accuracy_that_gives_up_the_collapse():
    rows = []
    for base in ("no_pen", "lin_pen"):
        rows += [{"dataset": "a", "budget": 1.0, "head": base, "schedule": "-", "seed": s, "epochs": 150,
                  "val_accuracy": 0.90, "test_accuracy": 0.90, "nc1_train": 0.2} for s in range(4)]
    rows += _noisy("a", "incumbent", [0.91, 0.91, 0.91, 0.91])
    # ahead by 0.5 points on average, but the paired gains (+3, -2, +3, -2) have a standard error of 1.44
    rows += _noisy("a", "lucky", [0.94, 0.89, 0.94, 0.89])
    assert choose(rows, ["incumbent", "lucky"]) == "incumbent"
    # +1 point in every run: far beyond noise, and chosen
    rows += _noisy("a", "better", [0.92, 0.92, 0.92, 0.92])
    assert choose(rows, ["incumbent", "lucky", "better"]) == "better"
    # +5 points, but NC1 at 0.5 x no_pen's misses the bar where the incumbent meets it: not chosen
    rows += _noisy("a", "uncollapsed", [0.96, 0.96, 0.96, 0.96], nc1=0.1)
    assert choose(rows, ["incumbent", "uncollapsed"]) == "incumbent"
    # a single seed cannot tell a gain from noise
    one = [r for r in rows if r["seed"] == 0]
    assert choose(one, ["incumbent", "better"]) == "incumbent"


def _sample(means, n_per_class, seed):
    """n_per_class points per class around ``means`` (classes x dim) with unit noise, and their labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(len(means)).repeat_interleave(n_per_class)
    return means[y] + torch.randn(len(y), means.shape[1], generator=g), y


def _means(classes, dim, spread, seed):
    return spread * torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed))


def test_readout_separates_separable_classes_perfectly():
    means = _means(4, 16, spread=20.0, seed=0)
    assert readout_accuracy(*_sample(means, 30, 1), *_sample(means, 30, 2), penalty=1e-4) == 1.0


@pytest.mark.parametrize("penalty", [1e-4, 1e-2])
def test_readout_agrees_with_scikit_learns_logistic_regression(penalty):
    """Same objective (mean cross-entropy + penalty ‖W‖² on features standardised with the training statistics,
    unpenalised bias): scikit-learn's C is 1 / (2 n penalty). Few training points in many dimensions, so the
    penalty moves the accuracy (71.3% at 1e-4, 73.6% at 1e-2) by more than the tolerance."""
    means = _means(5, 60, spread=0.35, seed=3)
    (x_train, y_train), (x_val, y_val) = _sample(means, 15, 4), _sample(means, 200, 5)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    reference = LogisticRegression(C=1 / (2 * len(y_train) * penalty), max_iter=10000, tol=1e-10)
    reference.fit(((x_train - mean) / std).numpy(), y_train.numpy())
    expected = (reference.predict(((x_val - mean) / std).numpy()) == y_val.numpy()).mean()
    assert 0.4 < expected < 0.95
    assert readout_accuracy(x_train, y_train, x_val, y_val, penalty) == pytest.approx(expected, abs=2 / len(y_val))
