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
  explorer alone, and the size of the figures sent;
- ``figures`` (``--browser``): the margin figures of notebooks 01–02 and ``margins.html`` at that
  size, each drawn by plotly.js in headless Chromium: seconds to the first draw and to redraw a
  zoom, and the page's size; screenshots go to ``runs/margin-panels/``.
"""
from __future__ import annotations

import argparse
import functools
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
SHOTS = ROOT / "runs" / "margin-panels"  # screenshots of the figures, to look at


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


# An editable install resolves mixdpo_kit through its own import hook, ahead of PYTHONPATH: drop it,
# so each side imports the code on its path (this tree, or the baseline's worktree).
PRELUDE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
"""

ANALYZE = PRELUDE + """
import resource, sys
from mixdpo_kit.interface.cli import main
rc = main(sys.argv[1:])
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""

SLIDER = PRELUDE + r"""
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
from mixdpo_kit.core.config import preset
from mixdpo_kit.training.pipeline import analyze_data
from mixdpo_kit.interface.curriculum_designer import CurriculumDesigner
from mixdpo_kit.interface.margin_explorer import MarginExplorer
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


FIGURES = PRELUDE + r"""
import sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import numpy as np
from mixdpo_kit.core.config import preset
from mixdpo_kit.training.pipeline import analyze_data
from mixdpo_kit.margins.sources import compute_margins
from mixdpo_kit.reports import viz
cfg = preset("mixdpo_paper").override(data={"source": sys.argv[1], "max_rows": None}, margins={"source": "ratings"})
prep = analyze_data(cfg)
words = lambda column: [len(t.split()) for t in prep.dataset[column]]
figures = {"margin_histogram": viz.margin_histogram(prep.margins, prep.split),
           "margin_vs_length": viz.margin_vs_length(prep.margins, words("chosen"), words("rejected"), prep.split,
                                                    length_unit="words"),
           "margin_sources": viz.margin_sources(prep.margins, compute_margins(prep.dataset, "score_rejected"),
                                                "ratings", "score_rejected"),
           "curriculum_timeline": viz.curriculum_timeline(prep.plan, prep.split.hard, cfg.train)}
for name, fig in figures.items():
    fig.write_html(str(Path(sys.argv[2]) / f"{name}.html"), include_plotlyjs=True, full_html=True)
"""

# In the browser: wait for plotly's first draw, then time a zoom (a relayout redraws every trace).
DRAWN = "() => { const g = document.querySelector('.js-plotly-plot'); return g && g._fullLayout && " \
        "g.querySelector('.main-svg'); }"
ZOOM = """async () => { const g = document.querySelector('.js-plotly-plot'); const t = performance.now();
  const xs = Object.keys(g._fullLayout).filter(k => /^xaxis\d*$/.test(k));
  const update = {}; for (const x of xs) { const r = g._fullLayout[x].range; update[x + '.range'] = [r[0], (r[0] + r[1]) / 2]; }
  await Plotly.relayout(g, update); return performance.now() - t; }"""


def browser_times(folder: Path, shots: Path | None) -> dict:
    """Each figure page in headless Chromium: seconds to the first draw, and to redraw a zoom."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        for html in sorted(folder.glob("*.html")):
            start = time.perf_counter()
            page.goto(html.as_uri(), wait_until="load", timeout=300_000)
            page.wait_for_function(DRAWN, timeout=300_000)
            drawn = time.perf_counter() - start
            zoom = page.evaluate(ZOOM) / 1000
            if shots is not None:
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / f"{folder.name}-{html.stem}.png"))
            out[html.stem] = {"first_draw_s": drawn, "zoom_redraw_s": zoom, "page_mb": html.stat().st_size / 1e6}
        browser.close()
    return out


def run_measurement(src: Path, what: str, data: Path, moves: int) -> dict:
    """One measurement in its own process with ``src`` first on the path (and its code imported:
    each script says which file it imported)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    run = functools.partial(subprocess.run, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    where = run([sys.executable, "-c", PRELUDE + "import mixdpo_kit; print(mixdpo_kit.__file__)"]).stdout.strip()
    if not where.startswith(str(src)):
        raise RuntimeError(f"{src}: the measurement would import {where}")
    if what == "analyze":
        out = Path(tempfile.mkdtemp())
        start = time.perf_counter()
        proc = run([sys.executable, "-c", ANALYZE, "analyze", "--data", str(data), "--out", str(out)])
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        lines = proc.stdout.splitlines()
        peak = int(next(line for line in lines if line.startswith("PEAK ")).split()[1]) * 1024
        return {"seconds": seconds, "peak_rss_gb": peak / 1e9, "printed": lines[:3]}
    if what == "figures":
        folder = Path(tempfile.mkdtemp()) / ("this" if src == ROOT else "baseline")
        folder.mkdir()
        proc = run([sys.executable, "-c", FIGURES, str(data), str(folder)])
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        return browser_times(folder, SHOTS)
    proc = run([sys.executable, "-c", SLIDER, str(data), str(moves)])
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
    ap.add_argument("--browser", action="store_true", help="also draw the margin figures of notebooks 01-02 and "
                    "margins.html in headless Chromium (Debian's chromium, playwright): time to draw and to zoom")
    args = ap.parse_args(argv)
    data = build_file(Path(tempfile.mkdtemp()) / "ultrafeedback-61k.jsonl", args.pairs)
    sides = {"this code": ROOT}
    if args.baseline:
        sides[f"baseline {args.baseline}"] = checkout(args.baseline)
    results = {"pairs": args.pairs, "cores": os.cpu_count(), "sides": {}}
    try:
        for name, src in sides.items():
            whats = ("analyze", "slider", "figures") if args.browser else ("analyze", "slider")
            results["sides"][name] = {what: run_measurement(src, what, data, args.moves) for what in whats}
            print(name, json.dumps(results["sides"][name]), flush=True)
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(sides[f"baseline {args.baseline}"])],
                           capture_output=True)
    if args.baseline:
        this, base = results["sides"]["this code"], results["sides"][f"baseline {args.baseline}"]
        results["ratios"] = {"slider_linked": this["slider"]["linked_s"] / base["slider"]["linked_s"],
                             "analyze_seconds": this["analyze"]["seconds"] / base["analyze"]["seconds"],
                             "analyze_peak_rss": this["analyze"]["peak_rss_gb"] / base["analyze"]["peak_rss_gb"]}
        for name, fig in this.get("figures", {}).items():
            old = base["figures"][name]
            results["ratios"][f"{name} first draw"] = fig["first_draw_s"] / old["first_draw_s"]
            results["ratios"][f"{name} zoom"] = fig["zoom_redraw_s"] / old["zoom_redraw_s"]
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results.get("ratios", {})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
