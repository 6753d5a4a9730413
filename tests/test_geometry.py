"""Tests of the latent-geometry metrics (collapse, entropy, hypercube, geometry_summary) against analytic cases
and small independent references (numpy written here; scipy where installed)."""
import doctest
import math
import warnings

import numpy as np
import pytest
import torch

from lpc.metrics import collapse, entropy, geometry, hypercube
from lpc.metrics import (
    binarity,
    geometry_summary,
    hypercube_code,
    kl_entropy,
    neural_collapse,
    norm_coeff_var,
    within_class_covariance,
    within_class_variance_share,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _clustered(rng, n_per=(40, 60, 25, 75), p=6, spread=0.3):
    means = rng.normal(0, 2, (len(n_per), p))
    y = np.concatenate([np.full(n, k) for k, n in enumerate(n_per)])
    z = means[y] + spread * rng.normal(size=(len(y), p)) * rng.uniform(0.5, 2, p)
    return z, y


def _rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# --------------------------------------------------------------------------- Σ_W


def test_sigma_w_is_zero_for_collapsed_latents():
    rng = _rng(1)
    y = rng.integers(0, 5, 300)
    z = rng.normal(size=(5, 7))[y]
    out = within_class_covariance(z, y)
    assert np.all(out["matrix"] == 0)
    assert out["trace_per_dim"] == 0.0
    assert out["class_mean_entries"] == 0.0


def test_sigma_w_matches_per_class_numpy_loop():
    z, y = _clustered(_rng(2))
    N, P = z.shape
    ref = np.zeros((P, P))
    covs = []
    for k in np.unique(y):
        r = z[y == k] - z[y == k].mean(0)
        ref += r.T @ r
        covs.append(np.cov(z[y == k].T, bias=True))
    ref /= N
    out = within_class_covariance(z, y)
    np.testing.assert_allclose(out["matrix"], ref, rtol=1e-12, atol=1e-14)
    assert out["trace_per_dim"] == pytest.approx(np.trace(ref) / P, rel=1e-12)
    # the authors' Table-1 scalar: mean over classes of the class covariance, then mean of entries
    assert out["class_mean_entries"] == pytest.approx(np.mean(np.mean(covs, axis=0)), rel=1e-10)
    # unbalanced classes: the two scalars are genuinely different numbers
    assert abs(out["class_mean_entries"] - out["trace_per_dim"]) > 1e-3


def _share_reference(z, y):
    """Tr(Σ_W)/Tr(Σ_T) straight from the definitions: residual sums of squares about class and global means."""
    within = sum(((z[y == k] - z[y == k].mean(0)) ** 2).sum() for k in np.unique(y))
    return within / ((z - z.mean(0)) ** 2).sum()


def test_within_class_variance_share_analytic_cases():
    rng = _rng(30)
    y = rng.integers(0, 5, 300)
    assert within_class_variance_share(rng.normal(size=(5, 7))[y], y) == 0.0        # every class one point
    # two classes at ±a, each split ±s: within variance s², total a² + s²
    a, s = 3.0, 0.5
    pair = np.array([[-a - s], [-a + s], [a - s], [a + s]])
    assert within_class_variance_share(pair, np.array([0, 0, 1, 1])) == pytest.approx(s**2 / (a**2 + s**2), rel=1e-14)
    # every class symmetric about the global mean: all class means coincide, nothing lies between classes
    half, labels = rng.normal(size=(60, 4)), rng.integers(0, 3, 60)
    sym = np.concatenate([half, -half]) + 2.0
    assert within_class_variance_share(sym, np.concatenate([labels, labels])) == pytest.approx(1.0, rel=1e-12)
    assert math.isnan(within_class_variance_share(np.ones((6, 2)), np.array([0, 0, 0, 1, 1, 1])))


def test_within_class_variance_share_matches_reference_and_ignores_scale_shift_rotation():
    rng = _rng(31)
    z, y = _clustered(rng)
    ref = _share_reference(z, y)
    share = within_class_variance_share(z, y)
    assert share == pytest.approx(ref, rel=1e-12)
    # the variance decomposition: 1 − Tr(Σ_B)/Tr(Σ_T) with classes weighted by their size
    between = sum((y == k).sum() * np.sum((z[y == k].mean(0) - z.mean(0)) ** 2) for k in np.unique(y))
    assert share == pytest.approx(1 - between / ((z - z.mean(0)) ** 2).sum(), rel=1e-12)
    shift = rng.normal(size=z.shape[1])
    for c in (1e-3, 1e3, -2.5):
        assert within_class_variance_share(c * z + shift, y) == pytest.approx(ref, rel=1e-10), c
    assert within_class_variance_share(z @ _rotation(rng, z.shape[1]), y) == pytest.approx(ref, rel=1e-10)
    assert within_class_variance_share(torch.from_numpy(z).float(), torch.from_numpy(y)) == pytest.approx(ref, rel=1e-5)


def test_within_class_variance_share_of_random_labels():
    # labels independent of z: over random permutations of fixed class sizes,
    # E[between sum of squares] = (K−1)/(N−1) · total, so E[share] = (N−K)/(N−1) exactly
    rng = _rng(32)
    N, K = 40, 4
    z, y = rng.normal(size=(N, 3)), np.repeat(np.arange(K), N // K)
    shares = [within_class_variance_share(z, rng.permutation(y)) for _ in range(400)]
    assert np.mean(shares) == pytest.approx((N - K) / (N - 1), abs=0.01)


# --------------------------------------------------------------------------- neural collapse


def _simplex_etf(rng, K, P):
    """K unit vectors in R^P with pairwise cosine −1/(K−1)."""
    M = np.sqrt(K / (K - 1)) * (np.eye(K) - np.ones((K, K)) / K)      # rows: ETF in R^K, rank K−1
    basis = _rotation(rng, P)[:, :K]                                   # isometric embedding R^K → R^P
    return M @ basis.T


def _nc_reference(z, y):
    """Independent numpy NC1/NC2 (Papyan et al. 2020) with a rank-(K−1) float64 pseudo-inverse."""
    classes = np.unique(y)
    K, (N, P) = len(classes), z.shape
    mu_g = z.mean(0)
    means = np.stack([z[y == k].mean(0) for k in classes])
    Sw = sum((z[y == k] - means[i]).T @ (z[y == k] - means[i]) for i, k in enumerate(classes)) / N
    M = means - mu_g
    Sb = M.T @ M / K
    U, s, Vt = np.linalg.svd(Sb)
    r = K - 1
    Sb_pinv = Vt[:r].T @ np.diag(1 / s[:r]) @ U[:, :r].T
    norms = np.linalg.norm(M, axis=1)
    Mn = M / norms[:, None]
    cos = (Mn @ Mn.T)[np.triu_indices(K, 1)]
    return {
        "nc1": np.trace(Sw @ Sb_pinv) / K,
        "equinorm": np.std(norms, ddof=1) / np.mean(norms),
        "equiangularity": np.std(cos, ddof=1),
        "max_angle": np.mean(np.abs(cos + 1 / (K - 1))),
        "M": M,
        "means": means,
    }


def test_simplex_etf_has_no_nc2_deviation():
    rng = _rng(3)
    K, P = 6, 9
    etf = 3.0 * _simplex_etf(rng, K, P) + rng.normal(size=P)      # offset: μ_G must be removed
    y = np.repeat(np.arange(K), 50)
    exact = neural_collapse(etf[y], y)
    assert exact["nc1"] == pytest.approx(0.0, abs=1e-20)
    for key in ("equinorm", "equiangularity", "max_angle"):
        assert exact[key] == pytest.approx(0.0, abs=1e-12), key
    noisy = neural_collapse(etf[y] + 1e-4 * rng.normal(size=(len(y), P)), y)
    for key in ("equinorm", "equiangularity", "max_angle"):
        assert noisy[key] < 1e-3, key
    assert 0 < noisy["nc1"] < 1e-6


def test_nc1_nc2_match_numpy_reference_when_p_exceeds_k():
    rng = _rng(4)
    z, y = _clustered(rng, n_per=(30, 50, 40, 35), p=12, spread=1.0)
    ref = _nc_reference(z, y)
    out = neural_collapse(z, y)
    for key in ("nc1", "equinorm", "equiangularity", "max_angle"):
        assert out[key] == pytest.approx(ref[key], rel=1e-9), key
    assert out["nc1_per_dim"] == pytest.approx(ref["nc1"] / z.shape[1], rel=1e-9)
    assert neural_collapse(z, 3 * y + 5) == pytest.approx(out, rel=1e-12)   # labels are just names


def test_nc1_is_not_inflated_by_noise_eigenvalues():
    # P ≫ K: Σ_B has K−1 real eigenvalues and P−K+1 numerically-zero ones;
    # keeping any of the latter would blow NC1 up by orders of magnitude.
    rng = _rng(5)
    K, P = 3, 40
    means = 5 * rng.normal(size=(K, P))
    y = np.repeat(np.arange(K), 100)
    z = (means[y] + rng.normal(size=(len(y), P))).astype(np.float32)
    ref = _nc_reference(z.astype(np.float64), y)
    assert neural_collapse(z, y)["nc1"] == pytest.approx(ref["nc1"], rel=1e-5)


def test_nc3_zero_when_classifier_is_scaled_centred_means():
    z, y = _clustered(_rng(6))
    ref = _nc_reference(z, y)
    out = neural_collapse(z, y, W=7.5 * ref["M"])
    assert out["nc3"] == pytest.approx(0.0, abs=1e-12)
    W = _rng(7).normal(size=ref["M"].shape)
    expected = np.linalg.norm(W / np.linalg.norm(W) - ref["M"] / np.linalg.norm(ref["M"]))
    assert neural_collapse(z, y, W=W)["nc3"] == pytest.approx(expected, rel=1e-10)


def test_nc4_counts_disagreement_with_nearest_class_mean():
    z, y = _clustered(_rng(8), spread=2.0)       # overlapping: NCC ≠ y for some samples
    means = _nc_reference(z, y)["means"]
    d2 = ((z[:, None, :] - means[None]) ** 2).sum(-1)
    assert neural_collapse(z, y, logits=-d2)["nc4"] == 0.0
    assert neural_collapse(z, y, logits=d2)["nc4"] == 1.0          # farthest mean is never nearest
    # predicted grouping: groups are argmax(logits), here the NCC decisions themselves
    ncc = d2.argmin(1)
    assert (ncc != y).any()
    pred = neural_collapse(z, y, logits=-d2, group_by="predicted")
    assert pred["nc1"] == pytest.approx(_nc_reference(z, ncc)["nc1"], rel=1e-9)
    with pytest.raises(ValueError, match="logits"):
        neural_collapse(z, y, group_by="predicted")


# --------------------------------------------------------------------------- norm spread


def test_norm_coeff_var_matches_numpy_population_std():
    z = _rng(9).normal(size=(500, 4)) + 3
    norms = np.linalg.norm(z, axis=1)
    assert norm_coeff_var(z) == pytest.approx(np.std(norms) / np.mean(norms), rel=1e-12)
    sphere = z / np.linalg.norm(z, axis=1, keepdims=True)
    assert norm_coeff_var(2.5 * sphere) == pytest.approx(0.0, abs=1e-14)


# --------------------------------------------------------------------------- entropy


def digamma(n):
    """ψ(n) of a positive integer: the harmonic number H_{n−1} minus Euler's γ."""
    return math.fsum(1.0 / j for j in range(1, n)) - 0.57721566490153286061


gammaln = math.lgamma


def _kth_neighbour(z, k, p=2):
    """Distance from each row to its k-th nearest other row, by brute force in numpy float64 (differences first)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty(len(z))
    step = max(1, (1 << 22) // (len(z) * z.shape[1]))
    for s in range(0, len(z), step):
        diff = np.abs(z[s:s + step, None, :] - z[None, :, :])
        dist = diff.max(-1) if p == np.inf else np.sqrt((diff * diff).sum(-1))
        dist[np.arange(dist.shape[0]), np.arange(s, s + dist.shape[0])] = np.inf     # self, by index
        out[s:s + step] = np.partition(dist, k - 1, axis=1)[:, k - 1]
    return out


def _kl_reference(z, k, p=2):
    """KL entropy from brute-force neighbour distances."""
    N, d = np.shape(z)
    eps = _kth_neighbour(z, k, p)
    log_vd = d * math.log(2) if p == np.inf else 0.5 * d * math.log(math.pi) - gammaln(1 + 0.5 * d)
    return digamma(N) - digamma(k) + log_vd + d * np.mean(np.log(eps))


@pytest.mark.parametrize("d, tol_per_dim", [(2, 0.05), (8, 0.05), (64, 0.25)])
def test_kl_entropy_of_anisotropic_gaussian(d, tol_per_dim):
    # d = 64 carries the estimator's own finite-sample bias (≈ 0.19 nats/dim at N = 20,000, k = 100);
    # stronger anisotropy than eigenvalues in [0.5, 2] biases it much more.
    rng = _rng(10 + d)
    R = _rotation(rng, d)
    lam = rng.uniform(0.5, 2.0, d)
    cov = R @ np.diag(lam) @ R.T
    z = rng.multivariate_normal(np.zeros(d), cov, size=20_000)
    exact = 0.5 * (d * math.log(2 * math.pi * math.e) + np.sum(np.log(lam)))
    assert abs(kl_entropy(z, k=100) - exact) / d < tol_per_dim


def test_kl_entropy_chebyshev_on_uniform_cube():
    # exact entropy d·log(side); small k keeps the (positive) boundary bias of the cube at ~0.003 nats/dim
    rng = _rng(11)
    d, side = 2, 2.5
    z = rng.uniform(0, side, size=(10_000, d))
    est = kl_entropy(z, k=3, metric="chebyshev")
    assert abs(est - d * math.log(side)) / d < 0.02
    assert est == pytest.approx(_kl_reference(z, 3, p=np.inf), rel=1e-12)


def test_massive_distance_ties_go_through_the_exhaustive_fallback(monkeypatch):
    # origin and ±e_i: hundreds of exactly equal distances, more than any candidate margin
    d = 100
    z = 3.0 + np.concatenate([np.zeros((1, d)), np.eye(d), -np.eye(d)])
    calls = []
    fallback = entropy._knn_fallback
    monkeypatch.setattr(entropy, "_knn_fallback", lambda *a: calls.append(a[3].numel()) or fallback(*a))
    for k in (1, 50, 150):
        ours = entropy._knn_euclidean(torch.from_numpy(z), k).numpy()
        np.testing.assert_allclose(ours, _kth_neighbour(z, k), rtol=1e-12)
    assert calls and max(calls) == len(z)


@pytest.mark.parametrize("case", ["gauss", "tiny_scale_offset", "far_tight_clusters"])
def test_neighbour_distances_are_exact(case):
    rng = _rng(12)
    if case == "gauss":
        z = rng.normal(size=(1500, 16))
    elif case == "tiny_scale_offset":
        z = (10 + 1e-4 * rng.normal(size=(1500, 16))).astype(np.float32)   # float32 cdist fails here
    else:
        z = np.repeat(10 + rng.normal(size=(6, 24)), 250, axis=0) + 1e-7 * rng.normal(size=(1500, 24))
    z64 = np.asarray(z, dtype=np.float64)
    for k in (1, 7, 100):
        ref = _kth_neighbour(z64, k)
        ours = entropy._knn_euclidean(torch.from_numpy(np.asarray(z)), k).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
        cheb = entropy._knn_chebyshev(torch.from_numpy(np.asarray(z)), k).numpy()
        np.testing.assert_allclose(cheb, _kth_neighbour(z64, k, p=np.inf), rtol=1e-12)
    assert kl_entropy(z, k=7) == pytest.approx(_kl_reference(z64, 7), rel=1e-10, abs=1e-9)
    if case == "tiny_scale_offset":
        # the shortcut ‖a‖² + ‖b‖² − 2ab in float32 really does lose these distances
        t = torch.from_numpy(z)
        naive = torch.cdist(t, t, compute_mode="use_mm_for_euclid_dist").sort(1).values[:, 7].double().numpy()
        ref = _kth_neighbour(z64, 7)
        assert np.max(np.abs(naive - ref) / ref) > 0.01


def test_neighbour_distances_and_entropy_equal_scipy_on_data_with_ties():
    spatial = pytest.importorskip("scipy.spatial")
    special = pytest.importorskip("scipy.special")
    rng = _rng(35)
    # integer grid points: exact duplicates and long runs of equal distances, in both norms
    z = rng.integers(-3, 4, size=(2000, 4)).astype(np.float64)
    z[:500] = rng.normal(size=(500, 4))                       # and some points off the grid
    tree = spatial.cKDTree(z)
    for k in (1, 5, 60):
        for metric, p in (("euclidean", 2), ("chebyshev", np.inf)):
            ref = tree.query(z, k + 1, p=p)[0][:, -1]   # the point itself is among the k + 1
            np.testing.assert_allclose(entropy._knn_distances(torch.from_numpy(z), k, metric).numpy(), ref,
                                       rtol=1e-12, atol=0)
    g = rng.normal(size=(3000, 6))
    eps = spatial.cKDTree(g).query(g, 11)[0][:, -1]
    log_vd = 3 * math.log(math.pi) - special.gammaln(4)
    assert kl_entropy(g, k=10) == pytest.approx(special.digamma(3000) - special.digamma(10) + log_vd
                                                + 6 * np.mean(np.log(eps)), rel=1e-12)


def test_digamma_of_integers_is_the_harmonic_number_minus_euler_gamma():
    for n in (1, 2, 10, 100, 12_345, 1_000_000):
        assert entropy._digamma(n) == pytest.approx(digamma(n), rel=1e-15, abs=1e-15), n
    assert entropy._digamma(1) == pytest.approx(-0.5772156649015329, rel=1e-15)
    special = pytest.importorskip("scipy.special")
    for n in (3, 777, 50_000, 10**8):
        assert entropy._digamma(n) == pytest.approx(special.digamma(n), rel=1e-15), n


def test_kl_entropy_duplicates_are_floored_as_documented():
    rng = _rng(13)
    d, k = 5, 10
    z = np.repeat(rng.normal(size=(40, d)), 30, axis=0)          # every point has 29 exact copies
    N = len(z)
    log_vd = 0.5 * d * math.log(math.pi) - gammaln(1 + 0.5 * d)
    for floor in (1e-10, 1e-6):
        with pytest.warns(RuntimeWarning, match="floored"):
            h = kl_entropy(z, k=k, min_distance=floor)
        assert h == pytest.approx(digamma(N) - digamma(k) + log_vd + d * math.log(floor), rel=1e-12)
        assert math.isfinite(h)
    with pytest.raises(ValueError, match="min_distance"):
        kl_entropy(z, k=k, min_distance=0)
    # the all-pairs search excludes self by index, so every copy finds its twins at distance 0
    t = torch.from_numpy(z)
    assert torch.all(entropy._knn_euclidean(t, k) == 0)
    assert torch.all(entropy._knn_chebyshev(t, k) == 0)
    wide = np.repeat(rng.normal(size=(40, 20)), 30, axis=0)
    with pytest.warns(RuntimeWarning, match="floored"):
        h = kl_entropy(wide, k=k)
    assert h == pytest.approx(digamma(N) - digamma(k) + 10 * math.log(math.pi) - gammaln(11)
                              + 20 * math.log(1e-10), rel=1e-12)


@pytest.mark.parametrize("d", [3, 20])
def test_kl_entropy_scale_free_is_the_entropy_of_z_over_its_rms(d):
    rng = _rng(33)
    z = rng.normal(size=(800, d)) * rng.uniform(0.5, 2.0, d) + 4.0
    rms = np.sqrt(np.mean((z - z.mean(0)) ** 2))                     # about the mean of all samples
    h = kl_entropy(z, k=7, scale_free=True)
    assert h == pytest.approx(_kl_reference(z, 7) - d * math.log(rms), rel=1e-10)
    assert h == pytest.approx(_kl_reference(z / rms, 7), rel=1e-10)
    for c in (1e-3, 1e3):
        assert kl_entropy(c * z, k=7, scale_free=True) == pytest.approx(h, rel=1e-12), c
        assert kl_entropy(c * z, k=7) == pytest.approx(kl_entropy(z, k=7) + d * math.log(c), rel=1e-10), c
    assert kl_entropy(z + 100.0, k=7, scale_free=True) == pytest.approx(h, rel=1e-10)


def test_kl_entropy_scale_free_floor_is_relative():
    rng = _rng(34)
    dup = np.repeat(rng.normal(size=(40, 5)), 30, axis=0)              # collapsed: every distance floored
    with pytest.warns(RuntimeWarning, match="rms"):
        values = [kl_entropy(c * dup, k=10, scale_free=True) for c in (1.0, 1e-3, 1e3)]
    assert values == pytest.approx([values[0]] * 3, rel=1e-12)
    N, d, k = len(dup), 5, 10
    assert values[0] == pytest.approx(digamma(N) - digamma(k) + 0.5 * d * math.log(math.pi) - gammaln(1 + 0.5 * d)
                                      + d * math.log(1e-10), rel=1e-12)
    assert math.isnan(kl_entropy(np.ones((20, 3)), k=5, scale_free=True))


def test_kl_entropy_high_dimension_does_not_overflow():
    z = _rng(14).normal(size=(400, 400))
    h = kl_entropy(z, k=5)
    assert math.isfinite(h)
    assert h == pytest.approx(_kl_reference(z, 5), rel=1e-10)


def test_kl_entropy_rejects_bad_arguments():
    z = _rng(15).normal(size=(50, 3))
    with pytest.raises(ValueError, match="N=50, k=50"):
        kl_entropy(z, k=50)
    with pytest.raises(ValueError, match="metric"):
        kl_entropy(z, k=5, metric="manhattan")


# --------------------------------------------------------------------------- binarity


def _bimodal(rng, N=4000):
    w = np.array([0.5, 0.3, 0.8, 0.5, 0.15])
    sep = np.array([2.0, 1.0, 3.0, 0.5, 4.0])
    noise = np.array([0.05, 0.1, 0.2, 0.02, 0.3])
    upper = rng.random((N, len(w))) < w
    return np.where(upper, sep, 0.0) + noise * rng.normal(size=(N, len(w))) + rng.normal(0, 3, len(w))


@pytest.mark.parametrize("standardize", [False, True])
def test_binarity_matches_sklearn_per_dimension(standardize):
    from sklearn.mixture import GaussianMixture

    z = _bimodal(_rng(16))
    out = binarity(z, standardize=standardize)
    data = (z - z.mean(0)) / z.std(0) if standardize else z
    for p in range(z.shape[1]):
        gm = GaussianMixture(2, reg_covar=1e-6, tol=1e-3, max_iter=100, random_state=0).fit(data[:, [p]])
        order = np.argsort(gm.means_.ravel())
        np.testing.assert_allclose(out["means"][p], gm.means_.ravel()[order], atol=1e-6)
        np.testing.assert_allclose(out["stds"][p], np.sqrt(gm.covariances_.ravel()[order]), rtol=1e-5)
        np.testing.assert_allclose(out["weights"][p], gm.weights_[order], atol=1e-6)
        assert out["loglik_per_dim"][p] == pytest.approx(gm.score(data[:, [p]]), abs=1e-6)
    sig = out["stds"].mean(1)
    assert out["sigma"] == pytest.approx(sig.mean(), rel=1e-12)
    assert out["peak_distance"] == pytest.approx(np.mean(np.diff(out["means"], axis=1).ravel() / sig), rel=1e-12)
    assert out["loglik"] == pytest.approx(np.mean(out["loglik_per_dim"]), rel=1e-12)
    assert np.all(out["means"][:, 0] <= out["means"][:, 1])


def test_binarity_separates_bimodal_from_unimodal():
    rng = _rng(17)
    codes = np.sign(rng.normal(size=(3000, 8)))
    tight = binarity(codes + 0.02 * rng.normal(size=codes.shape))
    gauss = binarity(rng.normal(size=codes.shape))
    assert tight["loglik"] > gauss["loglik"] + 1.0
    assert tight["sigma"] < 0.1 * gauss["sigma"]
    assert tight["peak_distance"] > 10 * gauss["peak_distance"]


def test_binarity_variance_floor_without_standardisation():
    # IB-scale latents: modes ±1e-4, spread 1e-7.  Raw units: reg_covar = 1e-6 swamps them.
    rng = _rng(18)
    z = 1e-4 * np.sign(rng.normal(size=(2000, 3))) + 1e-7 * rng.normal(size=(2000, 3))
    raw = binarity(z, standardize=False)
    np.testing.assert_allclose(raw["sigma_per_dim"], 1e-3, rtol=0.05)
    std = binarity(z)       # standardised: spread/scale = 1e-3, floor adds 1e-6 in variance
    np.testing.assert_allclose(std["sigma_per_dim"], math.sqrt(2e-6), rtol=0.05)
    assert std["peak_distance"] > 1000


# --------------------------------------------------------------------------- hypercube codes


def test_hypercube_code_recovers_planted_codes():
    rng = _rng(19)
    K, P = 12, 8
    while True:     # K distinct vertices, every dimension used by both signs
        bits = rng.choice(2**P, size=K, replace=False)
        planted = 2.0 * ((bits[:, None] >> np.arange(P)) & 1) - 1
        if np.all(np.abs(planted.sum(0)) < K):
            break
    y = np.repeat(np.arange(K), 80)
    z = 0.5 * planted[y] + 0.01 * rng.normal(size=(len(y), P)) + 0.1   # offset: midpoints ≠ 0
    out = hypercube_code(z, y)
    np.testing.assert_array_equal(out["codes"], (planted > 0).astype(int))
    assert out["code_vertices"] == K
    assert out["decode_accuracy"] == 1.0
    assert out["sample_code_agreement"] == 1.0
    np.testing.assert_array_equal(out["hamming"], (planted[:, None, :] != planted[None, :, :]).sum(-1))


def test_hypercube_code_shared_vertex_decodes_to_lowest_label():
    rng = _rng(20)
    planted = np.array([[1, 1], [1, -1], [-1, 1], [1, -1]])        # classes 1 and 3 share a vertex
    y = np.repeat(np.arange(4), 50)
    out = hypercube_code(planted[y] + 0.01 * rng.normal(size=(200, 2)), y)
    assert out["code_vertices"] == 3
    assert out["decode_accuracy"] == pytest.approx(0.75)
    assert out["sample_code_agreement"] == 1.0


# --------------------------------------------------------------------------- summary and boundary

SUMMARY_KEYS = {
    "sigma_w", "sigma_w_trace", "sigma_w_rel", "nc1", "nc1_per_dim", "equinorm", "equiangularity", "max_angle",
    "norm_coeff_var", "entropy", "entropy_rel", "binarity_loglik", "binarity_sigma", "binarity_peak_distance",
    "code_vertices", "code_decode_accuracy",
}


def _vertex_classes(rng, K, P, n_per, noise):
    """K classes around random hypercube vertices, a random classifier W and its logits."""
    y = np.repeat(np.arange(K), n_per)
    z = np.sign(rng.normal(size=(K, P)))[y] + noise * rng.normal(size=(len(y), P))
    W = rng.normal(size=(K, P))
    return z, y, W, z @ W.T


def test_geometry_summary_keys_and_values():
    z, y, W, logits = _vertex_classes(_rng(21), K=5, P=6, n_per=60, noise=0.05)
    full = geometry_summary(z, y, logits=logits, W=W, entropy_k=20)
    assert set(full) == SUMMARY_KEYS | {"nc3", "nc4"}
    for key, val in full.items():
        assert type(val) in (float, int), key
        assert math.isfinite(val), key
    assert full["sigma_w"] == pytest.approx(within_class_covariance(z, y)["class_mean_entries"], rel=1e-12)
    assert full["sigma_w_rel"] == pytest.approx(within_class_variance_share(z, y), rel=1e-12)
    assert full["entropy_rel"] == pytest.approx(kl_entropy(z, k=20, scale_free=True), rel=1e-12)
    nc = neural_collapse(z, y, W=W, logits=logits)
    assert all(full[k] == pytest.approx(v, rel=1e-12) for k, v in nc.items())
    bare = geometry_summary(z, y, entropy=False, binarity=False, code=False)
    assert set(bare) == SUMMARY_KEYS - {"entropy", "entropy_rel", "binarity_loglik", "binarity_sigma",
                                        "binarity_peak_distance", "code_vertices", "code_decode_accuracy"}
    few = slice(None, None, 25)                              # 12 samples, all classes
    small = geometry_summary(z[few], y[few], entropy_k=100, binarity=False, code=False)   # k → N − 1
    assert small["entropy"] == pytest.approx(kl_entropy(z[few], k=11), rel=1e-12)
    assert small["entropy_rel"] == pytest.approx(kl_entropy(z[few], k=11, scale_free=True), rel=1e-12)


def test_summary_keys_other_than_the_absolute_three_ignore_the_latent_scale():
    P = 6
    z, y, W, logits = _vertex_classes(_rng(35), K=4, P=P, n_per=40, noise=0.2)
    base = geometry_summary(z, y, logits=logits, W=W, entropy_k=10)
    for c in (1e-3, 1e3):
        scaled = geometry_summary(c * z, y, logits=logits, W=W, entropy_k=10)
        assert scaled["sigma_w"] == pytest.approx(c**2 * base["sigma_w"], rel=1e-9)
        assert scaled["sigma_w_trace"] == pytest.approx(c**2 * base["sigma_w_trace"], rel=1e-9)
        assert scaled["entropy"] == pytest.approx(base["entropy"] + P * math.log(c), rel=1e-9)
        for key in set(base) - {"sigma_w", "sigma_w_trace", "entropy"}:
            assert scaled[key] == pytest.approx(base[key], rel=1e-6, abs=1e-12), (key, c)


def test_torch_and_numpy_inputs_agree():
    z, y = _clustered(_rng(22))
    a = geometry_summary(z, y, entropy_k=10)
    b = geometry_summary(torch.from_numpy(z), torch.from_numpy(y))
    b_k10 = geometry_summary(torch.from_numpy(z), torch.from_numpy(y), entropy_k=10)
    assert a == b_k10
    assert set(a) == set(b)


@pytest.mark.parametrize("bad, match", [
    (dict(z=np.zeros(10)), "z must be a 2-D"),
    (dict(z=np.full((10, 2), np.nan)), "z contains NaN"),
    (dict(y=np.zeros(9, dtype=int)), "y must be 1-D"),
    (dict(y=np.zeros(10)), "y must hold integer"),
    (dict(W=np.zeros((3, 5))), "W must have shape"),
    (dict(logits=np.zeros((10, 1))), "labels must lie in"),
])
def test_inputs_are_validated_at_the_boundary(bad, match):
    args = dict(z=_rng(23).normal(size=(10, 2)), y=np.repeat([0, 1], 5), W=None, logits=None)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        neural_collapse(args["z"], args["y"], W=args["W"], logits=args["logits"])


@pytest.mark.parametrize("module", [collapse, entropy, hypercube, geometry], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
