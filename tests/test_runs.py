import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from lpc import load_run
from lpc.cli import main
from lpc.config import DataConfig
from lpc.data import load_data
from lpc.files import RunFileError
from lpc.trainer import train

METRIC_KEYS = {"robustness_deepfool", "deepfool_flip_rate", "robustness_pgd_l2", "robustness_bisection",
               "auroc_mahalanobis", "auroc_odin", "auroc_msp", "ood_auroc_mahalanobis", "ood_auroc_odin",
               "ood_auroc_msp", "lipschitz_mean", "lipschitz_max", "sigma_w_train", "nc1_test", "entropy_train",
               "binarity_loglik_train", "code_vertices_test", "code_decode_accuracy_test"}


@pytest.fixture
def finished_run(tmp_path, tiny_npz):
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 3, "eval.geometry": True, "eval.entropy_k": 5,
                            "eval.robustness": True, "eval.reliability": True, "eval.robustness_inputs": 10,
                            "eval.pgd_steps": 5, "eval.pgd_search_steps": 4})
    summary = train(config, tmp_path / "run", progress=False)
    return tmp_path / "run", config, summary


def test_summary_carries_every_metric(finished_run):
    _, _, summary = finished_run
    assert METRIC_KEYS <= set(summary)
    assert summary["robustness_inputs"] == 10
    for key in METRIC_KEYS:
        assert summary[key] is not None, key


def test_load_run_gives_the_trained_model_in_eval_mode(finished_run):
    run_dir, config, summary = finished_run
    model, loaded = load_run(run_dir)
    assert not model.training and loaded == config
    data = load_data(config.data)
    with torch.no_grad():
        logits, z = model(data.normalize(data.x_test))
    assert (logits.argmax(1) == data.y_test).double().mean().item() == pytest.approx(summary["test_accuracy"])
    assert z.shape == (len(data.x_test), config.model.widths.intermediate)


def test_the_run_folder_records_its_normalization_and_feeds_raw_inputs(finished_run, tiny_npz):
    run_dir, config, summary = finished_run
    data = load_data(config.data)
    x_train = data.x_train.double().numpy()  # the statistics computed independently, per feature
    recorded = json.loads((run_dir / "summary.json").read_text())["normalization"]
    assert recorded["mean"] == pytest.approx(x_train.mean(0).tolist(), rel=1e-5, abs=1e-6)
    assert recorded["std"] == pytest.approx(x_train.std(0, ddof=1).tolist(), rel=1e-5)
    tiny_npz.unlink()  # the run folder stands alone: no training data needed from here on
    model, loaded = load_run(run_dir, raw_inputs=True)
    assert not model.training and loaded == config
    with torch.no_grad():
        logits, z = model(data.x_test)  # raw inputs
        expected, _ = load_run(run_dir)[0](data.normalize(data.x_test))
    assert torch.equal(logits, expected)
    assert (logits.argmax(1) == data.y_test).double().mean().item() == pytest.approx(summary["test_accuracy"])


def test_analyze_on_other_data_normalizes_with_the_runs_statistics(finished_run, tiny_npz, tmp_path, capsys):
    run_dir, config, summary = finished_run
    with np.load(tiny_npz) as stored:
        arrays = dict(stored)
    arrays["x_train"] = arrays["x_train"] * 10 + 50  # other statistics; the test inputs are the run's own
    np.savez(tmp_path / "other.npz", **arrays)
    assert main(["analyze", str(run_dir), "--data", str(tmp_path / "other.npz"), "--device", "cpu"]) == 0
    written = json.loads((run_dir / "analysis.json").read_text())
    assert written["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    # with the other data's own statistics the same test inputs would be mostly misclassified
    other = load_data(DataConfig(name="npz", path=str(tmp_path / "other.npz")))
    model, _ = load_run(run_dir)
    with torch.no_grad():
        logits, _ = model(other.normalize(other.x_test))
    assert (logits.argmax(1) == other.y_test).double().mean().item() < summary["test_accuracy"] - 0.2


def test_the_pipeline_and_the_public_ood_auroc_share_one_mahalanobis_convention(finished_run):
    from lpc.metrics.reliability import ood_auroc
    from lpc.evaluation import ood_inputs, predict

    run_dir, config, summary = finished_run
    model, _ = load_run(run_dir)
    data = load_data(config.data)
    logits_train, z_train = predict(model, data, "train")
    public = ood_auroc(model, data.normalize(data.x_test), ood_inputs(data, config.seed), z_train=z_train,
                       y_train=data.y_train, logits_train=logits_train, score="mahalanobis")
    assert summary["ood_auroc_mahalanobis"] == pytest.approx(public["ood_auroc_mahalanobis"], abs=1e-9)


def test_a_run_fits_its_class_gaussians_once(tmp_path, tiny_npz, monkeypatch):
    import lpc.metrics.reliability as reliability

    fits, original = [], reliability.fit_class_gaussians
    monkeypatch.setattr(reliability, "fit_class_gaussians", lambda *a, **k: fits.append(1) or original(*a, **k))
    config = tiny_config(**{"data.path": str(tiny_npz), "optim.epochs": 1, "eval.reliability": True})
    summary = train(config, tmp_path / "run", progress=False)
    assert summary["ood_auroc_mahalanobis"] is not None and summary["auroc_mahalanobis"] is not None
    assert len(fits) == 1


def test_analyze_recomputes_the_same_numbers(finished_run, capsys):
    run_dir, _, summary = finished_run
    assert main(["analyze", str(run_dir), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((run_dir / "analysis.json").read_text())
    assert printed == written
    for key in ("test_accuracy", "sigma_w_train", "nc1_test", "auroc_mahalanobis", "ood_auroc_msp",
                "robustness_deepfool", "lipschitz_max"):
        assert written[key] == pytest.approx(summary[key], rel=1e-5), key


def test_load_run_reports_broken_files_by_path(finished_run, capsys):
    run_dir, _, _ = finished_run
    (run_dir / "model.pt").write_bytes((run_dir / "model.pt").read_bytes()[:100])  # truncated
    with pytest.raises(RunFileError, match="model.pt"):
        load_run(run_dir)
    assert main(["analyze", str(run_dir)]) == 2
    assert "model.pt" in capsys.readouterr().err
    (run_dir / "summary.json").write_text('{"head": "ib", ')
    with pytest.raises(RunFileError, match="summary.json: truncated or corrupt JSON"):
        load_run(run_dir)


class Payload:  # an arbitrary class: loading it would need code execution
    def __init__(self):
        self.value = 1


def test_checkpoints_needing_arbitrary_code_are_refused(tmp_path):
    from lpc.files import load_torch
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(RunFileError, match="evil.pt: cannot be loaded safely"):
        load_torch(path)


def test_plot_latents_draws_a_png(finished_run, capsys):
    run_dir, _, _ = finished_run
    assert main(["plot", "latents", str(run_dir)]) == 0
    png = run_dir / "latents.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert main(["plot", "latents", str(run_dir / "nowhere")]) == 2
    assert "latents.npz: file not found" in capsys.readouterr().err
