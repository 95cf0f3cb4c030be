"""Tables and figures of the TTA experiment, from its records (``records.json``).

- ``tta_main``: per model and method, the harmonic mean H of mIoU over the target
  domains in each stream setting (mean ± std over seeds);
- ``tta_domains.csv``: every (seed, model, method, setting, domain) mIoU;
- ``tta_claims``: SAR's claims checked on the measured numbers (differences of means);
- ``tta_batch_size.pdf``: mixed-stream mIoU against batch size, one panel per model;
- ``tta_stream.pdf``: running mIoU along the mixed stream at the smallest batch size
  (the setting where entropy minimisation is most prone to collapse).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from analysis.metrics import harmonic_mean
from analysis.tables import Summary, write_table
from experiments.runs import STAND_IN_NOTE, write_text_atomic

LABELS = {"source": "no TTA", "bn_adapt": "BN-adapt", "tent": "Tent", "eata": "EATA", "sar": "SAR"}
SETTING_LABELS = {"single": "single shift", "mixed": "mixed shifts", "batch1": "batch size 1",
                  "imbalance": "label imbalance"}


def _domain_scores(records: Sequence[dict]) -> dict[tuple, dict[str, float]]:
    """(seed, model, method, setting) -> domain -> mIoU."""
    out: dict[tuple, dict[str, float]] = {}
    for r in records:
        if r["setting"] == "sweep":
            continue
        key = (r["seed"], r["model"], r["method"], r["setting"])
        scores = r["per_domain"] if r["stream"] == "mixed" else {r["stream"]: r["metric"]}
        out.setdefault(key, {}).update(scores)
    return out


def summaries(records: Sequence[dict]) -> dict[tuple[str, str, str], Summary]:
    """(model, method, setting) -> H over domains, one value per seed."""
    cells: dict[tuple[str, str, str], Summary] = {}
    for (seed, model, method, setting), scores in sorted(_domain_scores(records).items(), key=str):
        cells.setdefault((model, method, setting), Summary()).values.append(harmonic_mean(list(scores.values())))
    return cells


TIE = 0.1  # mIoU points: differences below the table's displayed precision count as equal


def _verdict(difference: float, claim_sign: int) -> str:
    if abs(difference) < TIE:
        return "no difference"
    return "held" if difference * claim_sign > 0 else "reversed"


def _claims(cells: Mapping[tuple[str, str, str], Summary], models: list[str], settings: list[str]) -> list[list[str]]:
    """SAR's claims per model and wild setting: Tent falls below no TTA (Sec. 4), SAR beats
    Tent (Sec. 5); |difference| < TIE reads as no difference."""
    rows = []
    for model in models:
        for setting in (s for s in settings if s != "single"):
            get = lambda m: cells.get((model, m, setting), Summary()).mean  # noqa: E731
            tent, sar, src = get("tent"), get("sar"), get("source")
            rows.append([model, SETTING_LABELS[setting], f"{tent - src:+.2f}", _verdict(tent - src, -1),
                         f"{sar - tent:+.2f}", _verdict(sar - tent, +1)])
    return rows


def write_report(records: Sequence[dict], cfg: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    from analysis.tables import render_csv

    out_dir = Path(out_dir)
    note = STAND_IN_NOTE if cfg.get("stand_in", True) else ""
    cells = summaries(records)
    models = list(dict.fromkeys(r["model"] for r in records))
    methods = [m for m in cfg["methods"]]
    settings = [s for s in cfg["settings"]]
    header = ["Model", "Method", *(SETTING_LABELS[s] for s in settings)]
    rows, csv_rows = [], []
    for model in models:
        for method in methods:
            row_cells = [cells.get((model, method, s), Summary()) for s in settings]
            rows.append([model, LABELS.get(method, method), *(c.format() for c in row_cells)])
            csv_rows.append([model, method, len(row_cells[0].values),
                             *(v for c in row_cells for v in (round(c.mean, 3), round(c.std, 3)))])
    csv_header = ["model", "method", "seeds", *(f"{s}_{k}" for s in settings for k in ("mean", "std"))]
    caption = ("Test-time adaptation on the miniature's four targets: H of mIoU (%) over the domains, "
               f"mean ± std over {len(cfg['seeds'])} seed(s)")
    outputs = write_table(out_dir / "tta_main", header, rows, csv_header, csv_rows, caption, note)

    domain_rows = [[*key, d, round(v, 3)] for key, scores in _domain_scores(records).items()
                   for d, v in scores.items()]
    write_text_atomic(out_dir / "tta_domains.csv",
                      render_csv(["seed", "model", "method", "setting", "domain", "miou"], domain_rows))
    outputs.append(out_dir / "tta_domains.csv")
    claim_rows = _claims(cells, models, settings)
    outputs += write_table(out_dir / "tta_claims",
                           ["Model", "Setting", "Tent − no TTA", "Tent collapses", "SAR − Tent", "SAR beats Tent"],
                           claim_rows, ["model", "setting", "tent_minus_source", "tent_collapses",
                                        "sar_minus_tent", "sar_beats_tent"], claim_rows,
                           "SAR's claims on the measured H (differences of seed means, mIoU points)", note)
    outputs += list(_figures(records, models, methods, out_dir, note))
    return outputs


def _figures(records: Sequence[dict], models: list[str], methods: list[str], out_dir: Path, note: str):
    from analysis.figures import STYLE, plt, save_figure

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter

    sweep = [r for r in records if r["setting"] == "sweep"]
    if not sweep:
        return
    sizes = sorted({r["batch_size"] for r in sweep})
    with plt.style.context(str(STYLE)):
        fig, axes = plt.subplots(1, len(models), figsize=(2.4 * len(models), 2.2), sharey=True, squeeze=False)
        data = []
        for ax, model in zip(axes[0], models):
            for method in methods:
                stats = []
                for b in sizes:
                    vals = [r["metric"] for r in sweep if r["model"] == model and r["method"] == method
                            and r["batch_size"] == b]
                    stats.append((np.mean(vals), np.std(vals, ddof=1) if len(vals) > 1 else 0.0))
                    data += [[model, method, b, r_seed, v] for r_seed, v in
                             zip([r["seed"] for r in sweep if r["model"] == model and r["method"] == method
                                  and r["batch_size"] == b], vals)]
                means = [m for m, _ in stats]
                ax.errorbar(sizes, means, yerr=[s for _, s in stats], marker="o", label=LABELS[method], capsize=1.5)
            ax.set_xscale("log", base=2)
            ax.set_title(model)
            ax.set_xlabel("batch size")
        axes[0][0].set_ylabel("mIoU (%), mixed stream")
        axes[0][-1].legend(fontsize="x-small")
        yield from save_figure(fig, out_dir / "tta_batch_size.pdf",
                               ["model", "method", "batch_size", "seed", "miou"], data, note)

        smallest, first_seed = sizes[0], min(r["seed"] for r in sweep)
        fig, axes = plt.subplots(1, len(models), figsize=(2.4 * len(models), 2.2), sharey=True, squeeze=False)
        data = []
        for ax, model in zip(axes[0], models):
            for method in methods:
                for r in sweep:
                    if (r["model"], r["method"], r["batch_size"], r["seed"]) == (model, method, smallest, first_seed):
                        ax.plot([t["images"] for t in r["trace"]], [t["running"] for t in r["trace"]],
                                label=LABELS[method])
                        data += [[model, method, t["images"], t["running"], t["batch"]] for t in r["trace"]]
            ax.set_title(model)
            ax.set_xlabel("test images seen")
        axes[0][0].set_ylabel(f"running mIoU (%), batch {smallest}")
        axes[0][-1].legend(fontsize="x-small")
        yield from save_figure(fig, out_dir / "tta_stream.pdf",
                               ["model", "method", "images", "running_miou", "batch_miou"], data, note)
