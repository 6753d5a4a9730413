"""The README is the front door and the docs site the rest: the README's Python examples run as written, its top
shows the two commands CI and users rely on, it stays short, its links resolve, and `mkdocs build --strict`
(which also checks every docs page's links and the API reference against the docstrings) passes."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README shows no Python example"
    namespace: dict = {}
    for block in blocks:  # later blocks may use names from earlier ones
        exec(compile(block, "README.md", "exec"), namespace)
    lpc, model, x = namespace["lpc"], namespace["model"], namespace["x"]
    # the quick start: a torchvision model with the IB layer attached still returns logits, the latents are one call away
    assert tuple(namespace["logits"].shape) == (len(x), 10)
    assert tuple(lpc.latents(model).shape) == (len(x), 8)
    assert namespace["loss"].isfinite()


def test_top_shows_two_commands_and_ci_runs_the_test_one():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert README.index("```bash") < README.index("## ")  # the very top: before any section
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_is_the_front_door_not_the_manual():
    assert len(README.splitlines()) <= 200


def test_readme_links_and_images_point_to_existing_files():
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert local, "the README links to no docs page"
    missing = [t for t in local if t and not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert pages and all(f": {page}" in nav for page in pages), pages


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install 'lpc[docs]')")
def test_docs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
