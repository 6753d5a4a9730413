import json

import pytest
import torch

from conftest import tiny_config
from lpc import load_run
from lpc.cli import main
from lpc.data import load_data
from lpc.files import RunFileError
from lpc.train import train

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
