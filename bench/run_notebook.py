"""Execute a notebook headless, as Run All does, and record it as a stage of the GPU check.

    python bench/run_notebook.py NOTEBOOK.ipynb WORKDIR RECORD.json

The notebook runs in WORKDIR (its ``runs/`` land there) with the environment of this process, so
``MIXDPO_KIT_*`` variables reach it (notebook 03: ``mixdpo_kit.interface.notebook.gpu_run_settings``). A last
cell, added here, reads the kernel's peak memory. Writes RECORD.json: wall seconds, peak memory,
the cells that raised, and the notebook's printed lines that carry results.
The executed copy is saved in WORKDIR.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

PEAK_CELL = """
import json, resource, torch
print("PEAK", json.dumps({"peak_gib": (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                          else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30,
                          "memory": "peak allocated (GPU)" if torch.cuda.is_available() else "peak RSS (CPU)"}))
"""
RESULT_WORDS = ("GPU:", "win rate", "held-out", "judged by", "answering", "wrote")


def main(notebook: str, workdir: str, record_path: str) -> int:
    import nbformat
    from nbclient import NotebookClient

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    target = work / Path(notebook).name
    shutil.copy(notebook, target)
    nb = nbformat.read(target, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
        rc = 0
    except Exception as err:  # a cell raised: record which, keep going to write what ran
        print(f"{notebook}: {type(err).__name__}", file=sys.stderr)
        rc = 1
    seconds = time.perf_counter() - start
    nbformat.write(nb, target)
    texts = [(i, "".join(o.get("text", "") for o in c.get("outputs", []) if o.get("output_type") == "stream"))
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    errors = [f"cell {i}: {o['ename']}: {o['evalue'][:200]}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    peak = next((json.loads(line[5:]) for _, t in texts for line in t.splitlines() if line.startswith("PEAK ")), {})
    results = [line for _, t in texts for line in t.splitlines() if any(w in line for w in RESULT_WORDS)]
    record = {"rc": rc or int(bool(errors)), "seconds": seconds, **peak, "errors": errors, "results": results[:12]}
    Path(record_path).write_text(json.dumps(record))
    return record["rc"]


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
