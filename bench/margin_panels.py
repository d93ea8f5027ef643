"""Margins at the paper's scale: ``mixdpo-kit analyze`` and the linked margin panels on 61,135 pairs.

    python bench/margin_panels.py --out docs/benchmarks_margin_panels.json [--baseline REV]

The data: the shipped UltraFeedback sample cycled to 61,135 pairs (the paper's count), written
in UltraFeedback-binarized's hub schema (chat-message lists that repeat the prompt, both
ratings); each copy's prompt ends with its copy number, so no pair is an exact duplicate and every
text keeps its real length. Measured, each in its own process, on this code and (``--baseline
REV``) on the code at a git revision, run by this same script:

- ``analyze``: wall seconds and peak RSS of ``mixdpo-kit analyze --data FILE`` (targets: 20 s,
  2.5 GB on 2 cores);
- ``slider``: the margin explorer and the curriculum designer built as notebook 02 builds them,
  linked; one τ-slider move is timed from the new value to both panels redrawn (their figures
  serialised as the browser receives them), median of ``--moves`` moves (target 0.3 s); also the
  explorer alone, and the size of the figures sent.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_PAIRS = 61_135


def build_file(path: Path, pairs: int = PAPER_PAIRS) -> Path:
    """The sample cycled to ``pairs`` rows in UltraFeedback-binarized's schema."""
    with gzip.open(ROOT / "data" / "ultrafeedback-sample" / "ultrafeedback-binarized-sample.jsonl.gz", "rt") as f:
        sample = [json.loads(line) for line in f]
    with open(path, "w") as out:
        for i in range(pairs):
            row = sample[i % len(sample)]
            prompt = f"{row['prompt']} ({i // len(sample) + 1})"
            out.write(json.dumps({
                "prompt": prompt, "prompt_id": str(i),
                "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["rejected"]}],
                "score_chosen": float(row["score_chosen"]), "score_rejected": float(row["score_rejected"])}) + "\n")
    return path


ANALYZE = """
import resource, sys
from mixdpo_kit.interface.cli import main
rc = main(sys.argv[1:])
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""

SLIDER = r"""
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
from mixdpo_kit.core.config import preset
from mixdpo_kit.training.pipeline import analyze_data
from mixdpo_kit.interface.widgets import CurriculumDesigner, MarginExplorer
cfg = preset("mixdpo_paper").override(data={"source": sys.argv[1], "max_rows": None})
prep = analyze_data(cfg)
margins = {"ratings": prep.margins}
alone = MarginExplorer(prep.dataset, margins)
explorer = MarginExplorer(prep.dataset, margins)
designer = CurriculumDesigner(prep.margins, explorer=explorer, train=cfg.train)
def move(panel, value):
    start = time.perf_counter()
    panel.tau.value = value
    sent = [p.figure.to_json() for p in (panel, designer) if p is panel or panel is explorer]
    return time.perf_counter() - start, sum(map(len, sent))
values = [v for v in (1.0, 0.5, 1.5, 2.0, 0.5, 3.0, 1.0, 0.5, 2.5, 1.0)][: int(sys.argv[2])]
linked = [move(explorer, v) for v in values]
single = [move(alone, v) for v in values]
print(json.dumps({"pairs": len(prep.margins), "linked_s": statistics.median(t for t, _ in linked),
                  "explorer_alone_s": statistics.median(t for t, _ in single),
                  "linked_moves_s": [t for t, _ in linked], "figure_bytes": linked[-1][1]}))
"""


def run_measurement(src: Path, what: str, data: Path, moves: int) -> dict:
    """One measurement in its own process with ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    if what == "analyze":
        out = Path(tempfile.mkdtemp())
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", ANALYZE, "analyze", "--data", str(data), "--out", str(out)],
                              env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        lines = proc.stdout.splitlines()
        peak = int(next(line for line in lines if line.startswith("PEAK ")).split()[1]) * 1024
        return {"seconds": seconds, "peak_rss_gb": peak / 1e9, "printed": lines[:3]}
    proc = subprocess.run([sys.executable, "-c", SLIDER, str(data), str(moves)], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def checkout(rev: str) -> Path:
    """The code at ``rev`` in a temporary git worktree."""
    where = Path(tempfile.mkdtemp()) / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)
    return where


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="a JSON file for the results")
    ap.add_argument("--pairs", type=int, default=PAPER_PAIRS)
    ap.add_argument("--moves", type=int, default=10, help="slider moves timed (median reported)")
    ap.add_argument("--baseline", help="a git revision to measure the same way (its code in a temporary worktree)")
    args = ap.parse_args(argv)
    data = build_file(Path(tempfile.mkdtemp()) / "ultrafeedback-61k.jsonl", args.pairs)
    sides = {"this code": ROOT}
    if args.baseline:
        sides[f"baseline {args.baseline}"] = checkout(args.baseline)
    results = {"pairs": args.pairs, "cores": os.cpu_count(), "sides": {}}
    try:
        for name, src in sides.items():
            results["sides"][name] = {what: run_measurement(src, what, data, args.moves) for what in ("analyze", "slider")}
            print(name, json.dumps(results["sides"][name]), flush=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(sides[f"baseline {args.baseline}"])],
                           capture_output=True)
    if args.baseline:
        this, base = results["sides"]["this code"], results["sides"][f"baseline {args.baseline}"]
        results["ratios"] = {"slider_linked": this["slider"]["linked_s"] / base["slider"]["linked_s"],
                             "analyze_seconds": this["analyze"]["seconds"] / base["analyze"]["seconds"]}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results.get("ratios", {})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
