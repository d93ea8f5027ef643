"""What ``mixdpo-kit analyze`` tells about a dataset, and the per-pair table it can export.

- :func:`margin_origin`: one line on how the rows were read (the format, recognised or named)
  and where the margins come from;
- :func:`pairing_choices`: for K-wise data, how each pairing rule (and raw UltraFeedback's rating)
  changes the margins and the hard share at τ on the same prompts;
- :func:`pair_table` / :func:`export_pairs`: one row per kept pair in TRL's preference format
  (prompt, chosen, rejected), with its source row, margin, hard flag, route and curriculum
  position, written as Parquet or JSON lines (``datasets.load_dataset`` reads it back).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mixdpo_kit.core.config import RunConfig
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.core.units import percent, threshold
from mixdpo_kit.data.formats import FORMATS, PAIRINGS, RATINGS, SIGNALS
from mixdpo_kit.data.loading import DataReport, is_conversational, load_configured
from mixdpo_kit.margins.sources import MarginContext, compute_margins, data_signal, margin_source, margin_stats
from mixdpo_kit.margins.split import split_by_margin
from mixdpo_kit.objectives.routing import get_objective
from mixdpo_kit.training.pipeline import PreparedPairs, select_pairs

EXPORT_SUFFIXES = (".parquet", ".jsonl")


def margin_origin(report: DataReport, spec, dataset, named: bool = False) -> str:
    """How the rows were read and where their margins come from, in one line."""
    how = "named with data.format" if named else "recognised by its columns"
    source, arg = margin_source(spec)
    if source.name == "data":
        signal = SIGNALS[data_signal(dataset, arg)]
        margins = f"the data's own {signal.name} ({signal.unit}): {signal.meaning}" + \
            (f". {signal.tau_hint[0].upper()}{signal.tau_hint[1:]}" if signal.tau_hint else "")
    else:
        margins = f"{source.name}{':' + arg if arg else ''}: {source.summary}"
    return f"read as {report.format_title}, {how}; margins: {margins}"


def pairing_choices(cfg: RunConfig, report: DataReport) -> list[dict]:
    """For K-wise data (``report.format`` is K-wise), every pairing rule — and for raw UltraFeedback
    every rating — on the same source rows: pairs, prompts, the margins' median and middle half,
    and the hard share at the config's τ (or quantile). Empty for pairwise data."""
    out = []
    for ds, margins, overrides in pairing_sources(cfg, report).values():
        choice = {k: v for k, v in overrides["data"].items() if k in ("pairing", "rating")}
        split = split_by_margin(margins, cfg.split.tau, cfg.split.quantile, warn=False)
        stats = margin_stats(margins)
        this_run = choice["pairing"] == cfg.data.pairing and choice.get("rating", cfg.data.rating) == cfg.data.rating
        out.append({**choice, "this_run": this_run, "prompts": len(set(ds["row_id"])), "pairs": len(ds),
                    "median": stats["median"], "q25": stats["q25"], "q75": stats["q75"], "ties": stats["ties"],
                    "tau": float(split.tau), "hard": int(split.n_hard), "hard_share": float(split.hard.mean()),
                    "margins": margins.tolist()})
    return out


def pairing_sources(cfg: RunConfig, report: DataReport) -> dict[str, tuple]:
    """K-wise data under each pairing rule (and rating) for the margin explorer: ``{name: (pairs,
    margins, config overrides)}``, the data's own margins; empty for pairwise data."""
    fmt = FORMATS[report.format]
    if not fmt.kwise:
        return {}
    out = {}
    for rating in RATINGS if fmt.name == "ultrafeedback" else (None,):
        for pairing in PAIRINGS:
            data = {"pairing": pairing, **({"rating": rating} if rating else {}), "format": fmt.name}
            ds, _ = load_configured(cfg.override(data=data).data)
            name = pairing + (f" · {rating}" if rating else "")
            out[name] = (ds, compute_margins(ds, "data"), {"data": data, "margins": {"source": "data"}})
    return out


def pairing_lines(choices: list[dict], unit: str) -> list[str]:
    """The pairing comparison as lines of text (the run's own choice marked)."""
    lines = []
    for c in choices:
        rating = f", rating {c['rating']}" if "rating" in c else ""
        mark = " (this run's)" if c["this_run"] else ""
        prompts = f"{c['prompts']:,} prompt" + ("s" if c["prompts"] != 1 else "")
        lines.append(f"pairing {c['pairing']}{rating}{mark}: {c['pairs']:,} pairs from {prompts}, "
                     f"median margin {c['median']:g} {unit} (middle half {c['q25']:g} to {c['q75']:g}), "
                     f"{percent(c['hard_share'])} hard at τ = {threshold(c['tau'])}")
    return lines


def pair_routes(cfg: RunConfig, prep: PreparedPairs, ctx: MarginContext | None = None) -> tuple[list[str], list]:
    """Each pair's route under the config's objective (``sft``, ``preference``, ``sft+preference``
    or ``filtered out``) and its position in the first epoch's training order (None if filtered)."""
    objective = get_objective(cfg.loss.objective)
    gap = compute_margins(prep.dataset, "likelihood_gap", ctx) if objective.needs_reference_gap else None
    routing = objective.route(prep.margins, prep.split, cfg.loss, gap)
    kept = select_pairs(prep, routing.keep, f"filtered out by objective {objective.name}")
    position = np.full(len(prep.margins), -1)
    position[np.flatnonzero(routing.keep)[kept.plan.indices(0)]] = np.arange(int(routing.keep.sum()))
    routes = []
    for sft, pref, keep in zip(routing.sft, routing.preference, routing.keep):
        routes.append("filtered out" if not keep else "sft+preference" if sft > 0 and pref > 0
                      else "sft" if sft > 0 else "preference")
    return routes, [int(p) if p >= 0 else None for p in position]


def pair_table(cfg: RunConfig, prep: PreparedPairs, ctx: MarginContext | None = None) -> list[dict]:
    """One row per pair: prompt, chosen, rejected in TRL's preference format (conversational
    data as chat messages), then the source row, the margin, hard, the route and the curriculum
    position, and the ratings where the data has them."""
    ds = prep.dataset
    chat = is_conversational(ds)
    routes, positions = pair_routes(cfg, prep, ctx)
    rated = {"score_chosen", "score_rejected"} <= set(ds.column_names)
    rows = []
    for i, row in enumerate(ds):
        answer = (lambda text: [{"role": "assistant", "content": text}]) if chat else (lambda text: text)
        out = {"prompt": row["prompt"], "chosen": answer(row["chosen"]), "rejected": answer(row["rejected"]),
               "row_id": int(row["row_id"]), "margin": float(prep.margins[i]), "hard": bool(prep.split.hard[i]),
               "route": routes[i], "curriculum_position": positions[i]}
        if rated:
            out.update(score_chosen=row["score_chosen"], score_rejected=row["score_rejected"])
        rows.append(out)
    return rows


def export_pairs(cfg: RunConfig, prep: PreparedPairs, path: str | Path, ctx: MarginContext | None = None) -> Path:
    """Write :func:`pair_table` to ``path`` (``.parquet`` or ``.jsonl``); returns the path."""
    import datasets

    path = Path(path)
    if path.suffix not in EXPORT_SUFFIXES:
        raise UserError(f"--export {path}: use a {' or '.join(EXPORT_SUFFIXES)} file")
    table = datasets.Dataset.from_list(pair_table(cfg, prep, ctx))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        table.to_parquet(str(path))
    else:
        table.to_json(str(path), lines=True, force_ascii=False)
    return path
