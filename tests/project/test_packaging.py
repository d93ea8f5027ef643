"""pyproject.toml and environment.yml describe the same environment; the README's commands are in CI."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["notebooks"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(p for p in pip if not p.startswith("-e")) == wanted


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = "bash scripts/setup.sh dev && .venv/bin/python -m pytest -q"
    demo_cmd = "bash scripts/setup.sh && .venv/bin/mixdpo-kit demo --out runs/demo"
    assert test_cmd in readme and demo_cmd in readme
    assert test_cmd in ci


def test_setup_pins_a_cpu_torch_the_package_accepts_without_gpu():
    import re

    from packaging.requirements import Requirement

    setup = (ROOT / "scripts" / "setup.sh").read_text()
    pinned = re.findall(r'"torch==([0-9.]+)"', setup)
    torch_req = next(Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                     ["dependencies"] if d.startswith("torch"))
    assert pinned and all(torch_req.specifier.contains(v) for v in pinned) and "nvidia-smi" in setup


def test_ci_tries_every_lower_bound():
    import subprocess
    import sys

    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test_lowest.sh" in ci
    pins = subprocess.run([sys.executable, str(ROOT / "scripts" / "lowest_constraints.py"), "test"],
                          capture_output=True, text=True, check=True).stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {p.split("==")[0] for p in pins}
    assert names == {d.split(">=")[0] for d in project["dependencies"] + project["optional-dependencies"]["test"]}
