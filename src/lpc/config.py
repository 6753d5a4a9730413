"""Typed run configuration: dataclasses with the paper's defaults, strict YAML load/save and overrides."""
from __future__ import annotations

import dataclasses
import difflib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from .files import atomic_write_bytes


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message names the field and the value."""


@dataclass
class DataConfig:
    name: str = "mnist"  # mnist (embedded) | npz | imagefolder | cifar10 | cifar100 | svhn
    path: str | None = None  # file or directory for npz / imagefolder / torchvision roots
    val_fraction: float = 0.1  # carved from train (stratified, split_seed) when the data has no validation set
    split_seed: int = 0  # fixed across runs so that every run of a study validates on the same images
    flip: bool = True  # random horizontal flip (switch off for digits)
    crop_padding: int = 4  # random crop after padding by this many pixels; 0 disables
    pad_value: str = "zero"  # zero: pad raw black pixels (torchvision); mean: pad normalised zeros (authors' code)
    noise_std: float = 0.01  # Gaussian noise added to the normalised input


@dataclass
class WidthsConfig:
    # auto follows the data (lpc.heads.auto_width); the paper configs keep the paper's fixed widths
    intermediate: int | str = "auto"  # IB, LIN PEN, NONLIN PEN, NONLIN PEN + L1 | auto: 2^(ceil(log2 K) - 1)
    wide: int | str = "auto"  # WIDE IB | auto: the backbone's feature width, as the paper's WIDE IB
    narrow: int | str = "auto"  # NARROW IB | auto: ceil(log2 K), the fewest nodes that give each class a vertex


@dataclass
class ModelConfig:
    backbone: str = "resnet18"  # mlp | cnn | resnet18 | resnet50
    head: str = "ib"  # one of lpc.HEADS
    widths: WidthsConfig = field(default_factory=WidthsConfig)
    mlp_hidden: list[int] = field(default_factory=lambda: [512, 512])  # only for backbone: mlp
    dropout: float = 0.5  # NO PEN + dropout (Appendix C)
    l1_weight: float = 1e-4  # NONLIN PEN + L1 (Appendix C)
    l1_on: str = "weights"  # weights (Section 3) | activations


@dataclass
class OptimConfig:
    lr: float = 1e-4  # the run's learning rate; a study sweeps `lrs`
    lrs: list[float] = field(default_factory=lambda: [1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3])  # 1e-4 * 2^k, k=0..4
    weight_decay: float = 5e-4  # AdamW; the paper's text says 0.5e-4, the authors' configs 5e-4
    batch_size: int = 128
    epochs: int = 800
    lr_decay_start: int = 250  # epoch of the first halving
    lr_decay_every: int = 50  # epochs between halvings
    lr_decay_factor: float = 0.5
    classifier_lr_mult: float = 1.0  # the final classifier's lr = lr * this, and it never decays
    classifier_weight_decay: float | None = None  # the final classifier's AdamW weight decay (None: weight_decay)
    classifier_lr_scaling: str = "none"  # none | fan_in: the classifier's lr also × sqrt(backbone width / its fan-in)


@dataclass
class GammaConfig:
    schedule: str = "paper"  # paper: Appendix C, per epoch | auto: feedback on training confidence (lpc.AutoGamma)
    init: float = 1e-2  # paper: γ in the first epoch (Appendix C)
    factor: float = 1.05  # paper: γ_step, γ is multiplied by this every `every` epochs
    max: float = 1e6  # γ_max; auto: a cap only
    every: int = 1  # paper: epochs between multiplications
    floor: float = 0.1  # auto: γ's lower bound and start (AutoGamma's default; the paper's init 1e-2 is too weak there)
    speed: float = 14.0  # auto: decades γ can climb over the run at full speed (14: from 0.1 to 1e6 in half the run)
    target: float = 0.9  # auto: set point of the training batches' mean true-class probability (AutoGamma's default)
    width: float = 0.05  # auto: deviation from the target (in probability) at which γ moves at ~3/4 speed
    guard: float = 2.0  # auto: a validation accuracy this many standard errors below its best caps γ a decade lower
    accuracy: float = 0.99  # auto: below this training-batch accuracy γ backs off whatever the confidence (0: no gate)
    reduction: str = "sum"  # sum: batch mean of ||z||^2 (Eq. 3) | mean: also divided by the latent width
    ramp: float | None = None  # deprecated (lpc 0.1): read as speed = log10(max / floor) / ramp, then dropped

    def __post_init__(self):
        # a config that sets ramp was written for lpc 0.1, where init was also the auto schedule's floor: it is
        # read as it was meant, so that its runs' folders still match the same config written today
        if self.ramp is None:
            return
        if self.schedule != "auto":
            warnings.warn("gamma.ramp is deprecated (and meant nothing for the paper schedule): ignored",
                          FutureWarning, stacklevel=2)
            self.ramp = None
            return
        if self.floor == GammaConfig.floor:  # not set: lpc 0.1 had no floor
            warnings.warn(f"gamma.init of an lpc 0.1 auto config was γ's floor: read as gamma.floor = {self.init!r}; "
                          "write gamma.floor (gamma.init is the paper schedule's start only)", FutureWarning,
                          stacklevel=2)
            self.floor, self.init = self.init, GammaConfig.init
        if self.ramp > 0 and self.max > self.floor > 0:
            speed = math.log10(self.max / self.floor) / self.ramp
            warnings.warn(f"gamma.ramp is deprecated: read as gamma.speed = log10(max / floor) / ramp = {speed:.6g}; "
                          "write gamma.speed", FutureWarning, stacklevel=2)
            self.speed, self.ramp = speed, None


@dataclass
class EvalConfig:
    log_every: int = 50  # epochs between evaluations (the last epoch is always evaluated)
    geometry: bool = True  # Σ_W, NC1-4, norm CoV, binarity and codes at every evaluation
    entropy: bool = True  # Kozachenko-Leonenko entropy (the costliest geometry metric)
    entropy_k: int = 100  # neighbours for the entropy (Table 1 uses 100)
    geometry_max_samples: int = 10000  # evaluate geometry on at most this many (seeded) samples per split
    reliability: bool = True  # final misclassification and OOD AUROCs
    odin_temperature: float = 100.0
    robustness: bool = True  # final DeepFool, PGD-L2, bisection and Lipschitz scores
    robustness_inputs: int = 100  # random test inputs (Table 2 uses 100)
    deepfool_overshoot: float = 0.02
    deepfool_max_iter: int = 50
    pgd_steps: int = 5  # PGD-L2 steps per radius tried (warm-started from DeepFool and the best flip so far)
    pgd_restarts: int = 1
    pgd_search_steps: int = 10  # rounds of the radius search per input
    pgd_per_round: int = 2  # target classes attacked per input per round (a ResNet-18 on a CPU: ~2.5 min for 100 inputs)
    save_latents: bool = True  # write latents.npz (final train/test z, labels) for plots


@dataclass
class RuntimeConfig:
    """How a run executes, not what it computes (beyond float rounding): precision, compilation, checkpoints."""

    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere | bf16 | fp32 (head and losses stay fp32)
    compile: bool | str = "auto"  # torch.compile the training step: auto (on for CUDA, off on CPU) | true | false
    # seconds of training after which the end of the next epoch also writes checkpoint.pt (besides every
    # evaluation), so a killed run loses minutes, not up to eval.log_every epochs; 0: at the end of every epoch
    checkpoint_seconds: float = 300.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gamma: GammaConfig = field(default_factory=GammaConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Writes the YAML atomically: a run killed meanwhile leaves the old file or the new one, never half."""
        yaml = _yaml("writing a YAML config")
        atomic_write_bytes(path, yaml.safe_dump(self.to_dict(), sort_keys=False).encode())


def _build(cls, values: dict[str, Any], prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{where}'{hint}")
        kwargs[key] = _coerce(hints[key], value, where)
    return cls(**kwargs)


def _coerce(kind, value, where: str):
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where + ".")
    origin = get_origin(kind)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = get_args(kind)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    args = get_args(kind)
    if type(None) in args:  # Optional[X]
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind in (int, float):
        # YAML reads 1e-4 as a string; numbers written either way are accepted, NaN and Inf are not (.nan, .inf)
        try:
            if kind is int and (isinstance(value, bool) or float(value) != int(float(value))):
                raise ValueError
            number = float(value) if kind is float else int(float(value))
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def config_from_dict(values: dict[str, Any]) -> Config:
    """Builds a :class:`Config` from nested mappings; unknown keys and wrong types raise :class:`ConfigError`."""
    config = _build(Config, values or {}, "")
    validate(config)
    return config


def _yaml(feature: str):
    # imported here, not at the top: `import lpc` must work with torch and numpy alone
    from ._extras import require
    return require("yaml", feature)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    yaml = _yaml("reading a YAML config")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    return config_from_dict(values or {})


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Returns a new config with dotted keys (``optim.lr``) replaced; values are coerced and validated."""
    values = config.to_dict()
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key '{dotted}'")
            node = node[part]
        if leaf not in node:
            close = difflib.get_close_matches(leaf, list(node), n=1)
            hint = f" (did you mean '{'.'.join(parents + [close[0]])}'?)" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{hint}")
        node[leaf] = value
    return config_from_dict(values)


def parse_override(text: str) -> tuple[str, Any]:
    """Parses ``key.path=value`` with the value read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.path=value")
    key, raw = text.split("=", 1)
    return key.strip(), _yaml("parsing --set values").safe_load(raw)


def check_choice(where: str, value: str, allowed) -> None:
    """Raises ConfigError when ``value`` is not one of ``allowed``, suggesting the closest name."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: unknown value '{value}'{hint}; choose from {', '.join(allowed)}")


def validate(config: Config) -> None:
    """Checks values that types alone cannot; raises ConfigError naming the field and the value.

    Head and backbone names are checked by their registries when the model is built (before any
    file is written), so that this module stays free of model imports.
    """

    def positive(where: str, value: float) -> None:
        if not value > 0:
            raise ConfigError(f"{where} must be positive, got {value!r}")

    choices = {
        "model.l1_on": (config.model.l1_on, ("weights", "activations")),
        "gamma.reduction": (config.gamma.reduction, ("sum", "mean")),
        "gamma.schedule": (config.gamma.schedule, ("paper", "auto")),
        "data.pad_value": (config.data.pad_value, ("zero", "mean")),
        "data.name": (config.data.name, ("mnist", "npz", "imagefolder", "cifar10", "cifar100", "svhn")),
    }
    for where, (value, allowed) in choices.items():
        check_choice(where, value, allowed)
    check_choice("runtime.precision", config.runtime.precision, ("auto", "bf16", "fp32"))
    if config.runtime.compile not in ("auto", True, False):
        raise ConfigError(f"runtime.compile: expected auto, true or false, got {config.runtime.compile!r}")
    if not config.runtime.checkpoint_seconds >= 0:
        raise ConfigError(f"runtime.checkpoint_seconds must be >= 0, got {config.runtime.checkpoint_seconds!r}")
    widths = config.model.widths
    for name in ("intermediate", "wide", "narrow"):
        value = getattr(widths, name)
        if value == "auto":
            continue  # resolved from the number of classes (wide: the backbone's width) when the model is built
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.widths.{name} must be a positive integer or auto, got {value!r}")
    if isinstance(widths.narrow, int) and isinstance(widths.wide, int) and widths.narrow > widths.wide:
        raise ConfigError(f"model.widths.narrow ({widths.narrow}) is larger than model.widths.wide ({widths.wide})")
    positive("optim.lr", config.optim.lr)
    for i, lr in enumerate(config.optim.lrs):
        positive(f"optim.lrs[{i}]", lr)
    positive("optim.classifier_lr_mult", config.optim.classifier_lr_mult)
    check_choice("optim.classifier_lr_scaling", config.optim.classifier_lr_scaling, ("none", "fan_in"))
    positive("optim.lr_decay_factor", config.optim.lr_decay_factor)
    positive("optim.lr_decay_every", config.optim.lr_decay_every)
    g = config.gamma
    for name in ("init", "factor", "max", "every", "floor", "speed", "width"):
        positive(f"gamma.{name}", getattr(g, name))
    if g.ramp is not None:  # left set only where it could not be read as a speed
        raise ConfigError(f"gamma.ramp is deprecated; set gamma.speed instead (got ramp={g.ramp!r} with "
                          f"floor={g.floor!r}, max={g.max!r})")
    if not 0 <= config.gamma.accuracy <= 1:
        raise ConfigError(f"gamma.accuracy must be in [0, 1], got {config.gamma.accuracy!r}")
    if not 0 < config.gamma.target < 1:
        raise ConfigError(f"gamma.target must be in (0, 1), got {config.gamma.target!r}")
    start = "floor" if g.schedule == "auto" else "init"
    if g.max < getattr(g, start):
        raise ConfigError(f"gamma.max ({g.max!r}) is below gamma.{start} ({getattr(g, start)!r})")
    positive("eval.log_every", config.eval.log_every)
    positive("eval.odin_temperature", config.eval.odin_temperature)
    positive("eval.pgd_per_round", config.eval.pgd_per_round)
    if config.optim.epochs < 1:
        raise ConfigError(f"optim.epochs must be at least 1, got {config.optim.epochs!r}")
    if config.optim.batch_size < 1:
        raise ConfigError(f"optim.batch_size must be at least 1, got {config.optim.batch_size!r}")
    for name in ("weight_decay", "classifier_weight_decay"):
        value = getattr(config.optim, name)
        if value is not None and value < 0:
            raise ConfigError(f"optim.{name} must be >= 0, got {value!r}")
    if not 0 <= config.model.dropout < 1:
        raise ConfigError(f"model.dropout must be in [0, 1), got {config.model.dropout!r}")
    if config.model.l1_weight < 0:
        raise ConfigError(f"model.l1_weight must be >= 0, got {config.model.l1_weight!r}")
    if not 0 < config.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {config.data.val_fraction!r}")
    if config.data.crop_padding < 0 or config.data.noise_std < 0:
        raise ConfigError("data.crop_padding and data.noise_std must be >= 0, got "
                          f"{config.data.crop_padding!r} and {config.data.noise_std!r}")
    if config.data.name in ("npz", "imagefolder") and not config.data.path:
        raise ConfigError(f"data.path is required for data.name '{config.data.name}'")
