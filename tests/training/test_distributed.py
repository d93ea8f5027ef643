"""Under torchrun (two CPU processes with gloo): training follows the curriculum and matches a single
process with the same global batch; every other stage splits its work between the processes, gathers
the same numbers as one process and writes its files once."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from mixdpo_kit.modeling.tiny import build_tiny_model, build_tiny_reward_model

HERE = Path(__file__).parent


def launch(nproc: int, script: Path, *args: str) -> subprocess.CompletedProcess:
    """``script args`` in one plain process, or in ``nproc`` processes under torchrun."""
    with socket.socket() as sock:  # torchrun's static rendezvous needs a concrete free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, str(script), *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
               *cmd[1:]]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def run(nproc: int, per_device: int, model: str, out: Path) -> list[dict]:
    launch(nproc, HERE / "ddp_worker.py", model, str(out), str(per_device))
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
    assert n > 4 and n <= sum(r["reference_computed"] for r in ranks) <= n + 1  # the last share may repeat a pair
    assert all(abs(r["reference_computed"] - n / 2) <= 1 for r in ranks)
    for r in ranks:
        for side in ("ref_chosen", "ref_rejected"):
            np.testing.assert_allclose(r[side], single[side], rtol=1e-5, atol=1e-5)
    assert [r["cache_writes"] for r in ranks] == [1, 0] and single["cache_writes"] == 1


def test_every_stage_splits_its_work_gathers_one_process_numbers_and_writes_once(tmp_path):
    model = str(build_tiny_model(tmp_path / "model"))
    reward = str(build_tiny_reward_model(tmp_path / "reward"))
    stages = HERE / "stages_worker.py"
    launch(1, stages, model, reward, str(tmp_path / "single"))
    launch(2, stages, model, reward, str(tmp_path / "two"))
    single = json.loads((tmp_path / "single" / "rank0.json").read_text())
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in range(2)]
    stage_names = ["likelihood_gap", "ches", "reward_model", "pair_logps", "generate", "generate_answers"]
    assert sorted(single["results"]) == sorted(stage_names)
    for name in stage_names:
        alone = single["rows"][name]  # rows the decoders ran in one process
        assert alone > 0, name
        for r in ranks:
            assert 0.4 * alone <= r["rows"].get(name, 0) <= 0.6 * alone, (name, r["rows"], alone)  # about half each
            got, want = r["results"][name], single["results"][name]
            if isinstance(want[0], str):
                assert got == want, name  # greedy answers: the same batches, so the same text
            else:
                np.testing.assert_allclose(np.array(got, float), np.array(want, float), rtol=1e-5, atol=1e-5,
                                           err_msg=name)
    # Each cache file (reference, CHES, two reward-score lists) written once, by the main process.
    assert len(single["cache_writes"]) == 4
    assert sorted(ranks[0]["cache_writes"]) == sorted(single["cache_writes"]) and ranks[1]["cache_writes"] == []
    # generate_answers' record: the header and one line per prompt, appended by one process.
    record = (tmp_path / "two" / "answers" / "a.json.generations.jsonl").read_text().splitlines()
    assert len(record) == 1 + 8 and len({json.loads(line).get("id") for line in record[1:]}) == 8
