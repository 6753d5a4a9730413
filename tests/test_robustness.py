"""Tests of lpc.metrics.robustness against analytic linear cases and independent per-sample references."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lpc.metrics.robustness import (
    SUMMARY_KEYS,
    bisection_radius,
    deepfool,
    lipschitz_estimate,
    pgd_l2_radius,
    robustness_deepfool_score,
    robustness_summary,
    select_inputs,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and on a shared CPU a second OpenMP thread
    waiting for a busy core made these tests ~7x slower; the setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- models


class Linear(nn.Module):
    """f(x) = A x + b, returning (logits, x) like every lpc model."""

    def __init__(self, dim=20, classes=10, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(dim, classes).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(classes, dim, generator=g, dtype=torch.float64))
            self.lin.bias.copy_(torch.randn(classes, generator=g, dtype=torch.float64))

    def forward(self, x):
        return self.lin(x), x


class SmallCNN(nn.Module):
    """conv + BatchNorm + SiLU + linear head, returning (logits, z)."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 8 * 8, 16)
        self.head = nn.Linear(16, classes)
        with torch.no_grad():  # non-trivial running statistics, so eval-mode BN matters
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        h = self.pool(nn.functional.silu(self.bn(self.conv(x))))
        z = nn.functional.silu(self.fc(h.flatten(1)))
        return self.head(z), z


def linear_margins(model, x):
    """Analytic distances (f_y - f_k) / ||w_y - w_k|| to every class boundary, y = prediction."""
    A, b = model.lin.weight.detach(), model.lin.bias.detach()
    f = x @ A.T + b
    y = f.argmax(1)
    dist = (f.gather(1, y[:, None]) - f) / (A[y][:, None, :] - A[None]).norm(dim=2)
    dist[torch.arange(len(x)), y] = math.inf
    return f, y, dist


# --------------------------------------------------------------------------- per-sample reference


def reference_deepfool(model, image, num_classes=10, overshoot=0.02, max_iter=50):
    """The published algorithm (LTS4/DeepFool, Python/deepfool.py), one sample at a time."""
    f_image = model(image[None])[0].detach()[0]
    order = torch.argsort(f_image, descending=True)[:num_classes]
    label = order[0].item()
    r_tot = torch.zeros_like(image)
    pert_image = image.clone()
    loop_i, k_i = 0, label
    x = pert_image[None].clone().requires_grad_(True)
    fs = model(x)[0]
    while k_i == label and loop_i < max_iter:
        pert = math.inf
        grad_orig = torch.autograd.grad(fs[0, order[0]], x, retain_graph=True)[0]
        for k in range(1, len(order)):
            cur_grad = torch.autograd.grad(fs[0, order[k]], x, retain_graph=True)[0]
            w_k = cur_grad - grad_orig
            f_k = (fs[0, order[k]] - fs[0, order[0]]).item()
            pert_k = abs(f_k) / w_k.norm().item()
            if pert_k < pert:
                pert, w = pert_k, w_k
        r_i = (pert + 1e-4) * w / w.norm()
        r_tot = r_tot + r_i[0]
        pert_image = image + (1 + overshoot) * r_tot
        x = pert_image[None].clone().requires_grad_(True)
        fs = model(x)[0]
        k_i = fs.argmax().item()
        loop_i += 1
    return (1 + overshoot) * r_tot, loop_i, label, k_i


# --------------------------------------------------------------------------- DeepFool


@pytest.mark.parametrize("num_candidates", [10, 4])
def test_deepfool_linear_is_one_exact_step(num_candidates):
    torch.manual_seed(1)
    model = Linear()
    x = torch.randn(16, 20, dtype=torch.float64)
    res = deepfool(model, x, overshoot=0.02, num_candidates=num_candidates)
    f, y, dist = linear_margins(model, x)
    # restrict to the top-num_candidates classes of the original logits
    cand = f.topk(num_candidates, dim=1).indices
    expected = (dist.gather(1, cand[:, 1:]).min(1).values + 1e-4) * 1.02
    assert torch.equal(res.iterations, torch.ones(16, dtype=torch.long))
    assert res.flipped.all()
    assert torch.equal(res.original_label, y)
    torch.testing.assert_close(res.r.norm(dim=1), expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(res.relative_norm, expected / x.norm(dim=1), rtol=1e-4, atol=0)
    assert torch.equal(res.new_label, (x + res.r).matmul(model.lin.weight.T).add(model.lin.bias).argmax(1))


@pytest.mark.parametrize("dtype, weight_scale, overshoot", [
    (torch.float32, 1.0, 0.0),
    (torch.float64, 3.0, 0.02),  # float64: rounding cannot hide an algorithmic difference
    (torch.float64, 3.0, 0.0),
])
def test_deepfool_batched_matches_per_sample_reference_on_cnn(dtype, weight_scale, overshoot):
    torch.manual_seed(0)
    model = SmallCNN().to(dtype).eval()
    with torch.no_grad():  # larger weights make the net curved enough to need several steps
        model.conv.weight.mul_(weight_scale)
        model.fc.weight.mul_(weight_scale)
    x = torch.randn(16, 3, 16, 16, dtype=dtype)
    res = deepfool(model, x, overshoot=overshoot)
    assert res.iterations.max() > 1  # the multi-step path is exercised
    for i in range(len(x)):
        r, iters, label, new = reference_deepfool(model, x[i], overshoot=overshoot)
        assert res.iterations[i].item() == iters
        assert res.original_label[i].item() == label
        assert res.new_label[i].item() == new
        assert ((res.r[i] - r).norm() / r.norm()).item() < 1e-4
    assert res.flipped.all()


def test_deepfool_restores_modes_and_leaves_parameters_alone():
    torch.manual_seed(0)
    model = SmallCNN().train()
    model.bn.eval()  # a deliberately frozen submodule must stay frozen
    stats = model.bn.running_mean.clone()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():  # callers may hold no_grad; the attack needs input gradients
        deepfool(model, x)
        lipschitz_estimate(model, x, iters=2)
    assert model.training and model.conv.training and not model.bn.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model.bn.running_mean, stats)


def test_deepfool_accepts_plain_logit_modules():
    torch.manual_seed(0)
    tuple_model = Linear()
    plain = nn.Sequential(tuple_model.lin)
    x = torch.randn(5, 20, dtype=torch.float64)
    a, b = deepfool(tuple_model, x), deepfool(plain, x)
    assert torch.equal(a.r, b.r)


def test_deepfool_fewer_classes_than_candidates():
    torch.manual_seed(0)
    model = Linear(dim=6, classes=3)
    x = torch.randn(8, 6, dtype=torch.float64)
    res = deepfool(model, x, num_candidates=10)
    _, _, dist = linear_margins(model, x)
    assert res.flipped.all()
    torch.testing.assert_close(res.r.norm(dim=1), (dist.min(1).values + 1e-4) * 1.02, rtol=1e-4, atol=0)


class Constant(nn.Module):
    """Logits that do not depend on x: no gradient direction, nothing can flip."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([3.0, 1.0, 0.0]))

    def forward(self, x):
        return self.bias + 0.0 * x.sum(1, keepdim=True)


def test_zero_gradient_does_not_flip_or_produce_nan():
    x = torch.randn(4, 5)
    res = deepfool(Constant(), x)
    assert not res.flipped.any()
    assert torch.equal(res.r, torch.zeros_like(x))
    assert res.iterations.le(1).all()
    pgd = pgd_l2_radius(Constant(), x, search_steps=2, steps=3)
    assert not pgd.flipped.any() and torch.isinf(pgd.radius).all()
    assert torch.isfinite(lipschitz_estimate(Constant(), x, iters=3)).all()


def test_select_inputs_is_seeded_and_distinct():
    a, b = select_inputs(100, 1000, seed=3), select_inputs(100, 1000, seed=3)
    assert torch.equal(a, b)
    assert len(a.unique()) == 100 and a.min() >= 0 and a.max() < 1000
    assert not torch.equal(a, select_inputs(100, 1000, seed=4))
    assert len(select_inputs(100, 7, seed=0)) == 7


def test_deepfool_score_is_mean_relative_norm_of_selected_inputs():
    torch.manual_seed(0)
    model = Linear()
    x = torch.randn(50, 20, dtype=torch.float64)
    idx = select_inputs(10, 50, seed=1)
    expected = deepfool(model, x[idx]).relative_norm.mean().item()
    assert robustness_deepfool_score(model, x, n=10, seed=1) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- radii


def test_pgd_and_bisection_radii_bound_the_analytic_radius_on_a_linear_model():
    torch.manual_seed(2)
    model = Linear()
    x = torch.randn(16, 20, dtype=torch.float64)
    _, _, dist = linear_margins(model, x)
    true = dist.min(1).values  # over ALL classes

    for exhaustive in (False, True):
        pgd = pgd_l2_radius(model, x, exhaustive=exhaustive)
        assert pgd.flipped.all()
        assert (pgd.radius >= true * (1 - 1e-9)).all()
        assert (pgd.radius <= true * 1.05).all()

    df = deepfool(model, x)
    df_dir = df.r / df.r.norm(dim=1, keepdim=True)
    rand = torch.randn(16, 3, 20, dtype=torch.float64)
    bis = bisection_radius(model, x, torch.cat([rand, df_dir[:, None]], dim=1))
    assert (bis.radius >= true * (1 - 1e-9)).all()
    torch.testing.assert_close(bis.radius, true, rtol=1e-4, atol=0)
    # random directions alone only give an upper bound, along each ray exactly
    only_rand = bisection_radius(model, x, rand)
    assert (only_rand.radius >= true * (1 - 1e-9)).all()
    A = model.lin.weight.detach()
    f, y, _ = linear_margins(model, x)
    u = rand / rand.norm(dim=2, keepdim=True)
    # distance along ray u to boundary k: (f_y - f_k) / ((w_k - w_y) . u) where positive
    speed = torch.einsum("bdn,kn->bdk", u, A) - torch.einsum("bdn,bn->bd", u, A[y])[..., None]
    gap = (f.gather(1, y[:, None]) - f)[:, None, :]
    t = torch.where(speed > 0, gap / speed, torch.full_like(speed, math.inf))
    t[torch.arange(16), :, y] = math.inf
    ray = t.min(2).values.min(1).values
    finite = ray <= 4.0 * x.norm(dim=1)
    torch.testing.assert_close(only_rand.radius[finite], ray[finite], rtol=1e-4, atol=0)
    assert torch.isinf(only_rand.radius[~finite]).all()


def trained_mlp(seed=0, dim=20, classes=10, n=600):
    """A small MLP fitted to Gaussian blobs: curved boundaries at different distances, unlike the linear model."""
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(classes, dim, generator=g, dtype=torch.float64)
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, dim, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(dim, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, classes)).double()
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(mlp(x), y).backward()
        opt.step()
    return mlp.eval(), x[:40]


def test_pgd_radius_comes_with_a_flipping_perturbation_of_that_norm():
    torch.manual_seed(0)
    cnn = SmallCNN().eval()  # eval mode: the label of an input must not depend on the rest of the batch
    predict = {id(cnn): lambda x: cnn(x)[0].argmax(1)}
    for model, x in [trained_mlp(), (cnn, torch.randn(12, 3, 16, 16))]:
        label = predict.get(id(model), lambda x: model(x).argmax(1))
        for exhaustive in (False, True):
            res = pgd_l2_radius(model, x, steps=5, exhaustive=exhaustive)
            assert res.flipped.all()
            assert (label(x + res.perturbation) != label(x)).all()
            torch.testing.assert_close(res.perturbation.flatten(1).norm(dim=1), res.radius, rtol=1e-5, atol=0)


def test_pgd_default_search_agrees_with_the_exhaustive_search():
    """The default search (DeepFool start, Newton steps, targets settled one failure each) against the search that
    tries every target at every radius of a bisection: within 1% in the mean and on every input."""
    model, x = trained_mlp()
    exhaustive = pgd_l2_radius(model, x, exhaustive=True).radius
    default = pgd_l2_radius(model, x).radius
    assert default.mean().item() == pytest.approx(exhaustive.mean().item(), rel=0.01)
    torch.testing.assert_close(default, exhaustive, rtol=0.01, atol=0)
    # fewer steps per run cost little with the warm start: lpc train's settings stay close as well
    assert pgd_l2_radius(model, x, steps=5).radius.mean().item() == pytest.approx(exhaustive.mean().item(), rel=0.01)


def test_pgd_progress_callback_counts_rounds():
    model, x = trained_mlp()
    ticks = []
    pgd_l2_radius(model, x[:5], search_steps=6, callback=ticks.append)
    assert 1 <= len(ticks) <= 7 and all(t == 1 for t in ticks)
    with pytest.raises(ValueError, match="init"):
        pgd_l2_radius(model, x, init=torch.zeros_like(x), exhaustive=True)


def test_bisection_accepts_shared_directions():
    torch.manual_seed(0)
    model = Linear()
    x = torch.randn(4, 20, dtype=torch.float64)
    d = torch.randn(3, 20, dtype=torch.float64)
    shared = bisection_radius(model, x, d)
    per_input = bisection_radius(model, x, d.expand(4, 3, 20))
    assert torch.equal(shared.radius, per_input.radius)
    with pytest.raises(ValueError, match="zero vector"):
        bisection_radius(model, x, torch.zeros(1, 20, dtype=torch.float64))


# --------------------------------------------------------------------------- Lipschitz


def test_lipschitz_of_linear_model_is_largest_singular_value():
    model = Linear()
    x = torch.randn(6, 20, dtype=torch.float64)
    sigma = np.linalg.svd(model.lin.weight.detach().numpy(), compute_uv=False)[0]
    est = lipschitz_estimate(model, x, iters=50)
    np.testing.assert_allclose(est.numpy(), sigma, rtol=1e-3)


def test_lipschitz_of_mlp_matches_jacobian_spectral_norm():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(12, 32), nn.SiLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 5)).double()
    x = torch.randn(8, 12, dtype=torch.float64)
    est = lipschitz_estimate(mlp, x, iters=100)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(mlp, x[i])
        exact = torch.linalg.matrix_norm(jac, ord=2).item()
        assert est[i].item() == pytest.approx(exact, rel=1e-3)
        assert est[i].item() <= exact * (1 + 1e-9)  # power iteration approaches from below


# --------------------------------------------------------------------------- summary


def test_summary_keys_and_finite_values_on_a_tiny_model():
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randn(40, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a censored input is allowed here
        out = robustness_summary(model, x, n=8, pgd_search_steps=3, pgd_steps=5, lipschitz_iters=5)
    assert tuple(out) == SUMMARY_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert out["robustness_inputs"] == 8.0
    assert 0.0 <= out["deepfool_flip_rate"] <= 1.0
    assert out["lipschitz_max"] >= out["lipschitz_mean"] > 0
    assert out["robustness_deepfool"] == pytest.approx(
        robustness_deepfool_score(model, x, n=8), rel=1e-6)


def test_summary_censors_unflipped_inputs_and_reports_counts():
    x = torch.randn(5, 5)
    with pytest.warns(RuntimeWarning, match="no label change"):
        out = robustness_summary(Constant(), x, n=5, pgd_search_steps=1, pgd_steps=2,
                                 pgd_eps_high=2.0, bisection_max_scale=3.0, details=True)
    assert out["robustness_pgd_l2"] == pytest.approx(2.0)
    assert out["robustness_bisection"] == pytest.approx(3.0)
    assert out["pgd_unflipped"] == 5 and out["bisection_unflipped"] == 5
    assert out["deepfool_flip_rate"] == 0.0


def test_summary_runs_each_part_inside_a_progress_phase_that_reaches_its_total():
    import contextlib

    seen = {}

    @contextlib.contextmanager
    def phase(name, total):
        seen[name] = [0, total]
        yield lambda n: seen[name].__setitem__(0, seen[name][0] + n)

    model, x = trained_mlp()
    robustness_summary(model, x, n=10, pgd_steps=5, lipschitz_iters=5, progress=phase)
    assert list(seen) == ["DeepFool", "PGD-L2", "bisection", "Lipschitz"]
    assert all(done == total for done, total in seen.values()), seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_summary_runs_on_the_model_device():
    torch.manual_seed(0)
    cpu_model = SmallCNN()
    x = torch.randn(16, 3, 16, 16)
    gpu_model = SmallCNN().cuda()
    gpu_model.load_state_dict(cpu_model.state_dict())
    res = deepfool(gpu_model, x)  # CPU inputs go to the model's device
    assert res.r.is_cuda
    ref = deepfool(cpu_model, x)
    assert torch.equal(res.iterations.cpu(), ref.iterations)
    assert ((res.r.cpu() - ref.r).flatten(1).norm(dim=1) / ref.r.flatten(1).norm(dim=1)).max() < 1e-3
    out = robustness_summary(gpu_model, x, n=8)
    assert tuple(out) == SUMMARY_KEYS and all(math.isfinite(v) for v in out.values())
