"""Load preference data from anywhere and normalise it to one schema.

Canonical columns: ``row_id`` (the source row a pair came from), ``prompt`` (a list of chat
messages, or a plain string for non-conversational data), ``chosen`` and ``rejected`` (the
response texts), ``score_chosen`` / ``score_rejected`` when the source rates each response, and
``margin_<signal>`` when its format carries a margin of its own (a preference strength, a vote
ratio, a rank gap).

The format is recognised by the columns (or named, ``data.format``): TRL's standard and
conversational formats, UltraFeedback-binarized, HH-RLHF, Argilla's rated pairs, HelpSteer2/3,
SHP, PKU-SafeRLHF, Nectar, raw UltraFeedback, or any schema through a column map
(:mod:`mixdpo_kit.data.formats`). Every row that is dropped is counted under its reason in a
:class:`DataReport`.
"""
from __future__ import annotations

import hashlib
import json
import random
from itertools import chain
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets

from mixdpo_kit.core.errors import DataError
from mixdpo_kit.data import synthetic
from mixdpo_kit.data.formats import DataOptions, RowDrop, detect_format, is_messages, number
from mixdpo_kit.data.shipped import SAMPLES, sample_path

CANONICAL_TEXTS = ("prompt", "chosen", "rejected")
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".gz": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class DataReport:
    """What happened to every row: read, kept, dropped (by reason, with example row ids)."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0  # pairs kept (a K-wise row can make several)
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_examples: dict[str, list[int]] = field(default_factory=dict)
    truncated: int = 0
    score_inversions: dict[str, int] = field(default_factory=dict)  # chosen score < rejected: kept / swapped
    notes: list[str] = field(default_factory=list)
    format: str = ""  # the registered format the rows were read as
    format_title: str = ""  # that format in words, with its pairing and rating choices

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


def read_source(source: str | datasets.Dataset, split: str | None = None, subset: str | None = None,
                data_dir: str | None = None) -> datasets.Dataset:
    """Read raw rows from a Dataset, the built-in task, a local file, or a hub dataset (``subset``:
    its configuration, ``data_dir``: its folder, as ``datasets.load_dataset`` takes them)."""
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
    try:
        where = {key: value for key, value in (("name", subset), ("data_dir", data_dir)) if value}
        return datasets.load_dataset(source, split=split or "train", **where)
    except FileNotFoundError as err:  # datasets' DatasetNotFoundError: neither a file nor on the hub
        raise DataError(f"{source}: not a local file, and the hub has no such dataset ({err})") from None
    except ValueError as err:
        if "split" in str(err).lower():  # the kit's default split is UltraFeedback-binarized's train_prefs
            raise DataError(f"{source}: {err}; choose one with --split (data.split)") from None
        raise DataError(f"{source}: {err}") from None


def _read_local(path: Path) -> datasets.Dataset:
    if path.is_dir():
        raise DataError(f"{path}: is a directory; pass one data file ({', '.join(sorted(FILE_BUILDERS))})")
    suffix = path.suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {sorted(FILE_BUILDERS)}")
    builder = FILE_BUILDERS[suffix]
    # datasets' own messages for these cases name neither the file nor the problem.
    if builder == "json":
        for _ in iter_records(path):  # a malformed line, a truncated gzip, a non-object row: named here
            pass
    elif builder == "csv":
        lines = sum(1 for line in path.read_text().splitlines() if line.strip())
        if lines == 0:
            raise DataError(f"{path}: the file is empty")
        if lines == 1:
            raise DataError(f"{path}: only a header line, no data rows")
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # Arrow could not give a column one type: say where, not Arrow's message
        if builder == "json":
            mixed_type_check(path, iter_records(path))
        raise DataError(f"{path}: {builder} reader failed ({type(err).__name__}: {str(err)[:200]})") from None
    if len(ds) == 0:
        raise DataError(f"{path}: no data rows")
    return ds


def read_records(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines file or of a JSON list, gzipped or not, each a JSON object. Bad
    input is a one-line :class:`DataError` naming the file and the line or row: a malformed line,
    a gzip stream that ends early, a JSON document that is not a list, a row that is not an object."""
    return list(iter_records(path))


def iter_records(path: str | Path):
    """:func:`read_records` one row at a time: a JSON-lines file is never held whole in memory."""
    import gzip
    import zlib

    path = Path(path)
    read = 0
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as f:
            head: list[str] = []
            for line in f:  # up to the first line with content: a JSON list, or JSON lines
                read += 1
                head.append(line)
                if line.strip():
                    break
            if not "".join(head).strip():
                raise DataError(f"{path}: the file is empty")
            if line.lstrip().startswith("["):
                yield from _rows_of(path, _json_document(path, "".join(head) + f.read()))
                return
            rows = 0
            for number, line in enumerate(chain([line], f), start=read):
                read = number
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    if rows:  # a bad line in JSON lines
                        raise DataError(f"{path}: line {number} is not valid JSON ({err.msg}): {line[:80]!r}") from None
                    # one JSON document over several lines
                    yield from _rows_of(path, _json_document(path, "".join(head) + "".join(f)))
                    return
                rows += 1
                yield from _rows_of(path, [row], start=rows)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}: the gzip data breaks off after line {read} ({err}); a truncated download?") from None


def _rows_of(path: Path, rows: list, start: int = 1):
    for number, row in enumerate(rows, start=start):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {number} is a {type(row).__name__}, not a JSON object")
        yield row


def mixed_type_check(path: Path, rows) -> None:
    """Raise a one-line :class:`DataError` at the first row whose value (at any depth, e.g. a
    completion's ``overall_score``) has another JSON type than the same field in earlier rows: a
    rating written as text in a column of numbers, a list where a string was."""
    seen: dict[str, tuple[str, int]] = {}

    def kind(value) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return "boolean"
        return {int: "number", float: "number", str: "text", list: "list", dict: "object"}.get(type(value))

    def walk(value, where: str, number: int) -> None:
        k = kind(value)
        if k is None:
            return
        first = seen.setdefault(where, (k, number))
        if first[0] != k:
            raise DataError(f"{path}: row {number}: {where} is {k} ({json.dumps(value)[:40]}) where row {first[1]} "
                            f"has {first[0]}; one type per field, please (a rating that is not a number?)")
        if k == "object":
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else key, number)
        elif k == "list":
            for item in value:
                walk(item, f"{where}[]", number)

    for number, row in enumerate(rows, start=1):
        walk(row, "", number)


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
              score_order: str = "keep", keep_columns: tuple[str, ...] = (), data_format: str = "auto",
              options: DataOptions | None = None) -> tuple[datasets.Dataset, DataReport]:
    """Validate and normalise raw rows; returns the canonical dataset and its report.

    ``data_format``: a registered format's name, or ``auto`` (recognised by the columns);
    ``options``: its pairing, rating and label choices and a column map.
    ``score_order``: what to do when the chosen score is below the rejected one — ``keep`` the
    label as given, ``swap`` the two responses, or ``drop`` the pair; each case is counted.
    ``keep_columns``: extra numeric columns to carry (e.g. a precomputed margin); a row whose
    value is missing or not a finite number is dropped and counted.
    Raises :class:`DataError` when no format fits the columns or nothing usable is left.
    """
    if score_order not in SCORE_ORDER_POLICIES:
        raise DataError(f"score_order must be one of {SCORE_ORDER_POLICIES}, got {score_order!r}")
    options = options or DataOptions()
    try:
        fmt = detect_format(raw.column_names, data_format, options)
    except ValueError as err:
        raise DataError(f"{source_name}: {err}") from None
    missing = [c for c in keep_columns if c not in raw.column_names]
    if missing:
        raise DataError(f"{source_name}: missing required column(s) {missing}; columns found: {raw.column_names}")
    if max_rows is not None:
        raw = raw.select(range(min(max_rows, len(raw))))
    report = DataReport(source=source_name, rows_read=len(raw), format=fmt.name, format_title=fmt.describe(options))
    rng = random.Random(options.pairing_seed)  # best_vs_random: the same pairs for the same seed and rows
    rows = []
    seen = set()
    # What makes this dataset: the options, then every kept pair's texts and numbers (see dataset_of).
    fingerprint = hashlib.blake2b(f"{source_name}:{fmt.name}:{options}:{score_order}:{keep_columns}".encode(),
                                  digest_size=16)
    for row_id, row in enumerate(_rows(raw)):
        try:
            pairs = fmt.pairs(row, options, rng)
        except RowDrop as drop:
            report.drop(str(drop), row_id)
            continue
        except (KeyError, TypeError) as err:  # a column holding something the format cannot read
            raise DataError(f"{source_name}: row {row_id} does not fit format {fmt.name!r} ({type(err).__name__}: "
                            f"{err})") from None
        for out in pairs:
            reason = pair_problem(out)
            for column in keep_columns:
                if reason is None:
                    try:
                        out[column] = number(row[column], column)
                    except RowDrop:
                        reason = f"missing or non-numeric value in column {column!r}"
            if reason is None:  # a digest, not the texts: at 61k pairs the keys alone were hundreds of MB
                key = hashlib.blake2b(json.dumps([out["prompt"], out["chosen"], out["rejected"]], sort_keys=True)
                                      .encode(), digest_size=16).digest()
                reason = "exact duplicate pair" if key in seen else None
                seen.add(key)
                fingerprint.update(key)
            if reason is not None:
                report.drop(reason, row_id)
                continue
            given = out["chosen"]
            out = _apply_score_order(out, score_order, report, row_id)
            if out is not None:
                rows.append({"row_id": row_id, **out})
                numbers = {k: v for k, v in out.items() if k not in CANONICAL_TEXTS}
                fingerprint.update(json.dumps([row_id, out["chosen"] is given, numbers]).encode())
    report.rows_kept = len(rows)
    if not rows:
        raise DataError(f"{source_name}: no usable rows left out of {report.rows_read}; dropped {report.dropped}")
    if len({type(r["prompt"]) for r in rows}) > 1:
        raise DataError(f"{source_name}: mixes conversational and plain-text prompts; use one format per dataset")
    return dataset_of(rows, fingerprint.hexdigest()), report


def dataset_of(rows: list[dict], fingerprint: str) -> datasets.Dataset:
    """A ``datasets.Dataset`` of ``rows`` with the given fingerprint: ``Dataset.from_list`` would
    hash the whole table to make one, which at 61k pairs holds a second copy of it in memory."""
    import pyarrow as pa
    from datasets.table import InMemoryTable

    return datasets.Dataset(InMemoryTable(pa.Table.from_pylist(rows)), fingerprint=fingerprint)


def _rows(raw: datasets.Dataset, batch: int = 1024):
    """The rows of ``raw`` as dicts, read a batch of columns at a time (row by row, datasets formats
    each row on its own: seconds at the paper's 61k pairs)."""
    for start in range(0, len(raw), batch):
        columns = raw[start:start + batch]
        for values in zip(*columns.values()):
            yield dict(zip(columns, values))


def pair_problem(pair: dict) -> str | None:
    """Why a converted pair cannot be trained on, or None."""
    if not str(pair["chosen"]).strip() or not str(pair["rejected"]).strip():
        return "empty response"
    if pair["chosen"] == pair["rejected"]:
        return "chosen identical to rejected"
    return None


def load_preferences(source: str | datasets.Dataset, split: str | None = None, max_rows: int | None = None,
                     subset: str | None = None, data_dir: str | None = None,
                     **normalise_kwargs) -> tuple[datasets.Dataset, DataReport]:
    """Read and normalise preference pairs; see the module docstring for the formats and
    :func:`normalise` for the options."""
    name = source if isinstance(source, str) else "in-memory dataset"
    if isinstance(source, str) and split and not Path(source).exists():
        name = f"{source}:{split}"
    return normalise(read_source(source, split, subset, data_dir), name, max_rows=max_rows, **normalise_kwargs)


def load_configured(data_cfg, keep_columns: tuple[str, ...] = (), **where) -> tuple[datasets.Dataset, DataReport]:
    """Pairs as a ``DataConfig`` describes them: its source, split and row cap (``where`` may replace
    them: ``source=``, ``split=``, ``max_rows=``, e.g. for the held-out data), its format, pairing,
    rating, label, column map and score order."""
    place = {"source": data_cfg.source, "split": data_cfg.split, "max_rows": data_cfg.max_rows, **where}
    return load_preferences(place["source"], place["split"], max_rows=place["max_rows"], subset=data_cfg.subset,
                            data_dir=data_cfg.data_dir, score_order=data_cfg.score_order, keep_columns=keep_columns,
                            data_format=data_cfg.format, options=DataOptions.from_config(data_cfg))


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
        if not is_messages(msgs) or not msgs or msgs[-1]["role"] != "assistant":
            raise DataError(f"{source}:{split} row {row_id}: 'messages' must end with an assistant turn")
        rows.append({"row_id": row_id, "prompt": msgs[:-1], "chosen": msgs[-1]["content"], "rejected": ""})
    return datasets.Dataset.from_list(rows)
