"""One rank of ``mixdpo-kit train`` with every file write recorded; run by tests/training/test_distributed.py.

    python -m torch.distributed.run --nproc_per_node 2 tests/training/run_worker.py RUN_DIR LOG_DIR TAG train ...

Python-level writes (``open``/``io.open`` for writing, ``os.replace``, ``torch.save`` and
safetensors' ``save_file``, which transformers and peft use for weights) into RUN_DIR are recorded and,
after the command, written to ``LOG_DIR/TAG-rank<R>.json`` with the threads still running then. The wrappers go in before transformers and
peft are imported, so their own references to ``save_file`` are the recording ones.
"""
import builtins
import io
import json
import os
import sys
from pathlib import Path

import safetensors.torch
import torch

RUN_DIR = Path(sys.argv[1]).resolve()
written: list[str] = []


def note(path) -> None:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path).resolve()
        if RUN_DIR in p.parents:
            written.append(str(p.relative_to(RUN_DIR)))


def recording(write, path_arg: int = 0, writes_if=lambda *a, **k: True):
    def wrapper(*args, **kwargs):
        if len(args) > path_arg and writes_if(*args, **kwargs):
            note(args[path_arg])
        return write(*args, **kwargs)
    return wrapper


original_open = builtins.open
writing = lambda file, mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
builtins.open = io.open = recording(original_open, 0, writing)
os.replace = recording(os.replace, 1)
torch.save = recording(torch.save, 1)
safetensors.torch.save_file = recording(safetensors.torch.save_file, 1)

from mixdpo_kit.interface.cli import main  # noqa: E402  (after the wrappers)


def thread_names() -> list[str]:
    """The names of this process's threads, native ones included (Linux's /proc)."""
    tasks = Path("/proc/self/task")
    return sorted((t / "comm").read_text().strip() for t in tasks.iterdir()) if tasks.exists() else []

if __name__ == "__main__":
    log_dir, tag = Path(sys.argv[2]), sys.argv[3]
    code = main(sys.argv[4:])
    rank = int(os.environ.get("RANK", 0))
    with original_open(log_dir / f"{tag}-rank{rank}.json", "w") as f:
        json.dump({"code": code, "written": written, "threads": thread_names()}, f)
    sys.exit(code)
