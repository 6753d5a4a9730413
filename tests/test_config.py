import warnings
from pathlib import Path

import pytest
import yaml

from lpc.config import (Config, ConfigError, apply_overrides, config_from_dict, load_config, parse_override)
from lpc.model import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Appendix C, written out independently of the YAML files
PAPER = {
    "svhn": dict(backbone="resnet18", gamma_factor=1.03, gamma_max=1e5, widths=(8, 512, 6), features=512, classes=10),
    "cifar10": dict(backbone="resnet18", gamma_factor=1.05, gamma_max=1e6, widths=(8, 512, 4), features=512, classes=10),
    "cifar100": dict(backbone="resnet50", gamma_factor=1.05, gamma_max=1e6, widths=(64, 2048, 8), features=2048, classes=100),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_carry_appendix_c(name):
    c, paper = load_config(CONFIGS / f"{name}.yaml"), PAPER[name]
    assert c.data.name == name
    assert c.model.backbone == paper["backbone"]
    assert (c.model.widths.intermediate, c.model.widths.wide, c.model.widths.narrow) == paper["widths"]
    assert c.optim.batch_size == 128 and c.optim.epochs == 800 and c.eval.log_every == 50
    assert c.gamma.init == 1e-2 and c.gamma.factor == paper["gamma_factor"] and c.gamma.max == paper["gamma_max"]
    assert c.optim.lrs == pytest.approx([1e-4 * 2 ** k for k in range(5)])
    assert (c.optim.lr_decay_start, c.optim.lr_decay_every, c.optim.lr_decay_factor) == (250, 50, 0.5)
    assert c.optim.classifier_lr_mult == 1.0 and c.optim.classifier_lr_scaling == "none"
    assert c.data.flip is True and c.data.crop_padding == 4 and c.data.noise_std == 0.01
    assert c.model.dropout == 0.5 and c.model.l1_weight == 1e-4
    assert c.eval.robustness_inputs == 100 and c.eval.entropy_k == 100 and c.eval.odin_temperature == 100
    model = build_model(c, (3, 32, 32), paper["classes"])
    assert model.backbone.num_features == paper["features"]
    assert model.head.classifier.out_features == paper["classes"]
    assert model.head.latent_dim == paper["widths"][0]


def test_mnist_config_builds_and_documents_each_change():
    text = (CONFIGS / "mnist.yaml").read_text()
    c = load_config(CONFIGS / "mnist.yaml")
    assert c.data.name == "mnist" and c.data.flip is False
    for key in ("epochs:", "factor:", "max:", "init:", "floor:", "speed:", "classifier_lr_mult:", "classifier_lr_scaling:",
                "backbone:"):
        line = next(l for l in text.splitlines() if l.strip().startswith(key))
        assert "#" in line, f"mnist.yaml should say why '{key}' differs from the paper"


def test_defaults_are_the_papers():
    c = Config()
    assert c.gamma.init == 1e-2 and c.model.dropout == 0.5 and c.model.l1_weight == 1e-4
    assert c.optim.batch_size == 128 and c.eval.odin_temperature == 100.0


def test_round_trip(tmp_path):
    c = load_config(CONFIGS / "cifar10.yaml")
    c.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == c


def test_save_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("partial: [")
    before = path.stat().st_ino
    Config().save(path)
    # a new file renamed over the old one (a direct write would keep the inode), and no temporary left behind
    assert path.stat().st_ino != before and load_config(path) == Config()
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize("values,message", [
    ({"optim": {"lrr": 1}}, "unknown config key 'optim.lrr' \\(did you mean 'optim.lr'\\?\\)"),
    ({"modle": {}}, "did you mean 'model'"),
    ({"optim": {"lr": -1}}, "optim.lr must be positive, got -1"),
    ({"optim": {"lr": "fast"}}, "optim.lr: expected float"),
    ({"optim": {"epochs": 0}}, "optim.epochs must be at least 1"),
    ({"gamma": {"factor": 0}}, "gamma.factor must be positive"),
    ({"gamma": {"max": -5}}, "gamma.max must be positive"),
    ({"model": {"widths": {"narrow": 600, "wide": 512}}}, "narrow \\(600\\) is larger than model.widths.wide \\(512\\)"),
    ({"model": {"widths": {"intermediate": 0}}}, "model.widths.intermediate must be a positive integer"),
    ({"model": {"l1_on": "bias"}}, "model.l1_on: unknown value 'bias'"),
    ({"gamma": {"reduction": "summ"}}, "did you mean 'sum'"),
    ({"eval": {"geometry": "yes"}}, "eval.geometry: expected true or false"),
    ({"data": {"name": "npz"}}, "data.path is required"),
    ({"optim": {"lr": float("nan")}}, "optim.lr: expected a finite number, got nan"),
    ({"gamma": {"max": float("inf")}}, "gamma.max: expected a finite number, got inf"),
    ({"optim": {"epochs": float("inf")}}, "optim.epochs: expected int, got inf"),
    ({"runtime": {"checkpoint_seconds": -1}}, "runtime.checkpoint_seconds must be >= 0, got -1"),
    ({"gamma": {"floor": 0}}, "gamma.floor must be positive, got 0"),
    ({"gamma": {"speed": -1}}, "gamma.speed must be positive, got -1"),
    ({"gamma": {"schedule": "auto", "floor": 2.0, "max": 1.0}}, "gamma.max \\(1.0\\) is below gamma.floor \\(2.0\\)"),
    ({"gamma": {"schedule": "paper", "init": 2.0, "max": 1.0}}, "gamma.max \\(1.0\\) is below gamma.init \\(2.0\\)"),
])
def test_bad_values_name_field_and_value(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_overrides_are_strict_and_typed():
    c = apply_overrides(Config(), {"optim.lr": "2e-3", "gamma.max": 1e4, "model.head": "no_pen"})
    assert c.optim.lr == 2e-3 and c.gamma.max == 1e4 and c.model.head == "no_pen"
    with pytest.raises(ConfigError, match="did you mean 'gamma.factor'"):
        apply_overrides(Config(), {"gamma.factr": 2})
    key, value = parse_override("optim.lrs=[1e-3, 2e-3]")
    assert apply_overrides(Config(), {key: value}).optim.lrs == [1e-3, 2e-3]
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("nonsense")


def test_yaml_scientific_strings_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lr": "1e-4"}}))  # YAML 1.1 reads 1e-4 as a string
    assert load_config(path).optim.lr == 1e-4


def test_the_auto_and_paper_schedules_start_from_their_own_settings():
    c = load_config(CONFIGS / "mnist.yaml")
    # the numbers lpc 0.1's mnist.yaml resolved to (init 0.1 as the floor, ramp 0.5 from 0.1 to 1e6): 14 decades
    assert (c.gamma.schedule, c.gamma.floor, c.gamma.speed, c.gamma.max) == ("auto", 0.1, 14.0, 1e6)
    paper = load_config(CONFIGS / "cifar10.yaml")
    auto = apply_overrides(paper, {"gamma.schedule": "auto"})
    assert (auto.gamma.floor, auto.gamma.speed, auto.gamma.init) == (0.1, 14.0, 1e-2)  # not the paper's 0.01 start
    assert Config().gamma.ramp is None  # deprecated: read once, then gone


LPC01_AUTO = {"schedule": "auto", "init": 0.1, "factor": 1.35, "max": 1.0e6, "every": 1, "target": 0.3, "width": 0.05,
              "ramp": 0.5, "accuracy": 0.99, "reduction": "sum"}  # lpc 0.1's configs/mnist.yaml, as runs saved it


def test_lpc_0_1_configs_still_mean_what_they_meant():
    with pytest.warns(FutureWarning, match="gamma.ramp is deprecated"):
        old = config_from_dict({"gamma": LPC01_AUTO})
    assert (old.gamma.floor, old.gamma.init, old.gamma.ramp) == (0.1, 1e-2, None)  # lpc 0.1's init was the floor
    assert old.gamma.speed == 14.0  # log10(1e6 / 0.1) / 0.5 exactly: the same γ as before
    demo = apply_overrides(load_config(CONFIGS / "mnist.yaml"), {"gamma.target": 0.3})  # make demo's set point
    assert old.gamma == demo.gamma  # so its run folders match make demo's config (the default set point is now 0.9)
    with pytest.warns(FutureWarning, match="floor = 0.01"):
        low = config_from_dict({"gamma": {**LPC01_AUTO, "init": 0.01, "ramp": 0.25}})
    assert low.gamma.floor == 0.01 and low.gamma.speed == pytest.approx(8 / 0.25)
    with pytest.warns(FutureWarning, match="meant nothing"):
        paper = config_from_dict({"gamma": {"schedule": "paper", "init": 0.02, "max": 1e5, "ramp": 0.5}})
    assert (paper.gamma.init, paper.gamma.floor, paper.gamma.speed, paper.gamma.ramp) == (0.02, 0.1, 14.0, None)
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match="set gamma.speed instead"):
        config_from_dict({"gamma": {**LPC01_AUTO, "ramp": -1}})


def test_a_converted_config_saves_without_ramp(tmp_path):
    with pytest.warns(FutureWarning):
        old = config_from_dict({"gamma": {**LPC01_AUTO, "ramp": 0.25}})
    old.save(tmp_path / "c.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read back: nothing deprecated left in it
        assert load_config(tmp_path / "c.yaml") == old
