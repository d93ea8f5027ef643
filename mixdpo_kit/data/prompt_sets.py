"""Prompt sets to generate on: AlpacaEval's 805 instructions, Arena-Hard's questions, the built-in
task's held-out prompts, or any JSONL/JSON file of prompts.

Every set becomes a list of prompt rows ``{"id", "instruction", "dataset", "id_field", "category"}``:
the id is the row's ``question_id`` / ``uid`` / ``prompt_id`` / ``id`` (else its position), and
``id_field`` says which of them an Arena-Hard answer file must carry (``uid`` for v2.0 questions,
``question_id`` otherwise).
"""
from __future__ import annotations

from pathlib import Path

from mixdpo_kit.core.errors import MissingFile
from mixdpo_kit.data.loading import DataError, read_records

# name -> (hub dataset repository, file in it, what it is). Read with huggingface_hub, so the
# files are cached like any hub download and no dataset loading script is needed.
HUB_PROMPT_SETS = {
    "alpaca_eval": ("tatsu-lab/alpaca_eval", "alpaca_eval.json", "AlpacaEval 2: 805 instructions"),
    "arena_hard": ("lmarena-ai/arena-hard-auto", "data/arena-hard-v0.1/question.jsonl",
                   "Arena-Hard-Auto v0.1: 500 questions"),
    "arena_hard_v2": ("lmarena-ai/arena-hard-auto", "data/arena-hard-v2.0/question.jsonl",
                      "Arena-Hard-Auto v2.0: 750 questions"),
}
BUILTIN_PROMPT_SET = "builtin"  # the built-in task's held-out prompts (offline; its true reward is known)
ID_FIELDS = ("question_id", "uid", "prompt_id", "id")


def prompt_set_names() -> list[str]:
    """The prompt sets known by name."""
    return [*HUB_PROMPT_SETS, BUILTIN_PROMPT_SET]


def load_prompts(name_or_file: str, limit: int | None = None) -> list[dict]:
    """The prompt rows of a named set or a JSONL/JSON file (the first ``limit`` of them)."""
    if name_or_file == BUILTIN_PROMPT_SET:
        from mixdpo_kit.data.synthetic import builtin_path

        rows, dataset = read_records(builtin_path("eval_prompts")), "builtin-eval"
    elif name_or_file in HUB_PROMPT_SETS:
        rows, dataset = read_records(_download(name_or_file)), name_or_file
        if name_or_file.startswith("arena_hard"):
            dataset = Path(HUB_PROMPT_SETS[name_or_file][1]).parent.name  # arena-hard-v0.1 / -v2.0
    elif Path(name_or_file).exists():
        rows, dataset = read_records(Path(name_or_file)), Path(name_or_file).stem
    else:
        raise MissingFile(f"{name_or_file!r} is neither a prompt file nor a known prompt set "
                          f"({', '.join(prompt_set_names())})")
    prompts = [_prompt_row(row, i, dataset, name_or_file) for i, row in enumerate(rows)]
    first_row: dict[str, int] = {}
    for number, p in enumerate(prompts, start=1):
        if p["id"] in first_row:
            raise DataError(f"{name_or_file}: row {number} repeats the id {p['id']!r} of row {first_row[p['id']]}")
        first_row[p["id"]] = number
    return prompts[:limit] if limit else prompts


def _download(name: str) -> Path:
    from huggingface_hub import hf_hub_download

    repo, filename, _ = HUB_PROMPT_SETS[name]
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset"))
    except Exception as err:  # offline, gated, moved: say what to do instead
        raise MissingFile(
            f"could not download prompt set {name!r} ({repo}/{filename}): {type(err).__name__}. Offline? "
            "Download that file on a machine with internet and pass its path to --prompts.") from err


def _prompt_row(row: dict, index: int, dataset: str, source: str) -> dict:
    """One prompt row from AlpacaEval (instruction[, input]), Arena-Hard v0.1 (turns) or v2.0
    (prompt), TRL-style conversations (prompt as messages) or a plain ``prompt``/``question`` field."""
    where = f"{source}: row {index + 1}"
    if "instruction" in row:
        text = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    elif "turns" in row:
        text = _single_turn([{"role": "user", "content": t["content"]} for t in row["turns"]], where)
    elif isinstance(row.get("prompt"), list):
        text = _single_turn(row["prompt"], where)
    elif "prompt" in row or "question" in row:
        text = row.get("prompt", row.get("question"))
    else:
        raise DataError(f"{where}: no prompt field (instruction, prompt, turns or question); it has {sorted(row)}")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: the prompt is empty or not text")
    id_field = next((f for f in ID_FIELDS if f in row), None)
    return {"id": str(row[id_field]) if id_field else str(index), "instruction": text,
            "dataset": row.get("dataset") or dataset, "id_field": "uid" if id_field == "uid" else "question_id",
            "category": row.get("category")}


def _single_turn(messages: list, where: str) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    if len(users) != 1 or messages[-1].get("role") != "user":
        raise DataError(f"{where}: a multi-turn prompt ({len(users)} user turns); only single-turn prompts "
                        "are supported")
    return users[0]["content"]
