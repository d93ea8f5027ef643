"""Run one ``mixdpo-kit`` command in this process and record its wall time and peak memory.

    python bench/stage.py RECORD.json -- train --config run.yaml --out runs/x

Writes RECORD.json: the command, its exit code, wall seconds and peak
memory (on a GPU the peak of allocated memory, else the process's peak RSS), and the same for
the parts inside it: model loading, the reference precompute, training and the held-out
evaluation of ``train``; ``generate``'s answering; ``judge``'s judging.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

GIB = 2 ** 30


def peak_gib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measured(owner, name: str, label: str, parts: dict) -> None:
    """Replace ``owner.name`` with a wrapper that records the wall time and peak memory of its calls
    under ``label`` (calls add up; on a GPU the peak is reset when each call starts)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sync()
            part = parts.setdefault(label, {"seconds": 0.0, "peak_gib": 0.0, "calls": 0})
            part["seconds"] += time.perf_counter() - start
            part["peak_gib"] = max(part["peak_gib"], peak_gib())
            part["calls"] += 1
    setattr(owner, name, wrapper)


def main(argv: list[str]) -> int:
    out, sep, *command = argv
    assert sep == "--", "usage: stage.py RECORD.json -- mixdpo-kit arguments"
    from mixdpo_kit.interface import cli
    from mixdpo_kit.evaluation import generation
    from mixdpo_kit.evaluation import judge
    from mixdpo_kit.modeling import model
    from mixdpo_kit.training import pipeline
    from mixdpo_kit.workflows import runs
    from mixdpo_kit.training import trainer

    parts: dict = {}
    measured(model, "build_policy", "model loading", parts)
    measured(pipeline, "build_policy", "model loading", parts)
    measured(pipeline, "reference_logps", "reference precompute", parts)
    measured(trainer.RoutedPairTrainer, "train", "training", parts)
    measured(runs, "evaluate_policy", "evaluation", parts)
    measured(generation, "generate_answers", "answering", parts)
    measured(judge, "judge_files", "judging", parts)
    start = time.perf_counter()
    rc = cli.main(command)
    sync()
    # The parts reset the GPU's peak as they start: the stage's peak is the largest seen.
    peak = max([peak_gib()] + [p["peak_gib"] for p in parts.values()])
    record = {"rc": rc, "seconds": time.perf_counter() - start, "peak_gib": peak,
              "memory": "peak allocated (GPU)" if torch.cuda.is_available() else "peak RSS (CPU)", "parts": parts,
              "command": "mixdpo-kit " + " ".join(command)}
    Path(out).write_text(json.dumps(record))
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
