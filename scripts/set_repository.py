"""Write the repository address from ``pyproject.toml`` (``[project.urls] Repository``) into every
notebook's Colab badge and setup cell.

    python scripts/set_repository.py          # rewrite the notebooks (e.g. after forking)
    python scripts/set_repository.py --check  # exit 1 if a notebook disagrees (the tests run this)
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
SETUP = '''# Setup. On Colab: install the kit and bitsandbytes (Colab ships the rest; nothing is upgraded).
# Everywhere: quiet library logs and warnings, and one progress bar per training.
import sys
if "google.colab" in sys.modules:
    %pip install -q bitsandbytes "mixdpo-kit @ git+{repo}"
from mixdpo_kit import setup_notebook
setup_notebook()'''


def repository() -> str:
    """The repository URL declared in pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")


def expected_cells(path: Path, repo: str) -> tuple[str, str]:
    """The badge markdown and the setup cell source of notebook ``path`` for ``repo``."""
    github = repo.removeprefix("https://github.com/")
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{github}/blob/main/notebooks/{path.name})")
    return badge, SETUP.format(repo=repo)


def main(check: bool) -> int:
    repo, stale = repository(), []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        badge, setup = expected_cells(path, repo)
        title, first_code = nb.cells[0], next(c for c in nb.cells if c.cell_type == "code")
        new_title = BADGE.sub(badge, title.source)
        if new_title != title.source or first_code.source != setup or badge not in new_title:
            stale.append(path.name)
            title.source, first_code.source = new_title, setup
            if not check:
                nbformat.write(nb, path)
    if check and stale:
        print(f"notebooks out of date with pyproject's Repository {repo}: {stale}; run python scripts/set_repository.py")
        return 1
    print(f"{'checked' if check else 'wrote'} {repo} into the notebooks" + (f" (changed {stale})" if stale and not check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
