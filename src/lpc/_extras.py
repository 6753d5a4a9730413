"""Which optional extra provides each harness dependency, and the one-line error when it is missing.

The core (``lpc``, ``lpc.heads``, ``lpc.losses``, ``lpc.model``, ``lpc.metrics``)
needs only torch and numpy.  The command line, data loading, studies, reports and
plots need more; those imports go through :func:`require`, so
a core-only install fails with one line that names the extra to install instead
of a traceback that ends in ``No module named 'yaml'``.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtra", "extra_of", "require", "check", "message"]

# top-level module -> (extra that provides it, distribution name pip knows it by)
EXTRAS: dict[str, tuple[str, str]] = {
    "yaml": ("experiments", "PyYAML"),
    "scipy": ("experiments", "scipy"),
    "sklearn": ("experiments", "scikit-learn"),
    "matplotlib": ("experiments", "matplotlib"),
    "tqdm": ("experiments", "tqdm"),
    "torchvision": ("experiments", "torchvision"),
    "ray": ("ray", "ray"),
}
# tensorboard is in no extra (lpc study --tensorboard is optional and says so itself)


class MissingExtra(ImportError):
    """An optional dependency of ``feature`` is not installed; ``str()`` is the whole message, one line."""

    def __init__(self, feature: str, module: str, extra: str | None = None):
        self.feature = feature
        self.extra = extra or extra_of(module) or "experiments"
        super().__init__(message(feature, module, self.extra), name=module)


def extra_of(module: str | None) -> str | None:
    """The extra that provides ``module`` (any dotted name under it), or None for a module that no extra provides."""
    if not module:
        return None
    entry = EXTRAS.get(module.partition(".")[0])
    return entry[0] if entry else None


def message(feature: str, module: str, extra: str) -> str:
    """``<feature> needs the '<extra>' extra: pip install 'lpc[<extra>]' (missing: <distribution>)``."""
    top = module.partition(".")[0]
    dist = EXTRAS.get(top, (extra, top))[1]
    return f"{feature} needs the '{extra}' extra: pip install 'lpc[{extra}]' (missing: {dist})"


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """``importlib.import_module(module)``, raising :class:`MissingExtra` if it (or one it imports) is missing.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"matplotlib.pyplot"``.
    feature : str
        What needs it, as the user would name it, e.g. ``"lpc report"``.
    extra : str, optional
        The extra that provides it; by default looked up in :data:`EXTRAS`.

    Examples
    --------
    >>> require("math", "lpc report").sqrt(4.0)
    2.0
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = (error.name or "").partition(".")[0]
        provider = extra if top == module.partition(".")[0] and extra else extra_of(top)
        if provider is None:
            raise
        raise MissingExtra(feature, top, provider) from None


def check(feature: str, modules) -> None:
    """Raise :class:`MissingExtra` for the first of ``modules`` (top-level names in :data:`EXTRAS`) not installed.

    Looks the modules up without importing them, so a command can fail in its
    first millisecond rather than after minutes of work.
    """
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):     # ModuleNotFoundError from a finder, or a half-initialised module
            found = False
        if not found:
            raise MissingExtra(feature, module)
