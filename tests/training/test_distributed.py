"""Training runs unchanged under torchrun (DDP, two CPU processes with gloo): the pairs seen per
step are the curriculum's, the result matches a single process with the same global batch, and
the reference pass is split between the processes and written once."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from mixdpo_kit.modeling.tiny import build_tiny_model

WORKER = Path(__file__).with_name("ddp_worker.py")


def run(nproc: int, per_device: int, model: str, out: Path) -> list[dict]:
    with socket.socket() as sock:  # torchrun's static rendezvous needs a concrete free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
           str(WORKER), model, str(out), str(per_device)]
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), model, str(out), str(per_device)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def test_ddp_two_processes_follow_the_curriculum_and_match_one_process(tmp_path):
    model = str(build_tiny_model(tmp_path / "model"))
    single = run(1, 4, model, tmp_path / "single")[0]
    ranks = run(2, 2, model, tmp_path / "ddp")
    assert all(r["world_size"] == 2 for r in ranks)
    plan = single["plan_rows"]
    assert ranks[0]["plan_rows"] == plan
    for step in range(4):
        union = ranks[0]["rows"][step] + ranks[1]["rows"][step]
        assert sorted(union) == sorted(plan[4 * step: 4 * step + 4]), step  # the step's pairs, in plan order
        assert single["rows"][step] == plan[4 * step: 4 * step + 4]
    # Same global batch, same init, SGD: the adapters agree up to float reduction order (which
    # differs here: torchrun gives each process one thread). Compare the change from the shared
    # initial weights, relative to its size, so a wrongly scaled or dropped gradient shows.
    change = {n: np.array(v) - np.array(single["init"][n]) for n, v in single["params"].items()}
    scale = max(np.abs(c).max() for c in change.values())
    assert scale > 0
    for name, want in change.items():
        for r in ranks:
            got = np.array(r["params"][name]) - np.array(single["init"][name])
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * scale, err_msg=name)
    np.testing.assert_allclose(ranks[0]["losses"], single["losses"], rtol=1e-4)
    # The reference pass is shared: each process scores about half the pairs, the gathered numbers are
    # one process's, every process holds all of them, and only the main process writes the cache.
    n = single["reference_computed"]
    assert n > 4 and sum(r["reference_computed"] for r in ranks) == n
    assert all(abs(r["reference_computed"] - n / 2) <= 1 for r in ranks)
    for r in ranks:
        for side in ("ref_chosen", "ref_rejected"):
            np.testing.assert_allclose(r[side], single[side], rtol=1e-5, atol=1e-5)
    assert [r["cache_writes"] for r in ranks] == [1, 0] and single["cache_writes"] == 1
