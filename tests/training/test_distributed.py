"""Under torchrun (two CPU processes with gloo): training follows the curriculum and matches a single
process with the same global batch; every other stage splits its work between the processes, gathers
the same numbers as one process and writes its files once."""
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mixdpo_kit.core.config import preset
from mixdpo_kit.core.steps import StepPlan

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
    assert res.returncode == 0, f"stdout:\n{res.stdout[-2000:]}\nstderr:\n{res.stderr[-8000:]}"
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


def test_a_two_process_run_writes_each_file_once_and_resumes(tmp_path):
    """``mixdpo-kit train`` under torchrun: only the main process writes the run's files (the other
    writes nothing but its own RNG state in each checkpoint), metrics.jsonl has each row once,
    ``--resume`` from that run's checkpoint trains the rest to the same losses, and each process
    closes the process group before it exits."""
    out, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    cfg = preset("demo").override(
        model={"name_or_path": str(build_tiny_model(tmp_path / "model")), "mode": "lora"},
        sft_warmup={"max_steps": 2, "batch_size": 8}, data={"max_rows": 48},
        train={"max_steps": 4, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 2,
               "learning_rate": 1e-2, "warmup_ratio": 0.0,
               "output_dir": str(out)}, cache={"dir": str(tmp_path / "cache")},
        eval={"batch_size": 8, "max_pairs": 16, "reward_prompts": 8, "n_generations": 2, "max_new_tokens": 4,
              "track_every": 2})
    cfg.to_yaml(tmp_path / "run.yaml")
    worker = HERE / "run_worker.py"

    def train(tag: str, *extra: str) -> list[list[str]]:
        launch(2, worker, str(out), str(logs), tag, "train", "--config", str(tmp_path / "run.yaml"), *extra)
        ranks = [json.loads((logs / f"{tag}-rank{r}.json").read_text()) for r in range(2)]
        assert [r["code"] for r in ranks] == [0, 0]
        # The command closed the process group: no gloo thread is left for the interpreter's exit
        # to tear down (which can abort a process whose work is done).
        assert [[t for t in r["threads"] if "gloo" in t] for r in ranks] == [[], []], ranks
        return [r["written"] for r in ranks]

    def check_one_writer(main: list[str], other: list[str]) -> None:
        assert [p for p in other if not p.endswith("rng_state_1.pth")] == [], other
        for name in ("config.yaml", "data_report.json", "summary.json", "report.html"):
            assert main.count(name) == 1, (name, main)
        assert main.count("adapter/adapter_model.safetensors") == 1

    def logged_losses() -> dict[int, float]:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == len(set(lines))  # no row twice
        rows = [json.loads(line) for line in lines]  # no interleaved half-lines
        train_steps = [r["step"] for r in rows if "loss" in r]
        assert train_steps == [1, 2, 3, 4], train_steps
        assert [r["step"] for r in rows if "heldout/logps_chosen" in r] == [0, 2, 4]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    check_one_writer(*train("first"))
    assert (out / "sft_model" / "config.json").exists()
    first = logged_losses()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lr_mass"]["steps_trained"] == 4
    # As if the run had been stopped after step 2: resume from that checkpoint.
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    check_one_writer(*train("resumed", "--resume", str(out / "checkpoints" / "checkpoint-2")))
    resumed = logged_losses()
    assert (out / "checkpoints" / "checkpoint-4").exists() and first[4] < first[1] - 1e-3  # it trained, and moved
    np.testing.assert_allclose([resumed[s] for s in (3, 4)], [first[s] for s in (3, 4)], rtol=1e-4)


def test_the_fsdp_config_parses_and_fsdp_on_cpu_is_refused_not_silently_ddp(tmp_path):
    """configs/accelerate/fsdp.yaml through ``accelerate launch``: the FSDP plugin it sets up is FSDP2 with
    transformer-block wrapping. On a machine without a GPU accelerate picks MULTI_CPU (DDP) whatever the
    config says, so the kit refuses to train rather than call that FSDP (see docs/distributed.md)."""
    model = str(build_tiny_model(tmp_path / "model"))
    out = tmp_path / "out"
    out.mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = Path(__file__).parents[2] / "configs" / "accelerate" / "fsdp.yaml"
    res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                          "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port),
                          str(HERE / "fsdp_worker.py"), model, str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-8000:]
    for rank in range(2):
        got = json.loads((out / f"fsdp-rank{rank}.json").read_text())
        assert got["fsdp_version"] == 2 and got["auto_wrap_policy"] == "transformer_auto_wrap_policy"
        assert got["state_dict_type"] == "SHARDED_STATE_DICT" and got["reshard_after_forward"]
        assert got["distributed_type"] == "MULTI_CPU"
        assert got["error"] and "FSDP was asked for" in got["error"] and "no GPU" in got["error"]


def test_the_step_plan_is_what_two_processes_train(tmp_path):
    """Two processes, a short last round (padded by accelerate), accumulation, 1.5 epochs, warm-up and
    cosine: the planned steps, each step's pairs and the learning-rate mass by route equal what the
    processes trained; the route metrics logged are the same on both (gathered, not rank 0's pairs)."""
    model = str(build_tiny_model(tmp_path / "model"))
    launch(2, HERE / "steps_worker.py", model, str(tmp_path / "two"))
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in range(2)]
    r0 = ranks[0]
    assert r0["world_size"] == 2 and r0["planned_steps"] == r0["steps_trained"] == ranks[1]["steps_trained"]
    assert r0["one_process_steps"] != r0["planned_steps"]  # a planner blind to the processes would be wrong
    trained: dict[int, list] = {}
    lrs: dict[int, float] = {}
    for r in ranks:
        for m in r["micro"]:
            trained.setdefault(m["step"], []).extend(m["rows"])
            assert lrs.setdefault(m["step"], m["lr"]) == m["lr"]
    assert sorted(trained) == list(range(r0["steps_trained"]))
    assert [sorted(trained[s]) for s in sorted(trained)] == [sorted(rows) for rows in r0["planned_rows"]]
    share = {int(k): v for k, v in r0["sft_share"].items()}
    first_epoch = [i for rows in r0["planned_rows"][:StepPlan(3, 2, 2).steps_per_epoch(len(share))] for i in rows]
    assert len(first_epoch) > len(set(first_epoch)) == len(share)  # the last round repeats the epoch's first pairs
    lr = np.array([lrs[s] for s in sorted(lrs)])
    per_step = np.array([np.mean([share[i] for i in trained[s]]) for s in sorted(trained)])
    assert r0["lr_mass"]["sft"] == pytest.approx(float((lr * per_step).sum() / lr.sum()), rel=1e-9)
    assert r0["lr_mass"]["steps_trained"] == r0["steps_trained"] and r0["lr_mass"]["processes"] == 2
    assert r0["lr_mass"]["pairs_trained"] == sum(len(v) for v in trained.values())
    assert r0["routes"] and r0["routes"] == ranks[1]["routes"]
