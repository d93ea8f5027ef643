"""pyproject.toml and environment.yml describe the same environment; the README's commands are in CI."""
import json
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


def test_installed_wheel_runs_offline_from_another_folder(tmp_path):
    """The wheel holds the shipped data: installed apart from the checkout (which is not importable),
    with every socket connection refused, ``analyze`` on the shipped sample and a short ``demo`` run
    from another folder, and write nowhere but the run folders and the cache they are given."""
    import shutil
    import subprocess
    import sys

    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    # The environment's own setuptools where it is recent enough (no download), else pip's isolated build.
    try:
        import setuptools
        recent = int(setuptools.__version__.split(".")[0]) >= 77
    except ImportError:
        recent = False
    isolation = ["--no-build-isolation"] if recent else []
    # Built from a copy of the tracked layout: setuptools' build/ folder in the checkout could hold stale modules.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv*", ".gpu", "runs", "build", "*.egg-info",
                                                                ".mixdpo_cache", "__pycache__", "docs", "notebooks"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", str(source), "-w", str(wheels)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next(wheels.glob("mixdpo_kit-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "sitecustomize.py").write_text(
        "import socket\n"
        "def _refuse(self, *a, **k):\n"
        "    raise OSError('network use in an offline test')\n"
        "socket.socket.connect = _refuse\n")
    work.mkdir()
    home = tmp_path / "home"
    env = {**__import__("os").environ, "PYTHONPATH": f"{target}:{offline}", "HOME": str(home),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}

    def kit(*args):
        res = subprocess.run([sys.executable, "-m", "mixdpo_kit", *args], cwd=work, env=env, capture_output=True,
                             text=True, timeout=900)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        return res.stdout

    where = subprocess.run([sys.executable, "-c", "import mixdpo_kit; print(mixdpo_kit.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where
    kit("analyze", "--data", "ultrafeedback-sample", "--out", "a")
    assert json.loads((work / "a" / "data_report.json").read_text())["rows_read"] == 1000
    kit("demo", "--out", "d", "--max-steps", "2", "--sft_warmup.max_steps", "2", "--eval.max_pairs", "8",
        "--eval.reward_prompts", "8", "--eval.n_generations", "1", "--eval.max_new_tokens", "4")
    assert json.loads((work / "d" / "summary.json").read_text())["data"]["rows_read"] == 2000
    # Everything written lies in the two run folders (the demo keeps its cache inside its own).
    assert sorted(p.name for p in work.iterdir()) == ["a", "d"]
    assert (work / "d" / "cache" / "models" / "tiny-llama" / "config.json").exists()
    assert not home.exists() or not any(home.rglob("*mixdpo*"))
