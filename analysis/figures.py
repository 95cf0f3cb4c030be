"""Paper-ready figures: one style file, vector PDF with embedded fonts, CSV beside each.

Every figure function takes plain rows (the same rows that are written to the
CSV), so a figure can always be redrawn from its CSV alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402

from analysis.io import atomic_path, read_csv_rows, read_json, write_csv  # noqa: E402,F401  (read_csv_rows: public)
from analysis.tables import DOMAIN_NAMES, mean_std  # noqa: E402

STYLE = Path(__file__).resolve().parent / "paper.mplstyle"
# Font subsetting for the embedded TrueType fonts logs every table at INFO.
logging.getLogger("fontTools").setLevel(logging.WARNING)


def save_figure(fig, out_pdf: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]],
                note: str = "") -> tuple[Path, Path]:
    """Write ``fig`` as PDF and its data as CSV (same stem), each atomically.

    ``note`` goes into the PDF's metadata (Subject), e.g. the stand-in statement.
    """
    out_pdf = Path(out_pdf)
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"Subject": note} if note else None)
    plt.close(fig)
    out_csv = out_pdf.with_suffix(".csv")
    write_csv(out_csv, header, rows)
    return out_pdf, out_csv


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


def rebasin_figure(run_dirs: Sequence[str | Path], out_pdf: str | Path, title: str, endpoints: tuple[str, str],
                   note: str = "") -> list[Path]:
    """H of the midpoint vs the re-basin merge against the training iteration, and the
    fraction of non-identity permutations (mean ± std over the seeds' run folders).

    Each run folder holds ``scores.csv`` (iteration, seed, method, domain, miou) and
    ``matching.csv`` (iteration, seed, nonidentity_fraction, l2_before, l2_after, ...).
    """
    scores, matching = [], []
    for run in run_dirs:
        scores += read_csv_rows(Path(run) / "scores.csv")
        matching += read_csv_rows(Path(run) / "matching.csv")
    iterations = sorted({int(r["iteration"]) for r in matching})
    styles = {"midpoint": dict(color="C0", marker="o", label="midpoint"),
              "rebasin": dict(color="C3", marker="s", linestyle="--", label="Git Re-Basin + midpoint"),
              "model_a": dict(color="0.6", linewidth=0.8, label=endpoints[0]),
              "model_b": dict(color="0.3", linewidth=0.8, label=endpoints[1])}
    series = {m: [mean_std([float(r["miou"]) for r in scores if r["method"] == m and r["domain"] == "H"
                            and int(r["iteration"]) == k]) for k in iterations] for m in styles}
    fraction = [mean_std([float(r["nonidentity_fraction"]) for r in matching if int(r["iteration"]) == k])
                for k in iterations]
    with plt.style.context(str(STYLE)):
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(3.3, 3.4),
                                          gridspec_kw={"height_ratios": [2, 1]})
        for method, style in styles.items():
            top.plot(iterations, [m for m, _ in series[method]], **style)
            if method in ("midpoint", "rebasin"):
                top.fill_between(iterations, [m - s for m, s in series[method]],
                                 [m + s for m, s in series[method]], color=style["color"], alpha=0.2, linewidth=0)
        top.set_ylabel("H (%)")
        top.set_title(title, pad=26)
        top.legend(ncol=2, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        bottom.errorbar(iterations, [m for m, _ in fraction], yerr=[s for _, s in fraction], color="black",
                        marker="o", capsize=1.5)
        bottom.set_ylim(-0.02, max(0.1, max(m + s for m, s in fraction) * 1.2))
        bottom.set_ylabel("non-identity\nfraction")
        bottom.set_xlabel("training iteration")
        rows = [[r["iteration"], r["seed"], f"H_{r['method']}", r["miou"]] for r in scores if r["domain"] == "H"]
        for r in matching:
            rows += [[r["iteration"], r["seed"], q, r[q]] for q in ("nonidentity_fraction", "l2_before", "l2_after")]
        files = save_figure(fig, Path(out_pdf), ["iteration", "seed", "quantity", "value"], rows, note)
    return list(files)


def _colourise(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    out = np.zeros((*label.shape, 3), np.uint8)  # ignore (255) stays black
    known = label < len(palette)
    out[known] = palette[label[known]]
    return out


def qualitative_figure(listing_path: str | Path, out_pdf: str | Path, labels: dict[str, str] | None = None,
                       note: str = "") -> tuple[Path, Path]:
    """Validation images with their ground truth and each method's prediction (Cityscapes
    palette), one row per image, all domains in one PDF; the CSV lists every file drawn.

    ``listing_path`` is a ``pictures.json`` written by the pipeline: methods, class names,
    palette, and per domain the image / label / prediction files (relative to it).
    """
    from PIL import Image

    listing_path = Path(listing_path)
    listing = read_json(listing_path)
    root, palette = listing_path.parent, np.asarray(listing["palette"], np.uint8)
    methods, labels = listing["methods"], labels or {}
    entries = [(domain, entry) for domain, items in listing["domains"].items() for entry in items]
    columns = ["image", "ground truth", *(labels.get(m, m) for m in methods)]
    rows = []
    with plt.style.context(str(STYLE)):
        fig, axes = plt.subplots(len(entries), len(columns), squeeze=False,
                                 figsize=(1.25 * len(columns), 0.75 * len(entries) + 0.3))
        for row, (domain, entry) in enumerate(entries):
            panels = [np.asarray(Image.open(root / entry["image"]).convert("RGB")),
                      _colourise(np.asarray(Image.open(root / entry["label"])), palette)]
            panels += [_colourise(np.asarray(Image.open(root / entry["predictions"][m])), palette) for m in methods]
            for column, (ax, panel) in enumerate(zip(axes[row], panels)):
                ax.imshow(panel, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if row == 0:
                    ax.set_title(columns[column], fontsize=6)
            axes[row][0].set_ylabel(DOMAIN_NAMES.get(domain, domain), fontsize=6)
            rows.append([domain, entry["image"], entry["label"], entry.get("source", ""),
                         *(entry["predictions"][m] for m in methods)])
        fig.subplots_adjust(wspace=0.03, hspace=0.05)
        return save_figure(fig, out_pdf, ["domain", "image", "label", "source", *methods], rows, note)


KIND_STYLES = {"nothing": ("C0", "data-free"), "statistic": ("C1", "domain statistic"),
               "images": ("C3", "images at merge time"), "ensemble": ("C2", "output ensemble (K models)")}
VERDICT_MARKS = {"held": "\u25b2", "not held": "\u25bc", "inconclusive": "\u25cb"}


def methods_figure(rows: Sequence[dict], settings: dict[str, str], baseline_label: str, baseline: str,
                   out_pdf: str | Path, note: str = "") -> tuple[Path, Path]:
    """H per merging method, one panel per setting: mean ± std over seeds (bar and error bar),
    each seed a dot, colour = what crosses each domain's boundary, the baseline's mean as a
    dashed line and the pre-declared verdict against it at the bar's end
    (\u25b2 held, \u25bc not held, \u25cb inconclusive).

    ``rows``: ``{"setting", "method", "label", "kind", "values": [H per seed], "verdict"}``.
    """
    methods = list(dict.fromkeys(r["method"] for r in rows))
    labels = {r["method"]: r["label"] for r in rows}
    with plt.style.context(str(STYLE)):
        fig, axes = plt.subplots(1, len(settings), sharey=True, squeeze=False,
                                 figsize=(6.8, 0.5 + 0.17 * len(methods)))
        for ax, (setting, title) in zip(axes[0], settings.items()):
            chosen = {r["method"]: r for r in rows if r["setting"] == setting}
            for position, method in enumerate(methods):
                if method not in chosen:
                    continue
                row = chosen[method]
                mean, std = mean_std(row["values"])
                colour = KIND_STYLES.get(row["kind"], ("0.5", row["kind"]))[0]
                ax.barh(position, mean, xerr=std, color=colour, alpha=0.75, height=0.7,
                        error_kw={"elinewidth": 0.6, "capsize": 1.2})
                ax.plot(row["values"], [position] * len(row["values"]), ".", color="black", markersize=2)
                if row.get("verdict"):
                    ax.text(mean + std, position, " " + VERDICT_MARKS.get(row["verdict"], "?"), va="center",
                            fontsize=6)
            if baseline in chosen:
                ax.axvline(mean_std(chosen[baseline]["values"])[0], color="black", linestyle="--", linewidth=0.7)
            ax.set_title(title)
            ax.set_xlabel("H (%)")
            ax.grid(axis="y", visible=False)
        axes[0][0].set_yticks(range(len(methods)), [labels[m] for m in methods])
        axes[0][0].invert_yaxis()
        handles = [Patch(color=c, alpha=0.75, label=t) for c, t in KIND_STYLES.values()]
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.7,
                                               label=baseline_label))
        fig.legend(handles=handles, ncol=len(handles), loc="lower center", bbox_to_anchor=(0.5, 1.0))
        data = [[r["setting"], r["method"], r["kind"], seed, value, r.get("verdict") or ""]
                for r in rows for seed, value in enumerate(r["values"])]
        return save_figure(fig, out_pdf, ["setting", "method", "kind", "seed_index", "h", "verdict"], data, note)


ALIGNMENT_STYLES = {"plain": dict(color="0.4", marker="o", label="as trained"),
                    "weight_matching": dict(color="C0", marker="s", label="weight matching"),
                    "weight_matching_repair": dict(color="C3", marker="^", label="weight matching + REPAIR")}


def alignment_figure(rows: Sequence[dict], out_pdf: str | Path, title: str, endpoints: tuple[str, str],
                     note: str = "") -> tuple[Path, Path]:
    """H along the path between two models from different random inits, as trained, after
    weight matching, and after weight matching + REPAIR; mean ± std over seeds.

    ``rows``: ``{"variant", "alpha", "seed", "domain", "miou"}`` with ``domain == "H"`` for H.
    """
    with plt.style.context(str(STYLE)):
        fig, ax = plt.subplots()
        alphas = sorted({float(r["alpha"]) for r in rows})
        for variant, style in ALIGNMENT_STYLES.items():
            stats = [mean_std([float(r["miou"]) for r in rows if r["variant"] == variant and r["domain"] == "H"
                               and float(r["alpha"]) == a]) for a in alphas]
            if not any(r["variant"] == variant for r in rows):
                continue
            ax.plot(alphas, [m for m, _ in stats], **style)
            ax.fill_between(alphas, [m - s for m, s in stats], [m + s for m, s in stats], color=style["color"],
                            alpha=0.2, linewidth=0)
        ax.set_xlabel(f"alpha ({endpoints[0]} \u2192 {endpoints[1]})")
        ax.set_ylabel("H (%)")
        ax.set_title(title)
        ax.legend()
        data = [[r["variant"], r["alpha"], r["seed"], r["domain"], r["miou"]] for r in rows]
        return save_figure(fig, out_pdf, ["variant", "alpha", "seed", "domain", "miou"], data, note)
