"""Paper-ready figures: one style file, vector PDF with embedded fonts, CSV beside each.

Every figure function takes plain rows (the same rows that are written to the
CSV), so a figure can always be redrawn from its CSV alone.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.tables import DOMAIN_NAMES, mean_std, write_csv  # noqa: E402

STYLE = Path(__file__).resolve().parent / "paper.mplstyle"
# Font subsetting for the embedded TrueType fonts logs every table at INFO.
logging.getLogger("fontTools").setLevel(logging.WARNING)


def save_figure(fig, out_pdf: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]],
                note: str = "") -> tuple[Path, Path]:
    """Write ``fig`` as PDF and its data as CSV (same stem), each atomically.

    ``note`` goes into the PDF's metadata (Subject), e.g. the stand-in statement.
    """
    from experiments.runs import atomic_path

    out_pdf = Path(out_pdf)
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"Subject": note} if note else None)
    plt.close(fig)
    out_csv = out_pdf.with_suffix(".csv")
    write_csv(out_csv, header, rows)
    return out_pdf, out_csv


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def lmc_figure(rows: Sequence[dict], out_pdf: str | Path, title: str, endpoints: tuple[str, str],
               note: str = "", reference: Sequence[float] | None = None,
               reference_title: str = "published (paper, real data)") -> tuple[Path, Path]:
    """Interpolation curve: per-domain mIoU and H against alpha, mean ± std over seeds.

    ``rows`` are ``{"alpha", "seed", "domain", "miou"}`` records with ``domain == "H"``
    for the harmonic mean. ``reference`` (optional) is the paper's H curve; it gets a
    panel of its own, so measured stand-in values never share an axis with it.
    """
    with plt.style.context(str(STYLE)):
        if reference is None:
            fig, ax = plt.subplots()
        else:
            fig, (ax, ref_ax) = plt.subplots(1, 2, figsize=(6.8, 2.4),
                                             gridspec_kw={"width_ratios": [3, 2]})
        domains = list(dict.fromkeys(r["domain"] for r in rows))
        alphas = sorted({float(r["alpha"]) for r in rows})
        for domain in domains:
            stats = [mean_std([float(r["miou"]) for r in rows
                                if r["domain"] == domain and float(r["alpha"]) == a]) for a in alphas]
            means = [m for m, _ in stats]
            style = dict(color="black", linewidth=1.6) if domain == "H" else {}
            ax.plot(alphas, means, marker="o", label=DOMAIN_NAMES.get(domain, domain), **style)
            ax.fill_between(alphas, [m - s for m, s in stats], [m + s for m, s in stats], alpha=0.2,
                            color=ax.lines[-1].get_color(), linewidth=0)
        ax.set_xlabel(f"alpha ({endpoints[0]} \u2192 {endpoints[1]})")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(title)
        ax.legend(ncol=2)
        if reference is not None:
            ref_alphas = [i / (len(reference) - 1) for i in range(len(reference))]
            ref_ax.plot(ref_alphas, reference, linestyle="--", marker="o", color="gray", label="H")
            ref_ax.set_xlabel("alpha")
            ref_ax.set_ylabel("H (%)")
            ref_ax.set_title(reference_title)
        header = ["alpha", "seed", "domain", "miou"]
        data = [[r["alpha"], r["seed"], r["domain"], r["miou"]] for r in rows]
        return save_figure(fig, out_pdf, header, data, note)


def bar_figure(labels: Sequence[str], series: dict[str, Sequence[tuple[float, float]]],
               out_pdf: str | Path, ylabel: str, title: str, note: str = "") -> tuple[Path, Path]:
    """Grouped bars with error bars: ``series`` maps a legend entry to (mean, std) per label."""
    import numpy as np

    with plt.style.context(str(STYLE)):
        fig, ax = plt.subplots()
        width = 0.8 / max(len(series), 1)
        x = np.arange(len(labels))
        header, data = ["label", "series", "mean", "std"], []
        for i, (name, values) in enumerate(series.items()):
            means = [m for m, _ in values]
            stds = [s for _, s in values]
            ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=stds, label=name, capsize=1.5)
            data += [[label, name, m, s] for label, (m, s) in zip(labels, values)]
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        return save_figure(fig, out_pdf, header, data, note)
