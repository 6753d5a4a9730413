"""The README's Python examples run as written, and its top shows the two commands CI and users rely on."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:  # later blocks may use names from earlier ones
        exec(compile(block, "README.md", "exec"), namespace)
    assert tuple(namespace["logits"].shape) == (32, 10) and tuple(namespace["z"].shape) == (32, 8)
    assert namespace["model"].head.latent_dim == 8


def test_top_shows_two_commands_and_ci_runs_the_test_one():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test" in ci
