"""lpc: latent point collapse for PyTorch classifiers — the IB layer, its ablation heads, training and metrics."""
__version__ = "0.1.0"

from .config import Config, ConfigError, load_config  # noqa: E402
from .heads import HEADS, Head, IBHead, build_head, classifier_lr_scale  # noqa: E402
from .losses import AutoGamma, GammaSchedule, compression_loss  # noqa: E402
from .model import Classifier, build_model  # noqa: E402

__all__ = ["Config", "ConfigError", "load_config", "HEADS", "Head", "IBHead", "build_head", "classifier_lr_scale",
           "GammaSchedule", "AutoGamma", "compression_loss", "Classifier", "build_model", "train", "load_run"]


def train(config, out_dir=None, **kwargs):
    """Trains one run (see :func:`lpc.train.train`); imported lazily to keep ``import lpc`` light."""
    from .train import train as _train
    return _train(config, out_dir, **kwargs)


def load_run(run_dir, **kwargs):
    """The trained model (eval mode) and resolved config of a run folder; ``raw_inputs=True``: the model with its
    input normalisation in front (see :func:`lpc.runs.load_run`)."""
    from .runs import load_run as _load_run
    return _load_run(run_dir, **kwargs)
