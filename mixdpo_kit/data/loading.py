"""Load preference data from anywhere and normalise it to one schema.

Canonical columns: ``row_id`` (index in the source), ``prompt`` (a list of chat messages, or a
plain string for non-conversational data), ``chosen`` and ``rejected`` (the response texts),
and, when the source has them, ``score_chosen`` / ``score_rejected``.

Accepted inputs: UltraFeedback-binarized (message lists that repeat the prompt, plus scores),
TRL's standard and conversational formats with an explicit prompt, TRL's implicit-prompt
format (chosen/rejected conversations sharing the prompt turns), and HH-RLHF transcripts.
Every row that is dropped is counted under its reason in a :class:`DataReport`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets

from mixdpo_kit.data import synthetic

REQUIRED = ("chosen", "rejected")
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".gz": "json", ".parquet": "parquet", ".csv": "csv"}
HH_ASSISTANT = "\n\nAssistant:"


class DataError(ValueError):
    """Preference data that cannot be used, with what is wrong and where."""


# Real data that ships with the kit, by name (data/<folder>/, with its licence and source beside it).
SAMPLES = {"ultrafeedback-sample": "ultrafeedback-sample/ultrafeedback-binarized-sample.jsonl.gz"}
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


def sample_path(name: str) -> Path:
    """A shipped sample's file: in a source checkout the committed one; in an installed package
    (e.g. on Colab) a copy fetched once from the repository into the user cache."""
    local = DATA_DIR / SAMPLES[name]
    if local.exists():
        return local
    cache = Path.home() / ".cache" / "mixdpo_kit" / SAMPLES[name]
    if not cache.exists():
        import importlib.metadata
        import urllib.request

        urls = dict(u.split(", ", 1) for u in importlib.metadata.metadata("mixdpo-kit").get_all("Project-URL") or [])
        repo = urls.get("Repository", "").removeprefix("https://github.com/")
        url = f"https://raw.githubusercontent.com/{repo}/main/data/{SAMPLES[name]}"
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            urllib.request.urlretrieve(url, cache.with_suffix(".part"))
        except OSError as err:
            raise DataError(f"{name}: not in this installation and not downloadable from {url} ({err})") from None
        cache.with_suffix(".part").rename(cache)
    return cache


@dataclass
class DataReport:
    """What happened to every row: read, kept, dropped (by reason, with example row ids)."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_examples: dict[str, list[int]] = field(default_factory=dict)
    truncated: int = 0
    score_inversions: dict[str, int] = field(default_factory=dict)  # chosen score < rejected: kept / swapped
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, row_id: int) -> None:
        """Count one dropped row under ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        examples = self.dropped_examples.setdefault(reason, [])
        if len(examples) < 10:
            examples.append(int(row_id))

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, including the dropped total."""
        return {**asdict(self), "rows_dropped": self.rows_dropped}


def read_source(source: str | datasets.Dataset, split: str | None = None) -> datasets.Dataset:
    """Read raw rows from a Dataset, the built-in task, a local file, or a hub dataset."""
    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, datasets.DatasetDict):
        raise DataError(f"got a DatasetDict with splits {list(source)}; pass one split")
    if source == "builtin":
        return _read_local(synthetic.builtin_path(split or "train_prefs"))
    if source in SAMPLES:
        # The sample's texts are chat turns (an UltraFeedback instruction and two answers to it), as the
        # hub's message lists have them: in TRL's conversational form a chat model sees them through its template.
        return _read_local(sample_path(source)).map(lambda row: {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            **{k: [{"role": "assistant", "content": row[k]}] for k in ("chosen", "rejected")}})
    path = Path(source)
    if path.exists():
        return _read_local(path)
    if path.suffix.lower() in FILE_BUILDERS:
        raise DataError(f"data file not found: {source}")
    return datasets.load_dataset(source, split=split or "train")


def _read_local(path: Path) -> datasets.Dataset:
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass one data file ({', '.join(sorted(FILE_BUILDERS))})")
    suffix = path.suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {sorted(FILE_BUILDERS)}")
    builder = FILE_BUILDERS[suffix]
    # datasets' own messages for these cases name neither the file nor the problem.
    if builder == "json":
        read_records(path)  # a malformed line, a truncated gzip, a non-object row: named here
    elif builder == "csv":
        lines = sum(1 for line in path.read_text().splitlines() if line.strip())
        if lines == 0:
            raise DataError(f"{path}: the file is empty")
        if lines == 1:
            raise DataError(f"{path}: only a header line, no data rows")
    ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    if len(ds) == 0:
        raise DataError(f"{path}: no data rows")
    return ds


def read_records(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file or of a JSON list, gzipped or not, each a JSON object. Bad
    input is a one-line :class:`DataError` naming the file and the line or row: a malformed line,
    a gzip stream that ends early, a JSON document that is not a list, a row that is not an object."""
    import gzip
    import zlib

    path = Path(path)
    lines: list[str] = []
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as f:
            for line in f:
                lines.append(line)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: the gzip data breaks off after line {len(lines)} ({err}); a truncated "
                        "download?") from None
    text = "".join(lines)
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    rows = _json_document(path, text) if text.lstrip().startswith("[") else []
    for number, line in enumerate([] if rows else lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if rows:  # a bad line in JSON lines
                raise DataError(f"{path}: line {number} is not valid JSON ({err.msg}): {line[:80]!r}") from None
            rows = _json_document(path, text)  # one JSON document over several lines
            break
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {number} is a {type(row).__name__}, not a JSON object")
    return rows


def _json_document(path: Path, text: str) -> list:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: line {err.lineno} is not valid JSON ({err.msg})") from None
    if not isinstance(value, list):
        keys = f" with keys {sorted(value)[:6]}" if isinstance(value, dict) else ""
        raise DataError(f"{path}: a JSON {type(value).__name__}{keys}, not a list of rows (a JSON list or one JSON "
                        "object per line)")
    return value


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _split_conversation(chosen: list, rejected: list) -> tuple[list, str, str] | None:
    """Shared prompt turns plus the final assistant texts, or None when they do not share them."""
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    if chosen[:-1] != rejected[:-1]:
        return None
    return [dict(role=m["role"], content=m["content"]) for m in chosen[:-1]], chosen[-1]["content"], rejected[-1]["content"]


def split_hh_transcripts(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """HH-RLHF: prompt = shared text up to and including the last ``Assistant:`` turn marker."""
    cut = chosen.rfind(HH_ASSISTANT)
    if cut < 0:
        return None
    prefix = chosen[: cut + len(HH_ASSISTANT)]
    if not rejected.startswith(prefix):
        return None
    return prefix, chosen[len(prefix):].strip(), rejected[len(prefix):].strip()


def _score(value: Any) -> float | None:
    """A finite float, or None when the value is missing, non-numeric or not finite."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def normalise_row(row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """One raw row → a canonical row, or ``(None, reason)`` when it cannot be used."""
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if _is_messages(chosen) and _is_messages(rejected):
        if _is_messages(prompt):  # TRL conversational with an explicit prompt
            if chosen and chosen[-1]["role"] == "assistant" and rejected and rejected[-1]["role"] == "assistant" \
                    and len(chosen) == 1 and len(rejected) == 1:
                prompt_msgs, c, r = [dict(role=m["role"], content=m["content"]) for m in prompt], \
                    chosen[0]["content"], rejected[0]["content"]
            else:
                return None, "chosen/rejected are not a single assistant turn"
        else:  # implicit prompt (UltraFeedback-binarized repeats the prompt inside the messages)
            parts = _split_conversation(chosen, rejected)
            if parts is None:
                return None, "chosen and rejected conversations do not share the prompt turns"
            prompt_msgs, c, r = parts
        new_prompt: Any = prompt_msgs
    elif isinstance(chosen, str) and isinstance(rejected, str):
        if isinstance(prompt, str):
            new_prompt, c, r = prompt, chosen, rejected
        elif prompt is None:
            parts = split_hh_transcripts(chosen, rejected)
            if parts is None:
                return None, "no shared prompt prefix ending in 'Assistant:' (HH-RLHF format)"
            new_prompt, c, r = parts
        else:
            return None, "prompt is neither text nor a message list"
    else:
        return None, "chosen/rejected are neither text nor message lists"
    if not str(c).strip() or not str(r).strip():
        return None, "empty response"
    if c == r:
        return None, "chosen identical to rejected"
    out = {"prompt": new_prompt, "chosen": c, "rejected": r}
    for key in ("score_chosen", "score_rejected"):
        if key in row:
            out[key] = _score(row[key])
            if out[key] is None:
                return None, "missing, non-numeric or non-finite score"
    return out, None


SCORE_ORDER_POLICIES = ("keep", "swap", "drop")


def _apply_score_order(out: dict, policy: str, report: DataReport, row_id: int) -> dict | None:
    """Handle a pair whose chosen score is below its rejected score, per ``policy`` (counted)."""
    if out.get("score_chosen") is None or out.get("score_rejected") is None or out["score_chosen"] >= out["score_rejected"]:
        return out
    if policy == "drop":
        report.drop("chosen score below rejected score", row_id)
        return None
    report.score_inversions[policy] = report.score_inversions.get(policy, 0) + 1
    if policy == "swap":
        out = {**out, "chosen": out["rejected"], "rejected": out["chosen"],
               "score_chosen": out["score_rejected"], "score_rejected": out["score_chosen"]}
    return out


def normalise(raw: datasets.Dataset, source_name: str = "dataset", max_rows: int | None = None,
              score_order: str = "keep", keep_columns: tuple[str, ...] = ()) -> tuple[datasets.Dataset, DataReport]:
    """Validate and normalise raw rows; returns the canonical dataset and its report.

    ``score_order``: what to do when the chosen score is below the rejected one — ``keep`` the
    label as given, ``swap`` the two responses, or ``drop`` the pair; each case is counted.
    ``keep_columns``: extra numeric columns to carry (e.g. a precomputed margin); a row whose
    value is missing or not a finite number is dropped and counted.
    Raises :class:`DataError` when required columns are missing or nothing usable is left.
    """
    if score_order not in SCORE_ORDER_POLICIES:
        raise DataError(f"score_order must be one of {SCORE_ORDER_POLICIES}, got {score_order!r}")
    missing = [c for c in (*REQUIRED, *keep_columns) if c not in raw.column_names]
    if missing:
        raise DataError(f"{source_name}: missing required column(s) {missing}; columns found: {raw.column_names}")
    if max_rows is not None:
        raw = raw.select(range(min(max_rows, len(raw))))
    report = DataReport(source=source_name, rows_read=len(raw))
    rows = []
    seen = set()
    for row_id, row in enumerate(raw):
        out, reason = normalise_row(row)
        for column in keep_columns:
            if out is not None:
                value = _score(row[column])
                out, reason = (None, f"missing or non-numeric value in column {column!r}") if value is None \
                    else ({**out, column: value}, None)
        if out is not None:
            key = json.dumps([out["prompt"], out["chosen"], out["rejected"]], sort_keys=True)
            if key in seen:
                out, reason = None, "exact duplicate pair"
            seen.add(key)
        if out is None:
            report.drop(reason, row_id)
            continue
        out = _apply_score_order(out, score_order, report, row_id)
        if out is not None:
            rows.append({"row_id": row_id, **out})
    report.rows_kept = len(rows)
    if not rows:
        raise DataError(f"{source_name}: no usable rows left out of {report.rows_read}; dropped {report.dropped}")
    if len({type(r["prompt"]) for r in rows}) > 1:
        raise DataError(f"{source_name}: mixes conversational and plain-text prompts; use one format per dataset")
    return datasets.Dataset.from_list(rows), report


def load_preferences(source: str | datasets.Dataset, split: str | None = None, max_rows: int | None = None,
                     **normalise_kwargs) -> tuple[datasets.Dataset, DataReport]:
    """Read and normalise preference pairs; see the module docstring for the formats and
    :func:`normalise` for the options."""
    name = source if isinstance(source, str) else "in-memory dataset"
    if isinstance(source, str) and split and not Path(source).exists():
        name = f"{source}:{split}"
    return normalise(read_source(source, split), name, max_rows=max_rows, **normalise_kwargs)


def is_conversational(ds: datasets.Dataset) -> bool:
    """True when prompts are chat message lists (rendered with the tokenizer's chat template)."""
    return len(ds) > 0 and isinstance(ds[0]["prompt"], list)


def load_demonstrations(source: str, split: str = "sft") -> datasets.Dataset:
    """SFT demonstrations (``messages`` ending in an assistant turn) in the canonical schema.

    ``rejected`` is empty: these rows are only ever routed to SFT.
    """
    raw = read_source(source, split)
    rows = []
    for row_id, row in enumerate(raw):
        msgs = row["messages"]
        if not _is_messages(msgs) or not msgs or msgs[-1]["role"] != "assistant":
            raise DataError(f"{source}:{split} row {row_id}: 'messages' must end with an assistant turn")
        rows.append({"row_id": row_id, "prompt": msgs[:-1], "chosen": msgs[-1]["content"], "rejected": ""})
    return datasets.Dataset.from_list(rows)
