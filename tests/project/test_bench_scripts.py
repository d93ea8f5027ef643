"""The GPU check keeps working and keeps to its budget: ``scripts/gpu_check.sh --tiny`` runs the
same stages, in the same order, at small shapes on a CPU — the user's run at full and half
precision, generation and judging on AlpacaEval's published files, the benchmark against TRL,
the 8B shape through the kit's trainer, notebook 03 on its GPU branch, the rest of the benchmark —
and writes what a GPU run would, in three files directly under OUT. A small budget runs what fits
and says why it skipped the rest; a command stopped mid-stage keeps the stages that finished.
The in-memory 4-bit shapes equal what ``from_pretrained`` loads, and a memory history is
summarised by hand-checkable rules."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402
import gpu_qlora  # noqa: E402
import shapes  # noqa: E402

ORDER = [s.name for s in gpu_check.STAGES]


def shared_data():
    if not (SHARED / gpu_check.ALPACA_FILE).exists():
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{SHARED} is missing")


def start(tmp_path, *args):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "SHARED_DATA": str(SHARED),
           "WHEELS": str(tmp_path / "no-wheels")}
    return subprocess.Popen(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def report(tmp_path) -> dict:
    return json.loads((tmp_path / "out" / "gpu_check.json").read_text())


def stages(tmp_path) -> dict:
    return {s["name"]: s for s in report(tmp_path)["stages"]}


def test_gpu_check_tiny_runs_every_stage_in_order_and_keeps_its_results_in_three_files(tmp_path):
    shared_data()
    proc = start(tmp_path, "--budget", "1500")
    output, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, output[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    got = report(tmp_path)
    assert [s["name"] for s in got["stages"]] == ORDER  # the user's path first
    assert all(s["status"] == "done" for s in got["stages"]), [(s["name"], s.get("reason")) for s in got["stages"]]
    assert got["imports"]["ok"] and got["versions"]["trl"] != "missing"
    by = stages(tmp_path)

    train = by["train_bf16"]
    assert {"build the 0.5B shape and its judge", "model loading", "reference precompute", "training",
            "evaluation"} <= set(train["parts"])
    assert train["results"]["data"]["rows_kept"] == gpu_check.TINY.rows and train["peak_gib"] > 0
    cmp = by["train_fp16"]["results"]["vs_bf16"]
    assert cmp["steps_compared"] == gpu_check.TINY.fp16_steps and cmp["pairs_compared"] > 0
    assert cmp["finite"] and cmp["close"], cmp

    assert by["generate"]["results"]["answers"] == gpu_check.TINY.prompts
    judged = by["judge"]["results"]
    assert judged["left_out"]["matched"] == judged["prompts"] == gpu_check.TINY.prompts

    for name in ("qwen1.5b_trl_best", "qwen1.5b_kit_dpo", "qwen1.5b_kit_mixdpo", "llama8b_kit_mixdpo"):
        result = by[name]["results"]
        assert set(result["batches"]) == {"1", "2"}
        for batch, r in result["batches"].items():
            assert r["timed_steps"] == gpu_check.TINY.steps and r["pairs_per_s"] > 0
            # Tokens as each side's collator produced them (padding excluded): every word is one token
            # for both trainers, and the kit sends each prompt once where the pair shares it.
            shared = int(batch) * result["prompt_tokens"] if "kit" in name else 0
            assert r["tokens_per_step"] == 2 * int(batch) * result["seq_len"] - shared, (name, r["tokens_per_step"])
            assert r["precompute_s"] > 0 and r["build_s"] > 0  # each batch size on a freshly drawn model
    assert by["qwen1.5b_trl_default"]["results"]["batches"]["1"]["precompute_s"] == 0
    assert set(by["qwen1.5b_b4_kit_mixdpo"]["results"]["batches"]) == {"4"}
    assert set(got["targets"]["qwen2.5-1.5b batch 2"]) == {"kit peak <= 0.9x TRL best", "kit DPO >= 1.0x TRL best pairs/s",
                                                          "MixDPO 12% >= 1.15x TRL best pairs/s"}
    assert set(got["targets"]["llama-3-8b on a T4 (15 GiB)"]) == {"fits at batch 1", "fits at batch 2"}
    notebook = by["notebook_03"]["results"]
    assert not notebook["errors"] and any("MIXDPO_KIT_GPU_BRANCH=1" in line for line in notebook["results"])
    assert any("judged by" in line for line in notebook["results"]), notebook["results"]

    table = (out / "gpu_check.md").read_text()
    assert "| train_bf16 | done |" in table and "| qwen1.5b_kit_mixdpo | 2 |" in table and "Targets:" in table
    assert "$ " in (out / "gpu_check.log").read_text()  # each stage's command and output


def test_a_small_budget_runs_what_fits_and_says_why_it_skipped_the_rest(tmp_path):
    shared_data()
    budget = 60
    began = time.time()
    proc = start(tmp_path, "--budget", str(budget))
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert time.time() - began < budget + 30  # the report is written after the budget's end
    got = report(tmp_path)
    statuses = [s["status"] for s in got["stages"]]
    assert [s["name"] for s in got["stages"]] == ORDER
    assert statuses[0] == "done" and "skipped" in statuses and set(statuses) <= {"done", "skipped", "stopped"}
    for s in got["stages"]:
        if s["status"] == "skipped":
            assert "s left" in s["reason"] or s["reason"].startswith("needs "), s
        if s["status"] == "stopped":
            assert "budget" in s["reason"]
        if "started_at_s" in s:  # a stage starts only when its (scaled) estimate fits in what is left
            assert s["started_at_s"] + s["scaled_estimate_s"] <= budget + 1, s  # (+1: measured just after)
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    skipped = next(s for s in got["stages"] if s["status"] == "skipped")
    assert f"| {skipped['name']} | skipped |" in table and skipped["reason"] in table


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_command_stopped_mid_stage_keeps_the_finished_stages(tmp_path, sig):
    shared_data()
    proc = start(tmp_path, "--only", "train_bf16,train_fp16,generate")
    deadline = time.time() + 300
    while time.time() < deadline:
        path = tmp_path / "out" / "gpu_check.json"
        running = path.exists() and stages(tmp_path).get("train_fp16", {})
        if running and running.get("process_group"):
            break
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    else:
        pytest.fail("train_fp16 never started")
    os.killpg(proc.pid, sig)  # as the machine's time limit would
    proc.wait(timeout=60)
    if sig == signal.SIGKILL:  # nothing ran to clean up: the stage's own process group is still there
        os.killpg(running["process_group"], signal.SIGKILL)
    by = stages(tmp_path)
    assert by["train_bf16"]["status"] == "done" and by["train_bf16"]["results"]["losses"]
    if sig == signal.SIGTERM:
        assert by["train_fp16"]["status"] == "stopped" and "SIGTERM" in by["train_fp16"]["reason"]
        assert by["generate"]["status"] == "skipped"
        assert "| train_fp16 | stopped |" in (tmp_path / "out" / "gpu_check.md").read_text()
    else:
        assert by["train_fp16"]["status"] == "running" and "generate" not in by


@pytest.mark.parametrize("name", ["qwen2.5-1.5b", "llama-3-8b"])
def test_a_shape_quantised_in_memory_equals_the_same_weights_loaded_in_4bit(name, tmp_path):
    from transformers import AutoModelForCausalLM

    import bitsandbytes as bnb

    from mixdpo_kit.modeling.model import keep_cpu_4bit_differentiable, quantization_config

    folder = shapes.write_shape(name, tmp_path, tiny=True)
    full = shapes.materialise(folder, torch.device("cpu"), torch.float32, quantize=False)
    full.save_pretrained(tmp_path / "saved")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", quantization_config=quantization_config(torch.float32),
                                                  dtype=torch.float32, device_map={"": "cpu"})
    keep_cpu_4bit_differentiable(loaded)  # as the kit loads it (materialise does the same)
    built = shapes.materialise(folder, torch.device("cpu"), torch.float32, quantize=True, quant_storage=torch.float32)
    kinds = lambda m: [(n, type(x).__name__) for n, x in m.named_modules() if isinstance(x, torch.nn.Linear)]  # noqa: E731
    assert kinds(built) == kinds(loaded) and any(isinstance(x, bnb.nn.Linear4bit) for x in built.modules())
    assert type(built.lm_head) is torch.nn.Linear and built.is_loaded_in_4bit
    ids = torch.randint(7, 1990, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(built(ids).logits, loaded(ids).logits, rtol=0, atol=1e-5)
        # 4-bit really happened: the same weights unquantised give other logits
        assert (full(ids).logits - built(ids).logits).abs().max() > 1e-3


def test_a_memory_history_is_summarised_at_its_peak_by_the_code_that_allocated_it():
    frames = lambda *names: [{"filename": f"/site-packages/{n}", "line": 1, "name": "f"} for n in names]  # noqa: E731
    mib = 2 ** 20
    trace = [{"action": "alloc", "addr": 1, "size": 100 * mib, "frames": frames("torch/nn/functional.py",
                                                                                  "mixdpo_kit/modeling/logprobs.py")},
             {"action": "alloc", "addr": 2, "size": 50 * mib, "frames": frames("trl/trainer/dpo_trainer.py")},
             {"action": "free_requested", "addr": 1, "size": 100 * mib},
             {"action": "free_completed", "addr": 1, "size": 100 * mib},
             {"action": "alloc", "addr": 3, "size": 200 * mib, "frames": frames("mixdpo_kit/modeling/logprobs.py")},
             {"action": "alloc", "addr": 4, "size": 10 * mib, "frames": frames("x/y.py")},
             {"action": "free_completed", "addr": 3, "size": 200 * mib}]
    summary = gpu_qlora.summarise_snapshot({"device_traces": [trace]}, top=2)
    # The peak is after the fourth allocation: 50 + 200 + 10 MiB alive (the first block was freed).
    assert summary["step_peak_gib"] * 1024 == pytest.approx(260)
    assert summary["by_site"] == [{"site": "mixdpo_kit/modeling/logprobs.py:f", "gib": 200 / 1024},
                                  {"site": "trl/trainer/dpo_trainer.py:f", "gib": 50 / 1024},
                                  {"site": "other", "gib": 10 / 1024}]
    # The innermost frame wins: a block allocated in torch on behalf of the kit is torch's.
    assert gpu_qlora.allocation_site(frames("torch/nn/functional.py", "mixdpo_kit/a.py")) == "torch/nn/functional.py:f"


def test_fp16_is_close_only_when_every_number_is_finite_and_near_bf16():
    bf16 = {"losses": [0.69, 0.68], "ref_chosen_logps": {"0": -100.0, "1": -200.0}}
    near = {"losses": [0.691, 0.68], "ref_chosen_logps": {"0": -100.5, "1": -200.0, "7": -1.0}}
    got = gpu_check.compare_precisions(bf16, near)
    assert got["close"] and got["pairs_compared"] == 2 and got["max_ref_logp_rel_diff"] == pytest.approx(0.005)
    assert not gpu_check.compare_precisions(bf16, {**near, "ref_chosen_logps": {"0": -102.0}})["close"]
    nan = gpu_check.compare_precisions(bf16, {**near, "losses": [float("nan"), 0.68]})
    assert not nan["finite"] and not nan["close"]


def test_the_docs_give_each_stage_the_estimate_the_script_uses():
    text = (ROOT / "docs" / "benchmarks.md").read_text().splitlines()
    for stage in gpu_check.STAGES:
        row = next((line for line in text if line.startswith(f"| `{stage.name}` |")), None)
        assert row is not None and row.endswith(f"| {stage.gpu_s:.0f} s |"), (stage.name, row)
