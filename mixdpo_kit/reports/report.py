"""Run artefacts: ``metrics.jsonl`` read back and a self-contained ``report.html`` of plotly figures
(``summary.json`` is :mod:`mixdpo_kit.reports.results`)."""
from __future__ import annotations

import html
import json
from pathlib import Path


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The run's ``metrics.jsonl`` as a list of dicts (empty when absent)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def write_html(path: str | Path, title: str, figures: list, tables: dict[str, list[dict]] | None = None) -> Path:
    """One HTML page with the figures (plotly.js inlined once, so it opens offline) and simple tables."""
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    for name, rows in (tables or {}).items():
        if rows:
            cols = list(rows[0])
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                           for r in rows)
            parts.append(f"<h2>{html.escape(name)}</h2><table border=1 cellpadding=4><tr>{head}</tr>{body}</table>")
    parts.append("</body></html>")
    Path(path).write_text("\n".join(parts))
    return Path(path)


def page_figure(fig, page: str | Path, name: str, caption: str, width: int = 1100, height: int = 400) -> str:
    """Save ``fig`` as ``figures/NAME.png`` beside a Markdown page and return the line that shows it;
    where no image export is installed (kaleido and a browser), an interactive HTML copy and a line
    that says so."""
    figures = Path(page).parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    try:
        fig.write_image(figures / f"{name}.png", width=width, height=height)
        return f"![{caption}](figures/{name}.png)"
    except Exception as err:  # no kaleido / browser: keep an interactive copy instead
        fig.write_html(figures / f"{name}.html", include_plotlyjs="cdn")
        return f"The figure is `figures/{name}.html` (PNG export unavailable: {type(err).__name__})."
