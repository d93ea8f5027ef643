"""MixDPO from a TRL-style script: ``MixDPOConfig`` (TrainingArguments + the kit's settings, from
RunConfig) and ``MixDPOTrainer`` (model object or name, tokenizer, any preference dataset, a
LoraConfig) train what ``mixdpo-kit train`` trains, to the same numbers."""
import dataclasses
import json
import math
import typing

import datasets
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, HfArgumentParser, TrainerCallback
from transformers import TrainingArguments

from mixdpo_kit import MixDPOConfig, MixDPOTrainer
from mixdpo_kit.core.config import RunConfig, preset
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.data.synthetic import builtin_path
from mixdpo_kit.interface.cli import main
from mixdpo_kit.reports.results import read_summary
from mixdpo_kit.training.trl_style import KIT_FIELDS

STEPS, BATCH, ROWS = 4, 4, 48


def test_the_config_is_training_arguments_with_runconfigs_settings_defaults_and_help():
    assert issubclass(MixDPOConfig, TrainingArguments)
    fields = {f.name: f for f in dataclasses.fields(MixDPOConfig)}
    for name, (section, key) in KIT_FIELDS.items():
        source = {f.name: f for f in dataclasses.fields(typing.get_type_hints(RunConfig)[section])}[key]
        default = source.default if source.default is not dataclasses.MISSING else source.default_factory()
        ours = fields[name].default if fields[name].default is not dataclasses.MISSING else fields[name].default_factory()
        assert ours == default and fields[name].metadata["help"] == source.metadata["help"], name
    args = MixDPOConfig(output_dir="out")
    run = args.to_run_config()
    assert (run.split.tau, run.loss.objective, run.margins.source) == (0.5, "mixdpo", "data")
    assert run.loss.params["beta"] == 0.01 and run.loss.params["label_smoothing"] == 0.1  # mixdpo's own (the paper's)
    assert args.learning_rate == run.train.learning_rate == RunConfig().train.learning_rate  # the kit's, not 5e-5
    # A command line the way TRL scripts parse theirs.
    parsed, = HfArgumentParser(MixDPOConfig).parse_args_into_dataclasses(
        ["--output_dir", "o", "--tau", "3", "--margin_source", "ratings", "--beta", "0.2", "--order", "random"])
    run = parsed.to_run_config()
    assert (run.split.tau, run.margins.source, run.loss.params["beta"], run.curriculum.order) == (3.0, "ratings", 0.2,
                                                                                                  "random")


def _builtin_rows(n: int) -> datasets.Dataset:
    """The built-in task's first rows as a user would load them: its own file, TRL's conversational
    format with UltraFeedback-style scores."""
    return datasets.Dataset.from_json(str(builtin_path("train_prefs"))).select(range(n))


def _kit_config(model_path: str, out, cache) -> RunConfig:
    return preset("demo").override(
        model={"name_or_path": model_path}, sft_warmup={"enabled": False}, data={"max_rows": ROWS},
        loss={"beta": 0.1, "label_smoothing": 0.1}, split={"tau": 2.0},
        eval={"max_pairs": 8, "reward_prompts": 4, "n_generations": 1, "max_new_tokens": 4},
        train={"per_device_train_batch_size": BATCH, "max_steps": STEPS, "logging_steps": 1, "save_steps": 1000,
               "learning_rate": 1e-3, "output_dir": str(out)}, cache={"dir": str(cache)})


def _user_args(tmp_path, **extra) -> MixDPOConfig:
    settings = dict(output_dir=str(tmp_path / "trl_out"), beta=0.1, label_smoothing=0.1, tau=2.0, seed=0,
                    max_length=64, max_prompt_length=32, per_device_train_batch_size=BATCH, max_steps=STEPS,
                    logging_steps=1, save_steps=1000, learning_rate=1e-3, cache_dir=str(tmp_path / "trl_cache"),
                    use_cpu=True)  # the kit's demo settings, as _kit_config has them
    return MixDPOConfig(**{**settings, **extra})


def _four_bit(path: str):
    """The model as a TRL user loads it for QLoRA: their own BitsAndBytesConfig."""
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=q, device_map={"": "cpu"},
                                                dtype=torch.float32)


LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def test_same_numbers_as_mixdpo_kit_train(tiny_llama, tmp_path):
    """The kit's own command and a script with a 4-bit model, a LoraConfig and the pairs as a
    Dataset: the same losses and route metrics per step, route counts, learning-rate mass and
    reference log-probs (within 1e-5)."""
    cfg = _kit_config(tiny_llama, tmp_path / "kit", tmp_path / "kit_cache")
    cfg.to_yaml(tmp_path / "kit.yaml")
    assert main(["train", "--config", str(tmp_path / "kit.yaml")]) == 0
    kit_logs = [json.loads(line) for line in (tmp_path / "kit" / "metrics.jsonl").read_text().splitlines()]
    kit_logs = [r for r in kit_logs if "loss" in r]
    kit_summary = read_summary(tmp_path / "kit")
    kit_report = json.loads((tmp_path / "kit" / "data_report.json").read_text())
    stored, = (tmp_path / "kit_cache" / "reference").glob("*.json")
    kit_ref = json.loads(stored.read_text())

    trainer = MixDPOTrainer(model=_four_bit(tiny_llama), args=_user_args(tmp_path), train_dataset=_builtin_rows(ROWS),
                            processing_class=AutoTokenizer.from_pretrained(tiny_llama), peft_config=LoraConfig(**LORA))
    assert trainer.policy.config.mode == "qlora" and trainer.policy.dtype == torch.float32  # read from the object
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert [r["step"] for r in logs] == [r["step"] for r in kit_logs] == list(range(1, STEPS + 1))
    keys = ("loss", "loss/preference", "loss/sft", "route/sft_fraction", "rewards/margin", "logps/chosen")
    for ours, kit in zip(logs, kit_logs):
        assert set(k for k in keys if k in kit) == set(k for k in keys if k in ours)
        for key in keys:
            if key in kit:
                assert ours[key] == pytest.approx(kit[key], abs=1e-5), (ours["step"], key)
    split = trainer.prepared.split
    assert (split.n_hard, split.n_easy) == (kit_report["split"]["n_hard"], kit_report["split"]["n_easy"]) != (0, 0)
    assert dataclasses.asdict(trainer.lr_mass()) == pytest.approx(dataclasses.asdict(kit_summary.lr_mass), abs=1e-9)
    ref_c, ref_r = trainer.train_dataset["ref_chosen_logps"], trainer.train_dataset["ref_rejected_logps"]
    needed = [i for i, c in enumerate(ref_c) if not math.isnan(c)]
    assert needed and sorted(map(int, kit_ref)) == needed
    assert np.allclose([ref_c[i] for i in needed], [kit_ref[str(i)][0] for i in needed], atol=1e-5, rtol=0)
    assert np.allclose([ref_r[i] for i in needed], [kit_ref[str(i)][1] for i in needed], atol=1e-5, rtol=0)


def test_a_peft_model_trains_as_is_and_the_trainer_behaves_as_transformers_trainer(tiny_llama, tmp_path):
    """A PeftModel the user made keeps its adapter; evaluate reports the held-out routed loss;
    callbacks hear the run; save_model writes the adapter; a run resumed from its checkpoint ends
    where an uninterrupted one does."""
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32), LoraConfig(**LORA))
    adapter = model.peft_config["default"]
    heard = []

    class Heard(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            heard.append(dict(logs or {}))

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    pairs = _builtin_rows(ROWS)
    args = _user_args(tmp_path, save_steps=2, eval_strategy="no")
    trainer = MixDPOTrainer(model=model, args=args, train_dataset=pairs, eval_dataset=_builtin_rows(60).select(
        range(48, 60)), processing_class=tok, callbacks=[Heard()])
    assert trainer.model is model and trainer.model.peft_config["default"] is adapter
    assert trainer.policy.config.mode == "lora"
    trainer.train()
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0
    assert any("loss/preference" in h for h in heard)
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "adapter_model.safetensors").exists()
    final = [r["loss"] for r in trainer.state.log_history if "loss" in r]

    again = MixDPOTrainer(model=get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
                                               LoraConfig(**LORA)),
                          args=_user_args(tmp_path, save_steps=2, output_dir=str(tmp_path / "trl_out")),
                          train_dataset=pairs, processing_class=tok)
    again.train(resume_from_checkpoint=str(tmp_path / "trl_out" / "checkpoint-2"))
    resumed = [r["loss"] for r in again.state.log_history if "loss" in r]
    assert len(final) == STEPS and resumed == pytest.approx(final, abs=1e-5)  # steps 1-2 from the checkpoint, 3-4 trained again


def test_what_a_model_object_cannot_do_is_said(tiny_llama, tmp_path):
    with pytest.raises(UserError, match="trains only through an adapter"):
        MixDPOTrainer(model=_four_bit(tiny_llama), args=_user_args(tmp_path), train_dataset=_builtin_rows(8),
                      processing_class=AutoTokenizer.from_pretrained(tiny_llama))
    from trl import DPOConfig

    with pytest.raises(UserError, match="takes a MixDPOConfig"):
        MixDPOTrainer(model=tiny_llama, args=DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False),
                      train_dataset=_builtin_rows(8))



def test_the_docs_switch_a_trl_script_in_a_few_lines_and_both_scripts_train(tiny_llama, tmp_path):
    """docs/trl.md shows a TRL DPOTrainer script and the same script on MixDPO: they differ only in
    the import, the config class (plus τ and a margin source) and the trainer class, the page quotes
    those lines as the scripts have them, and both scripts train on the tiny model and the shipped sample."""
    import difflib
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mixdpo_kit.data.shipped import sample_path
    from mixdpo_kit.training.trl_style import LOSS_FIELDS

    root = Path(__file__).resolve().parents[2]
    scripts = {name: (root / "docs" / "examples" / f"{name}.py").read_text() for name in ("dpo_trl", "dpo_mixdpo")}
    code = {name: text.split('"""', 2)[2] for name, text in scripts.items()}  # after the docstring
    changed = [line[2:] for line in difflib.ndiff(code["dpo_trl"].splitlines(), code["dpo_mixdpo"].splitlines())
               if line[:2] in ("- ", "+ ")]
    assert changed and all(line.startswith(("from trl", "from mixdpo_kit", "args =", "trainer =", "  ")) for line in changed)
    assert len(changed) == 12, changed  # import, config (3 lines), trainer (2 lines), each side
    doc = (root / "docs" / "trl.md").read_text()
    for line in changed:
        assert line in doc, line
    for name in [*KIT_FIELDS, *LOSS_FIELDS, "loss_params"]:
        assert f"`{name}`" in doc, name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in scripts:
        out = tmp_path / name
        done = subprocess.run([sys.executable, str(root / "docs" / "examples" / f"{name}.py"), tiny_llama,
                               str(sample_path("ultrafeedback-sample")), str(out), "1"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (out / "adapter_model.safetensors").exists(), name


def test_the_compute_dtype_is_read_from_the_model_object():
    from types import SimpleNamespace

    from mixdpo_kit.modeling.model import is_quantized, model_compute_dtype

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    four_bit = SimpleNamespace(config=SimpleNamespace(quantization_config=q), is_loaded_in_4bit=True)
    assert model_compute_dtype(four_bit) == torch.bfloat16 and is_quantized(four_bit)
    saved = SimpleNamespace(config=SimpleNamespace(quantization_config={"bnb_4bit_compute_dtype": "float16"}))
    assert model_compute_dtype(saved) == torch.float16 and not is_quantized(saved)
    plain = torch.nn.Linear(2, 2).to(torch.bfloat16)
    assert model_compute_dtype(plain) == torch.bfloat16
