"""Tests of the package's promises: the core works with torch and numpy alone, a missing extra is one named line,
and the metadata (dependencies, version, licence and citation files) is what pyproject.toml and the docs say."""
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:      # Python 3.10
    tomllib = pytest.importorskip("tomli")

# Everything outside torch and numpy that lpc or its tests use anywhere
HARNESS = ("scipy", "sklearn", "matplotlib", "yaml", "tqdm", "torchvision", "ray", "timm", "lightning",
           "tensorboard")

# A finder first on sys.meta_path that refuses every harness module, as if only torch and numpy were installed
BLOCKER = textwrap.dedent(f"""
    import sys
    BLOCKED = {HARNESS!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
""")


def _run(code, *, blocked=True, timeout=240):
    source = (BLOCKER if blocked else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1",
                                         "PATH": "/usr/bin:/bin"})


def test_the_blocker_really_blocks():
    result = _run("import yaml")
    assert result.returncode != 0 and "No module named 'yaml'" in result.stderr


def test_core_imports_and_computes_without_any_harness_dependency():
    result = _run("""
        import pkgutil, importlib
        import numpy as np, torch
        import lpc, lpc.metrics, lpc.heads, lpc.losses, lpc.model
        names = [m.name for m in pkgutil.iter_modules(lpc.metrics.__path__, "lpc.metrics.")]
        for name in names:
            importlib.import_module(name)
        assert {"lpc.metrics.entropy", "lpc.metrics.reliability", "lpc.metrics.robustness"} <= set(names), names

        from lpc.metrics import auroc, kl_entropy, within_class_variance_share
        z = np.random.default_rng(0).uniform(size=(3000, 1))             # H(U[0, 1]) = 0
        assert abs(kl_entropy(z, k=10)) < 0.05, kl_entropy(z, k=10)
        assert auroc([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1]) == 0.75
        y = np.repeat(np.arange(3), 20)
        assert 0.0 <= within_class_variance_share(np.random.default_rng(1).normal(size=(60, 4)), y) <= 1.0

        head = lpc.build_head("ib", 16, 10)
        logits, z = head(torch.randn(5, 16))
        assert logits.shape == (5, 10) and z.shape[0] == 5
        print("core ok")
    """)
    assert result.returncode == 0, result.stderr
    assert "core ok" in result.stdout


def test_attach_latents_and_ibloss_work_without_any_harness_dependency():
    result = _run("""
        import torch
        from torch import nn
        import lpc

        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
        model = lpc.attach(model, latent_dim=8)
        x, y = torch.randn(6, 4, 4), torch.randint(0, 10, (6,))
        logits = model(x)
        z = lpc.latents(model)
        assert logits.shape == (6, 10), logits.shape
        assert z.shape == (6, 8), z.shape
        loss = lpc.IBLoss(gamma=0.1)(logits, z, y)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        # the loss is cross-entropy plus a compression term that is not negative
        assert float(loss) >= float(nn.functional.cross_entropy(logits, y)) - 1e-6
        print("attach ok")
    """)
    assert result.returncode == 0, result.stderr
    assert "attach ok" in result.stdout


def test_import_lpc_loads_no_harness_module():
    # with everything installed: `import lpc` and the metrics must not pull a harness module in by themselves
    # (torch itself imports tqdm when it is there: only what lpc adds counts)
    result = _run(f"""
        import sys
        import numpy, torch
        before = set(sys.modules)
        import lpc, lpc.metrics, lpc.heads, lpc.losses, lpc.model
        loaded = sorted(m for m in set(sys.modules) - before if m.partition(".")[0] in {HARNESS!r})
        print(loaded)
        assert not loaded, loaded
        assert "lpc.config" in sys.modules      # the module that used to import yaml was imported
    """, blocked=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("argv", [["report", "x"], ["plot", "latents", "x"], ["train", "--config", "x.yaml"],
                                  ["download", "cifar10"]])
def test_a_missing_extra_is_one_line_naming_it(argv):
    result = _run(f"""
        import sys
        from lpc.cli import main
        sys.exit(main({argv!r}))
    """)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"lpc: error: lpc {argv[0]} needs the 'experiments' extra: "
                               "pip install 'lpc[experiments]' (missing: ")
    assert result.stdout == ""


def test_python_dash_m_lpc_reports_the_missing_extra():
    result = _run("""
        import runpy, sys
        sys.argv = ["lpc", "report", "x"]
        runpy.run_module("lpc", run_name="__main__")
    """)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lpc: error: lpc report needs the 'experiments' extra: pip install 'lpc[experiments]' (missing: PyYAML)"]


def test_require_names_the_extra_and_passes_other_errors_through():
    from lpc._extras import MissingExtra, check, require

    assert require("math", "lpc x").sqrt(9.0) == 3.0
    with pytest.raises(MissingExtra) as info:
        require("lpc_no_such_module", "lpc attach on timm", extra="test")
    assert str(info.value) == ("lpc attach on timm needs the 'test' extra: pip install 'lpc[test]' "
                               "(missing: lpc_no_such_module)")
    assert isinstance(info.value, ImportError) and "\n" not in str(info.value)
    with pytest.raises(ModuleNotFoundError):     # a module no extra provides is a bug, not a choice of extras
        require("lpc_no_such_module", "lpc x")
    check("lpc report", ("math", "json"))       # present: nothing raised


# --------------------------------------------------------------------------- metadata


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_name_and_spec(requirement):
    name = requirement.split(";")[0].strip()
    for i, ch in enumerate(name):
        if ch in "<>=!~[ (":
            return name[:i].lower(), name[i:]
    return name.lower(), ""


def test_core_dependencies_are_torch_and_numpy_with_lower_bounds_only():
    project = _pyproject()["project"]
    core = dict(_requirement_name_and_spec(r) for r in project["dependencies"])
    assert set(core) == {"torch", "numpy"}
    every = list(project["dependencies"]) + [r for reqs in project["optional-dependencies"].values() for r in reqs]
    for requirement in every:
        _, spec = _requirement_name_and_spec(requirement)
        assert "<" not in spec and "==" not in spec and "~=" not in spec, f"upper bound or pin: {requirement}"
    extras = project["optional-dependencies"]
    assert {"experiments", "ray", "peers", "docs", "test"} <= set(extras)
    experiments = {_requirement_name_and_spec(r)[0] for r in extras["experiments"]}
    assert {"torchvision", "scipy", "scikit-learn", "matplotlib", "pyyaml", "tqdm"} <= experiments
    test = {_requirement_name_and_spec(r)[0] for r in extras["test"]}
    assert {"pytest", "ray", "timm", "lightning", "scipy", "scikit-learn", "mkdocs-material",
            "mkdocstrings-python"} <= test


def test_every_extra_named_by_the_error_helper_exists():
    from lpc._extras import EXTRAS

    extras = _pyproject()["project"]["optional-dependencies"]
    for module, (extra, distribution) in EXTRAS.items():
        names = {_requirement_name_and_spec(r)[0] for r in extras[extra]}
        assert distribution.lower() in names, (module, extra)


def test_the_version_has_one_source():
    import lpc

    data = _pyproject()
    assert "version" not in data["project"] and data["project"]["dynamic"] == ["version"]
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lpc.__version__"}
    assert "py.typed" in data["tool"]["setuptools"]["package-data"]["lpc"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{lpc.__version__}]" in changelog


def test_licence_citation_and_typing_marker_exist():
    import lpc

    assert (ROOT / "src" / "lpc" / "py.typed").is_file()
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Copyright (c) 2026 the lpc authors" in licence
    assert "MNIST" in licence and "LeCun" in licence and "mnist_digits.npz" in licence
    text = (ROOT / "CITATION.cff").read_text()
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load(text)
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "lpc" and cff["license"] == "MIT" and cff["version"] == lpc.__version__
    assert cff["authors"] and cff["message"]
    paper = cff["preferred-citation"]
    assert paper["title"].lower() == ("latent point collapse induces an information bottleneck "
                                      "in deep neural network classifiers")
    assert paper["authors"] and paper["type"]
