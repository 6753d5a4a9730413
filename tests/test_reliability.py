"""Tests of lpc.metrics.reliability against numpy references written here, and sklearn / scipy where installed."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from lpc.metrics.reliability import (
    auroc,
    collect_outputs,
    fit_class_gaussians,
    fit_reference_gaussians,
    mahalanobis_distance,
    mahalanobis_score,
    misclassification_summary,
    msp_score,
    odin_score,
    ood_auroc,
    ood_auroc_from_outputs,
)

RNG = np.random.default_rng


def textbook_mahalanobis(u, v, precision):
    """√((u − v)ᵀ P (u − v)), the definition (scipy.spatial.distance.mahalanobis's formula)."""
    d = np.asarray(u, dtype=np.float64) - np.asarray(v, dtype=np.float64)
    return math.sqrt(d @ precision @ d)


def pairwise_auroc(positives, scores):
    """The AUROC by its definition: over every (positive, negative) pair, 1 if the positive scores higher, ½ if tied."""
    p = np.asarray(positives, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[p][:, None], s[~p][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def np_softmax_max(logits, temperature=1.0):
    a = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).max(axis=1)


def reference_gaussians(z, y, covariance, standardize):
    """Means and pinv'd covariances the textbook way: numpy loops, np.cov(bias=True), np.linalg.pinv."""
    z = np.asarray(z, dtype=np.float64)
    shift, scale = np.zeros(z.shape[1]), np.ones(z.shape[1])
    if standardize:
        shift, scale = z.mean(0), z.std(0)
        scale[scale == 0] = 1.0
    zs = (z - shift) / scale
    classes = np.unique(y)
    means = {c: zs[y == c].mean(0) for c in classes}
    if covariance == "tied":
        cov = sum(np.cov(zs[y == c].T, bias=True) * (y == c).sum() for c in classes) / len(z)
        prec = {c: np.linalg.pinv(cov) for c in classes}
    else:
        prec = {c: np.linalg.pinv(np.cov(zs[y == c].T, bias=True)) for c in classes}
    return means, prec, shift, scale


# --------------------------------------------------------------------------- AUROC


def test_auroc_equals_sklearn_on_hand_built_scores_with_ties():
    scores = [0.9, 0.8, 0.8, 0.3, 0.3, 0.1, 0.7, 0.2]
    positives = [1, 1, 0, 1, 0, 0, 1, 0]
    assert auroc(scores, positives) == pairwise_auroc(positives, scores)
    assert auroc(torch.tensor(scores), torch.tensor(positives, dtype=torch.bool)) == pairwise_auroc(positives, scores)
    rng = RNG(0)
    s, p = rng.normal(size=500), rng.random(500) < 0.3
    assert auroc(s, p) == pytest.approx(pairwise_auroc(p, s), abs=1e-12)


def test_auroc_ranks_infinite_scores_and_rejects_undefined_cases():
    # -inf is simply the lowest score: same AUROC as a finite stand-in
    assert auroc([2.0, 1.0, -math.inf, 0.5], [1, 0, 0, 1]) == pairwise_auroc([1, 0, 0, 1], [2.0, 1.0, -99.0, 0.5])
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0.1, math.nan], [True, False])
    with pytest.raises(ValueError, match="equal length"):
        auroc([0.1, 0.2, 0.3], [True, False])


def test_auroc_of_two_level_scores_is_the_closed_form():
    # scores 0/1 only: P(s+ > s-) + ½ P(s+ = s-) from the four counts; millions of ties, and exact
    n1, n0, m1, m0 = 1_234_567, 765_433, 300_001, 1_699_999   # positives at 1, at 0; negatives at 1, at 0
    scores = np.r_[np.ones(n1), np.zeros(n0), np.ones(m1), np.zeros(m0)]
    positives = np.r_[np.ones(n1 + n0, bool), np.zeros(m1 + m0, bool)]
    exact = (n1 * m0 + 0.5 * (n1 * m1 + n0 * m0)) / ((n1 + n0) * (m1 + m0))
    assert auroc(scores, positives) == exact
    assert auroc(np.zeros(10), np.arange(10) < 3) == 0.5            # all tied: chance
    assert auroc([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1]) == 0.75         # pairs won: (2>1), (4>1), (4>3) of 4
    assert auroc([-math.inf, 0.0, math.inf], [0, 1, 1]) == 1.0


def test_auroc_and_ranks_equal_sklearn_and_scipy_on_random_scores_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    from lpc.metrics.reliability import _average_ranks

    rng = RNG(11)
    for trial in range(200):
        n = int(rng.integers(2, 400))
        levels = int(rng.integers(1, 30))
        # coarse integer levels give runs of ties of every length; some trials continuous
        s = rng.integers(0, levels, n).astype(np.float64) if trial % 3 else rng.normal(size=n)
        p = rng.random(n) < rng.uniform(0.05, 0.95)
        if p.all() or not p.any():
            continue
        np.testing.assert_array_equal(_average_ranks(s), stats.rankdata(s))
        # sklearn integrates the ROC curve by trapezoids: equal up to its last-bit rounding
        assert auroc(s, p) == pytest.approx(metrics.roc_auc_score(p, s), rel=0, abs=4e-16)
        assert auroc(s, p) == pairwise_auroc(p, s)


# --------------------------------------------------------------------------- Mahalanobis


@pytest.mark.parametrize("covariance", ["tied", "per_class"])
@pytest.mark.parametrize("standardize", [False, True])
def test_mahalanobis_distance_equals_the_definition(covariance, standardize):
    rng = RNG(1)
    # features on very different scales, so standardisation changes the answer
    z = rng.normal(size=(400, 6)) * np.array([1, 10, 0.1, 3, 1, 5]) + rng.normal(size=6)
    y = rng.integers(0, 4, size=400)
    z[y == 2] += 2.0
    zq, cq = rng.normal(size=(30, 6)) * 3, rng.integers(0, 4, size=30)

    fitted = fit_class_gaussians(torch.tensor(z), torch.tensor(y), covariance=covariance, standardize=standardize)
    got = mahalanobis_distance(torch.tensor(zq), fitted, torch.tensor(cq)).numpy()

    means, prec, shift, scale = reference_gaussians(z, y, covariance, standardize)
    zqs = (zq - shift) / scale
    expected = [textbook_mahalanobis(zqs[i], means[cq[i]], prec[cq[i]]) for i in range(len(zq))]
    np.testing.assert_allclose(got, expected, rtol=1e-9)

    every = mahalanobis_distance(zq, fitted).numpy()  # (N, C), array input
    expected_all = [[textbook_mahalanobis(zqs[i], means[c], prec[c]) for c in range(4)] for i in range(len(zq))]
    np.testing.assert_allclose(every, expected_all, rtol=1e-9)
    np.testing.assert_allclose(mahalanobis_score(zq, fitted).numpy(), -np.min(expected_all, axis=1), rtol=1e-9)
    np.testing.assert_allclose(mahalanobis_score(zq, fitted, classes=cq).numpy(), -np.asarray(expected), rtol=1e-9)


def test_mahalanobis_distance_equals_scipy():
    distance = pytest.importorskip("scipy.spatial.distance")
    rng = RNG(12)
    z = rng.normal(size=(300, 5)) * np.array([1, 10, 0.1, 3, 1])
    y = rng.integers(0, 3, size=300)
    zq, cq = rng.normal(size=(25, 5)) * 3, rng.integers(0, 3, size=25)
    means, prec, _, _ = reference_gaussians(z, y, "per_class", False)
    expected = [distance.mahalanobis(zq[i], means[cq[i]], prec[cq[i]]) for i in range(25)]
    fitted = fit_class_gaussians(z, y, covariance="per_class")
    np.testing.assert_allclose(mahalanobis_distance(zq, fitted, cq).numpy(), expected, rtol=1e-9)


def test_mahalanobis_handles_rank_deficient_collapsed_latents_like_pinv():
    # two latent dimensions carry no within-class variance (collapsed), one is constant
    rng = RNG(2)
    y = rng.integers(0, 3, size=300)
    codes = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    z = np.concatenate([codes[y], rng.normal(size=(300, 3))], axis=1)
    fitted = fit_class_gaussians(z, y, covariance="tied")
    zq, cq = z[:20] + rng.normal(size=(20, 6)), y[:20]
    means, prec, _, _ = reference_gaussians(z, y, "tied", False)
    expected = [textbook_mahalanobis(zq[i], means[cq[i]], prec[cq[i]]) for i in range(20)]
    np.testing.assert_allclose(mahalanobis_distance(zq, fitted, cq).numpy(), expected, rtol=1e-8)


def test_mahalanobis_unknown_class_is_infinitely_far():
    rng = RNG(3)
    fitted = fit_class_gaussians(rng.normal(size=(50, 3)), np.r_[np.zeros(25, int), np.full(25, 2)])
    d = mahalanobis_distance(rng.normal(size=(3, 3)), fitted, [0, 1, 2])
    assert math.isinf(d[1]) and math.isfinite(d[0]) and math.isfinite(d[2])
    assert torch.equal(fitted.classes, torch.tensor([0, 2]))


def test_fit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="covariance"):
        fit_class_gaussians(np.zeros((4, 2)), np.zeros(4, int), covariance="diagonal")
    with pytest.raises(ValueError, match="labels"):
        fit_class_gaussians(np.zeros((4, 2)), np.zeros(3, int))


# --------------------------------------------------------------------------- softmax scores


def test_odin_with_unit_temperature_is_msp_and_matches_numpy():
    rng = RNG(4)
    logits = rng.normal(size=(20, 7)) * 5
    torch.testing.assert_close(odin_score(torch.tensor(logits), temperature=1.0), msp_score(torch.tensor(logits)))
    np.testing.assert_allclose(msp_score(logits).numpy(), np_softmax_max(logits), rtol=1e-12)
    hand = np.array([[10.0, 0.0, -5.0], [300.0, 250.0, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(odin_score(hand).numpy(), np_softmax_max(hand, 100.0), rtol=1e-12)
    np.testing.assert_allclose(odin_score(hand, temperature=100.0).numpy()[2], 1 / 3, rtol=1e-12)


SCORES = {
    "msp": lambda logits, z, fitted: msp_score(logits),
    "odin": lambda logits, z, fitted: odin_score(logits),
    "mahalanobis": lambda logits, z, fitted: mahalanobis_score(z, fitted, classes=logits.argmax(1)),
}


@pytest.mark.parametrize("name", sorted(SCORES))
def test_every_score_is_higher_for_the_more_confident_sample(name):
    rng = RNG(5)
    z_train = np.concatenate([rng.normal(size=(100, 2)) * 0.1 + [3, 0], rng.normal(size=(100, 2)) * 0.1 + [-3, 0]])
    fitted = fit_class_gaussians(z_train, np.r_[np.zeros(100, int), np.ones(100, int)])
    logits = torch.tensor([[8.0, -8.0], [0.1, -0.1]])  # confident, then barely decided
    z = torch.tensor([[3.0, 0.0], [0.2, 0.0]])  # at the class mean, then between classes
    s = SCORES[name](logits, z, fitted)
    assert s[0] > s[1]


# --------------------------------------------------------------------------- summaries


def make_outputs(rng, n, classes=4, dim=5, noise=1.5):
    """Latents around fixed class centres (same for every call) and logits that mostly agree."""
    centres = RNG(100).normal(size=(classes, dim)) * 3
    y = rng.integers(0, classes, size=n)
    z = centres[y] + rng.normal(size=(n, dim)) * noise
    logits = z @ centres.T / 3 + rng.normal(size=(n, classes))
    return z, y, logits


def test_misclassification_summary_matches_an_independent_pipeline():
    rng = RNG(6)
    z_tr, y_tr, l_tr = make_outputs(rng, 600)
    z_te, y_te, l_te = make_outputs(rng, 300)
    out = misclassification_summary(z_tr, y_tr, l_tr, z_te, y_te, l_te)
    assert set(out) == {"auroc_mahalanobis", "auroc_odin", "auroc_msp"}

    correct_te = l_te.argmax(1) == y_te
    ok = l_tr.argmax(1) == y_tr  # Gaussians fitted on correctly classified training samples only
    means, prec, _, _ = reference_gaussians(z_tr[ok], y_tr[ok], "tied", False)
    pred = l_te.argmax(1)
    maha = [-textbook_mahalanobis(z_te[i], means[pred[i]], prec[pred[i]]) for i in range(len(z_te))]
    assert out["auroc_mahalanobis"] == pytest.approx(pairwise_auroc(correct_te, maha), abs=1e-12)
    assert out["auroc_odin"] == pytest.approx(pairwise_auroc(correct_te, np_softmax_max(l_te, 100.0)), abs=1e-12)
    assert out["auroc_msp"] == pytest.approx(pairwise_auroc(correct_te, np_softmax_max(l_te)), abs=1e-12)
    assert all(0.5 < v <= 1.0 for v in out.values())  # informative scores on this toy problem


def test_misclassification_summary_reports_none_when_all_test_predictions_are_right():
    rng = RNG(7)
    z, y, logits = make_outputs(rng, 50)
    y_right = logits.argmax(1)
    with pytest.warns(RuntimeWarning, match="both classes"):
        out = misclassification_summary(z, y, logits, z, y_right, logits)
    assert out == {"auroc_mahalanobis": None, "auroc_odin": None, "auroc_msp": None}


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.SiLU())
        self.ib = nn.Linear(16, 4)
        self.cls = nn.Linear(4, 3)

    def forward(self, x):
        z = self.ib(self.body(x))
        return self.cls(z), z


def test_ood_auroc_keys_values_and_agreement_with_outputs_path():
    torch.manual_seed(0)
    model = TinyNet().train()
    x_train, x_in = torch.randn(200, 6), torch.randn(100, 6)
    x_ood = torch.randn(80, 6) * 4 + 3
    logits_train, z_train = collect_outputs(model, x_train, batch_size=64)
    y_train = logits_train.argmax(1)
    assert model.training and model.body[1].training  # mode restored

    out = ood_auroc(model, x_in, x_ood, z_train=z_train, y_train=y_train, logits_train=logits_train, batch_size=32)
    assert set(out) == {"ood_auroc_mahalanobis", "ood_auroc_odin", "ood_auroc_msp"}
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in out.values())

    # an iterable of (x, y) batches gives the same outputs as a tensor
    loader = [(x_in[i : i + 25], None) for i in range(0, 100, 25)]
    assert ood_auroc(model, loader, x_ood, score="msp") == {"ood_auroc_msp": out["ood_auroc_msp"]}

    model.eval()
    with torch.no_grad():
        li, zi = model(x_in)
        lo, zo = model(x_ood)
    fitted = fit_class_gaussians(z_train, y_train)
    again = ood_auroc_from_outputs(li, zi, lo, zo, fitted)
    for key in out:
        assert again[key] == pytest.approx(out[key], abs=1e-6)
    positives = np.r_[np.ones(100, bool), np.zeros(80, bool)]
    msp = np.r_[np_softmax_max(li.numpy()), np_softmax_max(lo.numpy())]
    assert out["ood_auroc_msp"] == pytest.approx(pairwise_auroc(positives, msp), abs=1e-6)
    with pytest.raises(ValueError, match="z_train, y_train and logits_train"):
        ood_auroc(model, x_in, x_ood, score="mahalanobis", z_train=z_train, y_train=y_train)
    with pytest.raises(ValueError, match="score"):
        ood_auroc_from_outputs(li, zi, lo, zo, fitted, score="energy")


def test_ood_auroc_fits_on_the_correctly_classified_training_latents():
    """The paper's reference set (Sec. 3.2), the same as the misclassification AUROC's; checked against an
    independent fit, and against the all-latents fit to show the two conventions differ here."""
    rng = RNG(8)
    z_tr, y_tr, l_tr = make_outputs(rng, 400)
    z_in, _, l_in = make_outputs(rng, 150)
    z_out, _, l_out = make_outputs(RNG(9), 120, noise=4.0)
    ok = l_tr.argmax(1) == y_tr
    assert 0.5 < ok.mean() < 0.95  # some training samples are misclassified: the conventions disagree

    class Outputs(nn.Module):  # replays fixed (logits, z): rows are indices into the stored outputs
        def __init__(self, logits, z):
            super().__init__()
            self.logits, self.z = torch.tensor(logits), torch.tensor(z)

        def forward(self, index):
            return self.logits[index], self.z[index]

    z_all = np.r_[z_in, z_out]
    model = Outputs(np.r_[l_in, l_out], z_all)
    fitted = fit_reference_gaussians(z_tr, y_tr, l_tr)
    public = ood_auroc(model, torch.arange(150), torch.arange(150, 270), z_train=z_tr, y_train=y_tr,
                       logits_train=l_tr, score="mahalanobis")["ood_auroc_mahalanobis"]
    positives = np.r_[np.ones(150, bool), np.zeros(120, bool)]

    def closest(means, prec):
        return [-min(textbook_mahalanobis(z, means[c], prec[c]) for c in means) for z in z_all]

    reference = pairwise_auroc(positives, closest(*reference_gaussians(z_tr[ok], y_tr[ok], "tied", False)[:2]))
    all_latents = pairwise_auroc(positives, closest(*reference_gaussians(z_tr, y_tr, "tied", False)[:2]))
    assert public == pytest.approx(reference, abs=1e-12)
    assert abs(public - all_latents) > 1e-4
    assert ood_auroc_from_outputs(l_in, z_in, l_out, z_out, fitted, score="mahalanobis") == \
        {"ood_auroc_mahalanobis": public}
    assert fit_reference_gaussians(z_tr, (l_tr.argmax(1) + 1) % 4, l_tr) is None  # nothing correct: no reference
