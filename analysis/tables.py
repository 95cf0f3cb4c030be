"""Paper tables from saved results: Markdown, LaTeX (booktabs) and CSV side by side.

Tables are built from plain records (one per run, seed and domain) so they can be
regenerated from run folders at any time. Values are mean +- sample standard
deviation over seeds; the paper's published number, when there is one, sits in a
separate reference column and is never mixed with measured values.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from analysis.io import render_csv, write_csv, write_text_atomic  # noqa: F401  (write_csv: public)
from analysis.metrics import harmonic_mean

DOMAIN_NAMES = {"cityscapes": "Cityscapes", "idd": "IDD", "acdc": "ACDC", "darkzurich": "Dark Zurich",
                "gta": "GTA", "synthia": "SYNTHIA"}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) over seeds; std 0 for one value."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


@dataclass
class Summary:
    """Mean and sample standard deviation of one cell over seeds."""

    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return mean_std(self.values)[0] if self.values else math.nan

    @property
    def std(self) -> float:
        return mean_std(self.values)[1] if self.values else 0.0

    def format(self, digits: int = 1) -> str:
        if not self.values:
            return "–"
        if len(self.values) == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize_domains(records: Iterable[dict], domains: Sequence[str]) -> dict[str, dict[str, Summary]]:
    """Group ``{"method", "seed", "domain", "miou"}`` records into per-method summaries.

    Adds a ``"H"`` column: the harmonic mean over ``domains`` computed per seed, then
    averaged, so the spread of H is the spread across seeds.
    """
    by_method: dict[str, dict[int, dict[str, float]]] = {}
    for record in records:
        seeds = by_method.setdefault(record["method"], {})
        seeds.setdefault(int(record["seed"]), {})[record["domain"]] = float(record["miou"])
    table: dict[str, dict[str, Summary]] = {}
    for method, seeds in by_method.items():
        cells = {domain: Summary() for domain in [*domains, "H"]}
        for seed in sorted(seeds):
            per_domain = seeds[seed]
            missing = [d for d in domains if d not in per_domain]
            if missing:
                raise ValueError(f"method {method!r} seed {seed} has no result for domains {missing}")
            for domain in domains:
                cells[domain].values.append(per_domain[domain])
            cells["H"].values.append(harmonic_mean([per_domain[d] for d in domains]))
        table[method] = cells
    return table


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                          ("#", r"\#"), ("±", r"$\pm$"), ("–", "--")):
        text = text.replace(char, escaped)
    return text


def render_markdown(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str, note: str) -> str:
    lines = [f"**{caption}**", "", f"> {note}", ""] if note else [f"**{caption}**", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def render_latex(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str, note: str) -> str:
    spec = "l" + "r" * (len(header) - 1)
    body = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_latex_escape(caption)}{(' ' + _latex_escape(note)) if note else ''}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(_latex_escape(c) for c in row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(body) + "\n"


def write_table(out_stem: str | Path, header: Sequence[str], rows: Sequence[Sequence[str]],
                csv_header: Sequence[str], csv_rows: Sequence[Sequence[object]],
                caption: str, note: str = "") -> list[Path]:
    """Write ``<stem>.md``, ``<stem>.tex`` and ``<stem>.csv`` atomically; return the paths.

    The CSV holds the raw numbers (means, standard deviations, seed counts), the
    Markdown and LaTeX files the formatted cells.
    """
    out_stem = Path(out_stem)
    outputs = {
        out_stem.with_suffix(".md"): render_markdown(header, rows, caption, note),
        out_stem.with_suffix(".tex"): render_latex(header, rows, caption, note),
        out_stem.with_suffix(".csv"): render_csv(csv_header, csv_rows),
    }
    for path, text in outputs.items():
        write_text_atomic(path, text)
    return list(outputs)


def domain_table(summaries: dict[str, dict[str, Summary]], domains: Sequence[str],
                 labels: dict[str, str], out_stem: str | Path, caption: str, note: str,
                 reference: dict[str, dict[str, float | None]] | None = None) -> list[Path]:
    """One row per method: mIoU per domain and H (mean ± std), then reference columns.

    ``reference`` maps a column title (e.g. "paper H (ResNet-101)") to method -> value.
    """
    reference = reference or {}
    header = ["Method", *(DOMAIN_NAMES.get(d, d) for d in domains), "H", *reference]
    csv_header = ["method", "seeds"]
    for column in [*domains, "H"]:
        csv_header += [f"{column}_mean", f"{column}_std"]
    csv_header += [title for title in reference]
    rows, csv_rows = [], []
    for method, cells in summaries.items():
        refs = [reference[title].get(method) for title in reference]
        rows.append([labels.get(method, method), *(cells[c].format() for c in [*domains, "H"]),
                     *("–" if r is None else f"{r:.1f}" for r in refs)])
        csv_row: list[object] = [method, len(cells["H"].values)]
        for column in [*domains, "H"]:
            csv_row += [round(cells[column].mean, 4), round(cells[column].std, 4)]
        csv_rows.append(csv_row + ["" if r is None else round(r, 2) for r in refs])
    return write_table(out_stem, header, rows, csv_header, csv_rows, caption, note)


def class_table(records: Iterable[dict], domains: Sequence[str], class_names: Sequence[str],
                labels: dict[str, str], out_stem: str | Path, caption: str, note: str) -> list[Path]:
    """IoU per class (mean over seeds, NaN-aware) of each method on each domain, and its mIoU.

    ``records`` are ``{"method", "seed", "domain", "iou": [per-class IoU in percent, NaN when
    the class is absent from both prediction and ground truth]}``.
    """
    grouped: dict[tuple[str, str], list[list[float]]] = {}
    for record in records:
        grouped.setdefault((record["method"], record["domain"]), []).append(list(record["iou"]))
    header = ["Method", "Domain", *class_names, "mIoU"]
    rows, csv_rows = [], []
    methods = list(dict.fromkeys(method for method, _ in grouped))
    for domain in domains:
        for method in methods:
            values = np.asarray(grouped.get((method, domain), []), dtype=np.float64)
            if not len(values):
                continue
            with warnings.catch_warnings():  # a class absent from every seed's data: NaN, shown as –
                warnings.simplefilter("ignore", RuntimeWarning)
                means = np.nanmean(values, axis=0)
                miou = float(np.nanmean(np.nanmean(values, axis=1)))
            cells = ["–" if math.isnan(v) else f"{v:.1f}" for v in means]
            rows.append([labels.get(method, method), DOMAIN_NAMES.get(domain, domain), *cells, f"{miou:.1f}"])
            csv_rows.append([method, domain, len(values), *("" if math.isnan(v) else round(float(v), 4) for v in means),
                             round(miou, 4)])
    csv_header = ["method", "domain", "seeds", *class_names, "miou"]
    return write_table(out_stem, header, rows, csv_header, csv_rows, caption, note)
