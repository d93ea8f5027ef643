"""Print pip constraints that pin every dependency to the lower bound ``pyproject.toml`` declares.

    python scripts/lowest_constraints.py [EXTRA ...] > lowest.txt
    pip install -c lowest.txt -e ".[EXTRA]"

CI installs the package this way in a second environment and runs a fast subset of the tests,
so every ``>=`` bound is one that has been tried.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def lower_bounds(extras: list[str]) -> dict[str, str]:
    """``{package: lowest allowed version}`` for the dependencies and the named extras."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    bounds = {}
    for req in requirements:
        if req.startswith("mixdpo-kit["):  # an extra that names other extras: listed on its own
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)", req.strip())
        if not match:
            raise SystemExit(f"{PYPROJECT}: {req!r} has no plain '>=' lower bound")
        bounds[match.group(1)] = match.group(2)
    return bounds


if __name__ == "__main__":
    for name, version in lower_bounds(sys.argv[1:]).items():
        print(f"{name}=={version}")
