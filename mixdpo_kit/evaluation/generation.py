"""Generate answers to a prompt set, resumably, and export them for AlpacaEval and Arena-Hard.

``generate_answers(model, tokenizer, prompts, out, generator, decoding)`` writes three files:

- ``out`` (e.g. ``answers/mixdpo.json``): AlpacaEval's ``model_outputs`` format, a JSON list of
  ``{"instruction", "output", "generator", "dataset", "decoding"}`` (``decoding`` is a JSON string,
  so AlpacaEval keeps it as an ordinary column) — pass it to ``alpaca_eval --model_outputs``;
- ``<out's folder>/model_answer/<generator>.jsonl``: Arena-Hard-Auto's answer file (v0.1 layout,
  or v2.0 when the questions carry a ``uid``) — copy it into ``data/<bench>/model_answer/``;
- ``<out>.generations.jsonl``: the kit's own record and the resume point. Its first line holds
  the generator, the model and the decoding settings; each later line one answer. Answers are
  appended after every batch, so an interrupted run loses at most the batch in flight, and a
  rerun with the same settings generates only what is missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mixdpo_kit.core.config import JudgeConfig
from mixdpo_kit.core.distributed import map_shared, on_main, process_state
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.core.progress import bar
from mixdpo_kit.evaluation.evaluate import generate


@dataclass(frozen=True)
class Decoding:
    """Decoding settings, recorded with every answer. Greedy unless ``do_sample``."""

    max_new_tokens: int = JudgeConfig.max_new_tokens  # the one default: an answer a judge reads
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0  # sampling: batch k is seeded with seed + k's first prompt position
    chat_template: bool = True  # False: the instruction is fed as plain text

    def generate_kwargs(self) -> dict:
        """Keyword arguments for ``model.generate`` beyond max_new_tokens."""
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p} if self.do_sample else {}


def record_path(out: str | Path) -> Path:
    """The resumable record kept beside the AlpacaEval file ``out``."""
    return Path(f"{out}.generations.jsonl")


def arena_hard_path(out: str | Path, generator: str) -> Path:
    """Where the Arena-Hard answer file of ``generator`` is written, beside ``out``."""
    return Path(out).parent / "model_answer" / f"{generator}.jsonl"


def generate_answers(model, tokenizer, prompts: list[dict], out: str | Path, generator: str, decoding: Decoding,
                     batch_size: int = JudgeConfig.batch_size, model_info: dict | None = None) -> list[dict]:
    """Answer every prompt row (see :mod:`mixdpo_kit.data.prompt_sets`) and write the exports; resumes
    from ``<out>.generations.jsonl`` when it was made with the same generator, model and settings.
    Returns the answer rows in prompt order."""
    header = {"generator": generator, "model": model_info or {}, "decoding": asdict(decoding)}
    record = record_path(out)
    done = on_main(_read_record, record, header)  # every process: the answers already there
    for p in prompts:
        if p["id"] in done and done[p["id"]]["instruction"] != p["instruction"]:
            raise UserError(f"{record}: prompt {p['id']!r} was answered for a different instruction; "
                            "use another --out for another prompt set")
    todo = [(i, p) for i, p in enumerate(prompts) if p["id"] not in done]
    # Longest prompts first: little padding per batch, and an out-of-memory shows at once.
    todo.sort(key=lambda ip: -len(ip[1]["instruction"]))
    batches = [todo[k: k + batch_size] for k in range(0, len(todo), batch_size)]
    # Under several processes each answers one batch of a round; the main process appends the round.
    n = process_state().num_processes
    rounds = [batches[k: k + n] for k in range(0, len(batches), n)]
    with bar(rounds, f"answers of {generator}", leave=True, total=len(rounds)) as progress:
        for batches_now in progress:
            answered = map_shared(lambda share: [_answer_batch(model, tokenizer, b, generator, decoding)
                                                 for b in share], batches_now)
            rows = [row for batch_rows in answered for row in batch_rows]
            on_main(_append, record, rows)
            done.update((r["id"], r) for r in rows)
    answers = [done[p["id"]] for p in prompts]
    on_main(write_alpaca_eval, out, answers, decoding)
    on_main(write_arena_hard, arena_hard_path(out, generator), answers)
    return answers


def _answer_batch(model, tokenizer, batch: list[tuple[int, dict]], generator: str, decoding: Decoding) -> list[dict]:
    """Answer rows of one batch of (position, prompt row)."""
    if decoding.do_sample:
        torch.manual_seed(decoding.seed + batch[0][0])
    inputs = [[{"role": "user", "content": p["instruction"]}] if decoding.chat_template else p["instruction"]
              for _, p in batch]
    texts = generate(model, tokenizer, inputs, _room(model, tokenizer, inputs, decoding.max_new_tokens),
                     len(batch), **decoding.generate_kwargs())
    return [{"id": p["id"], "instruction": p["instruction"], "output": text, "generator": generator,
             "dataset": p["dataset"], "id_field": p["id_field"], "category": p["category"],
             "token_len": len(tokenizer(text, add_special_tokens=False)["input_ids"]), "tstamp": time.time()}
            for (_, p), text in zip(batch, texts)]


def _room(model, tokenizer, inputs, max_new_tokens: int) -> int:
    """``max_new_tokens``, or fewer where the model's context ends sooner (it cannot go past it)."""
    from mixdpo_kit.data.tokenization import render_prompt

    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit:
        return max_new_tokens
    longest = max(len(tokenizer(render_prompt(tokenizer, x), add_special_tokens=False)["input_ids"]) for x in inputs)
    return max(1, min(max_new_tokens, limit - longest - 1))


def _read_record(path: Path, header: dict) -> dict[str, dict]:
    """The answers already in the record (a new record is started when there is none)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(header) + "\n")
        return {}
    raw = path.read_bytes()
    # A run killed while writing leaves a partial last line: cut it, so appends start clean.
    end = raw.rfind(b"\n") + 1
    if end < len(raw):
        with path.open("r+b") as f:
            f.truncate(end)
    lines = raw[:end].decode().splitlines()
    if not lines:  # killed before the header was whole
        path.write_text(json.dumps(header) + "\n")
        return {}
    stored = json.loads(lines[0])
    if stored != json.loads(json.dumps(header)):
        diff = {k: (stored.get(k), header[k]) for k in header if stored.get(k) != header[k]}
        raise UserError(f"{path} was made with other settings {diff} (stored, asked); use another --out "
                        "or delete it to start again")
    return {row["id"]: row for row in map(json.loads, lines[1:])}


def _append(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def write_alpaca_eval(out: str | Path, answers: list[dict], decoding: Decoding) -> Path:
    """AlpacaEval ``model_outputs``: a JSON list with instruction, output, generator, dataset."""
    settings = json.dumps(asdict(decoding), sort_keys=True)
    rows = [{"instruction": a["instruction"], "output": a["output"], "generator": a["generator"],
             "dataset": a["dataset"], "decoding": settings} for a in answers]
    Path(out).write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    return Path(out)


def write_arena_hard(path: str | Path, answers: list[dict]) -> Path:
    """An Arena-Hard-Auto answer file: v2.0 rows (``uid``, ``ans_id``, ``model``, ``messages``) for
    questions with a uid, else v0.1 rows (``question_id``, ``answer_id``, ``model_id``, ``choices``).
    ``token_len`` counts the generator's tokens (Arena-Hard's own scripts count tiktoken's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for a in answers:
        answer_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{a['generator']}/{a['id']}").hex[:22]  # stable across rewrites
        if a["id_field"] == "uid":
            row = {"uid": a["id"], "ans_id": answer_id, "model": a["generator"],
                   "messages": [{"role": "user", "content": a["instruction"]},
                                {"role": "assistant", "content": {"answer": a["output"]}}],
                   "tstamp": a["tstamp"], "metadata": {"token_len": a["token_len"]}}
        else:
            row = {"question_id": a["id"], "answer_id": answer_id, "model_id": a["generator"],
                   "choices": [{"index": 0, "turns": [{"content": a["output"], "token_len": a["token_len"]}]}],
                   "tstamp": a["tstamp"], "conv_metadata": {"token_len": a["token_len"]}}
        lines.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_name(run: str | Path) -> str:
    """A run folder's name for answer files: ``mixdpo-seed0`` for ``.../mixdpo/seed0``."""
    path = Path(run).resolve()
    return f"{path.parent.name}-{path.name}" if path.name.startswith("seed") else path.name


def run_model_info(run: str | Path, policy, saved: Path | None) -> dict:
    """What identifies a run's answers in the record: the run, its reference model and, for the
    trained policy (``saved`` = its weights folder), the trained weights."""
    from mixdpo_kit.modeling.model import weights_fingerprint

    info = {"run": str(run), **policy.identity()}
    return info if saved is None else {**info, "trained_weights": weights_fingerprint(str(saved))}


@contextlib.contextmanager
def generator_model(run: str | Path | None = None, model: str | None = None, reference: bool = False):
    """Yields ``(model, tokenizer, generator name, model info)`` to generate with: a finished run's
    policy (adapter on), its reference (``reference=True``: adapter off, i.e. the SFT model it
    started from), or any model path or hub name (``model``)."""
    from mixdpo_kit.core.config import ModelConfig
    from mixdpo_kit.modeling.model import build_policy, load_trained_policy, weights_fingerprint

    if (run is None) == (model is None):
        raise UserError("give exactly one of a run folder (--run) or a model (--model)")
    if model is not None:
        policy = build_policy(ModelConfig(name_or_path=model, mode="full"), with_reference=False)
        yield policy.model, policy.tokenizer, Path(model).name, {"model": model, "weights": weights_fingerprint(model)}
        return
    _, saved, policy = load_trained_policy(run)
    if reference:
        with policy.reference() as ref:
            yield ref, policy.tokenizer, run_name(run) + "-reference", run_model_info(run, policy, None)
    else:
        yield policy.model, policy.tokenizer, run_name(run), run_model_info(run, policy, saved)


def answer_with_run_and_reference(run: str | Path, prompts: str, out_dir: str | Path, max_prompts: int | None = None,
                                  decoding: Decoding = Decoding(),
                                  batch_size: int = JudgeConfig.batch_size) -> tuple[Path, Path]:
    """A finished run's answers and its SFT model's (the same model, adapter off) to a prompt set,
    with one loaded model: ``(policy file, SFT file)`` in ``out_dir``. The same files as
    ``mixdpo-kit generate --run RUN [--reference]``, so either resumes the other."""
    from mixdpo_kit.modeling.model import load_trained_policy
    from mixdpo_kit.data.prompt_sets import load_prompts

    rows, out_dir, name = load_prompts(prompts, max_prompts), Path(out_dir), run_name(run)
    files = (out_dir / f"{name}.json", out_dir / f"{name}-reference.json")
    _, saved, policy = load_trained_policy(run)
    generate_answers(policy.model, policy.tokenizer, rows, files[0], name, decoding, batch_size,
                     run_model_info(run, policy, saved))
    with policy.reference() as ref:
        generate_answers(ref, policy.tokenizer, rows, files[1], f"{name}-reference", decoding, batch_size,
                         run_model_info(run, policy, None))
    return files


def export_commands(alpaca_eval_file: str | Path, generator: str) -> list[str]:
    """How to hand the answers to the official AlpacaEval 2 and Arena-Hard-Auto evaluations."""
    arena = arena_hard_path(alpaca_eval_file, generator)
    return [
        "# AlpacaEval 2 (needs OPENAI_API_KEY, paid; the LC win rate is its headline). weighted_alpaca_eval_gpt4_turbo",
        "# is its default GPT-4 Turbo judge; the paper's numbers used a GPT-4.1 judge (an annotator config naming gpt-4.1):",
        f"alpaca_eval --model_outputs {alpaca_eval_file} --annotators_config weighted_alpaca_eval_gpt4_turbo",
        "# Arena-Hard-Auto (answers must be on its questions: mixdpo-kit generate --prompts arena_hard ...):",
        f"cp {arena} <arena-hard-auto>/data/arena-hard-v0.1/model_answer/",
        f"# then add {generator} to model_list in its config/judge_config.yaml and run gen_judgment.py, show_result.py",
    ]
