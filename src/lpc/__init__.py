"""lpc: latent point collapse for PyTorch classifiers — the IB layer and its ablation heads (attached to any model), the
γ controllers and IBLoss, training and metrics."""
__version__ = "0.1.0"

from .attachment import attach, latents, param_groups  # noqa: E402
from .config import Config, ConfigError, load_config  # noqa: E402
from .heads import HEADS, Head, IBHead, auto_width, build_head, classifier_lr_scale  # noqa: E402
from .losses import AutoGamma, GammaSchedule, IBLoss, compression_loss  # noqa: E402
from .model import Classifier, build_model  # noqa: E402

__all__ = ["attach", "latents", "param_groups", "IBLoss", "AutoGamma", "GammaSchedule", "compression_loss",
           "HEADS", "Head", "IBHead", "auto_width", "build_head", "classifier_lr_scale",
           "Config", "ConfigError", "load_config", "Classifier", "build_model", "train", "load_run"]


def train(config, out_dir=None, **kwargs):
    """Trains one run (see :func:`lpc.trainer.train`); imported lazily to keep ``import lpc`` light."""
    from .trainer import train as _train
    return _train(config, out_dir, **kwargs)


def load_run(run_dir, **kwargs):
    """The trained model (eval mode) and resolved config of a run folder; ``raw_inputs=True``: the model with its
    input normalisation in front (see :func:`lpc.runs.load_run`)."""
    from .runs import load_run as _load_run
    return _load_run(run_dir, **kwargs)
