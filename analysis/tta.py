"""Tables and figures of the TTA experiment, from its records (``records.json``).

- ``tta_main``: per model and method, the harmonic mean H of mIoU over the target
  domains in each stream setting (mean ± std over seeds);
- ``tta_domains.csv``: every (seed, model, method, setting, domain) mIoU;
- ``tta_claims``: SAR's claims checked on the measured numbers (differences of means);
- ``tta_batch_size.pdf``: mixed-stream mIoU against batch size, one panel per model;
- ``tta_stream.pdf``: running mIoU along the mixed stream at the smallest batch size
  (the setting where entropy minimisation is most prone to collapse);
- ``tta_merging`` / ``tta_merging_verdict``: the pipeline's models with and without TTA
  (``write_merging_tables``): does TTA on a merged model beat merging alone and TTA alone?
  The verdict subtracts, per seed, (a) the merged model without TTA and (b) the best single
  model with the same TTA method (best by seed-mean H, chosen on these very numbers, which
  favours the single model); (k/n) counts the seeds where the merged model with TTA is
  ahead; "yes" / "no" only when the mean clears TIE and all seeds agree, else "tie" or
  "seeds disagree";
- ``README.md``: all tables with the verdicts they support and the run's cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from analysis.figures import STYLE, plt, save_figure
from analysis.io import render_csv, write_text_atomic
from analysis.metrics import harmonic_mean
from analysis.tables import Summary, render_markdown, write_table

LABELS = {"source": "no TTA", "bn_adapt": "BN-adapt", "tent": "Tent", "eata": "EATA", "sar": "SAR"}
SETTING_LABELS = {"single": "single shift", "mixed": "mixed shifts", "batch1": "batch size 1",
                  "imbalance": "label imbalance", "corrupted": "mixed + corruptions"}


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


def write_report(records: Sequence[dict], cfg: Mapping[str, Any], out_dir: str | Path, note: str = "",
                 missing: Sequence[str] = (), timing: Mapping[str, float] | None = None) -> list[Path]:
    """Tables, figures and README.md of one run; ``missing``: pipeline models skipped,
    ``timing``: ``{"wall_s", "cpu_s"}`` of the run."""
    out_dir = Path(out_dir)
    everything, records = records, [r for r in records if r.get("part", "norms") == "norms"]
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
    merging_files, merging_lines = write_merging_tables(everything, cfg, out_dir, note)
    outputs += merging_files
    readme = _readme(cfg, note, render_markdown(header, rows, caption, ""),
                     render_markdown(["Model", "Setting", "Tent − no TTA", "Tent collapses", "SAR − Tent",
                                      "SAR beats Tent"], claim_rows, "SAR's claims (differences of seed means, "
                                     "mIoU points; |difference| < 0.1 counts as none)", ""),
                     claim_rows, cells, models, settings, merging_lines, missing, timing, records, out_dir,
                     everything)
    write_text_atomic(out_dir / "README.md", readme)
    return outputs + [out_dir / "README.md"]


def _stability(cells: Mapping[tuple[str, str, str], Summary], model: str, settings: list[str]) -> float:
    """Largest spread (max − min over the stream settings) of any TTA method's H."""
    spreads = [np.ptp([cells[(model, m, s)].mean for s in settings]) for m in ("bn_adapt", "tent", "eata", "sar")
               if all((model, m, s) in cells for s in settings)]
    return float(max(spreads)) if spreads else float("nan")


def _gradient_gap(records: Sequence[dict]) -> float | None:
    """Largest |metric(gradient method) − metric(BN-adapt)| over matching streams."""
    key = lambda r: (r.get("part"), r["seed"], r["model"], r["setting"], r["stream"], r["batch_size"])  # noqa: E731
    bn = {key(r): r["metric"] for r in records if r["method"] == "bn_adapt"}
    gaps = [abs(r["metric"] - bn[key(r)]) for r in records
            if r["method"] in ("tent", "eata", "sar") and key(r) in bn]
    return max(gaps) if gaps else None


def _sweep_lines(records: Sequence[dict]) -> list[str]:
    """BN-adapt's mixed-stream mIoU at the smallest and largest swept batch size, per model."""
    sweep = [r for r in records if r["setting"] == "sweep" and r["method"] == "bn_adapt"]
    if not sweep:
        return []
    sizes = sorted({r["batch_size"] for r in sweep})
    parts = []
    for model in dict.fromkeys(r["model"] for r in sweep):
        at = {b: np.mean([r["metric"] for r in sweep if r["model"] == model and r["batch_size"] == b]) for b in sizes}
        parts.append(f"{model} " + " / ".join(f"{at[b]:.1f}" for b in sizes))
    return [f"- BN-adapt on the mixed stream at batch {' / '.join(map(str, sizes))} (mIoU, seed mean; "
            "tta_batch_size.csv): " + "; ".join(parts) + "."]


def _readme(cfg, note, main_md, claims_md, claim_rows, cells, models, settings, merging_lines, missing,
            timing, records, out_dir: Path, all_records: Sequence[dict] = ()) -> str:
    import json

    collapses = sum(r[3] == "held" for r in claim_rows)
    sar_wins = sum(r[5] == "held" for r in claim_rows)
    resets = sum(r.get("recoveries", 0) for r in records)
    spread = {m: _stability(cells, m, settings) for m in models}
    lines = ["# Test-time adaptation on the miniature (measured)", "", f"> {note}" if note else "", "",
             "`python -m experiments.adapt` (configs/adapt.yaml; this file is written by "
             "analysis/tta.py). Methods at the papers' defaults (SGD momentum 0.9, lr 0.00025 x B/64, "
             f"E_0 = 0.4 ln {cfg['classes']}, EATA eps 0.05 and lambda 2000, SAR rho 0.05, "
             f"e_m {cfg['method_options'].get('sar', {}).get('reset_threshold', 0.2)}), "
             f"lr multiplier {cfg.get('lr_multiplier', 1.0)}, seeds {list(cfg['seeds'])}, batch {cfg['batch_size']}."]
    if timing:
        lines.append(f"Run time {timing['wall_s'] / 60:.1f} min wall, {timing['cpu_s'] / 60:.1f} min CPU "
                     f"({cfg.get('threads', 1)} thread(s)); source models reused when cached.")
    lines += ["", "## Normalisation variants in wild streams (SAR's claims)", "",
              f"Source-only `mini_r18` per normalisation, {cfg['images_per_domain']} val images per target "
              "domain, H of mIoU over the domains.", "", main_md, claims_md,
              f"- Tent falls below no TTA (SAR, Sec. 4) in {collapses} of {len(claim_rows)} (model, wild setting) "
              f"cells; SAR beats Tent by >= 0.1 in {sar_wins} of {len(claim_rows)}; SAR recovery resets: {resets}.",
              "- Largest spread of a TTA method's H across the stream settings (smaller = more stable): "
              + ", ".join(f"{m} {v:.2f}" for m, v in spread.items()) + "."]
    lines += _sweep_lines(records)
    if merging_lines:
        merging = cfg.get("merging") or {}
        lines += ["", "## TTA on the pipeline's models: merging + TTA", "",
                  f"Models from the study pipeline's run folders (runs_root `{cfg['runs_root']}`), "
                  f"{merging.get('images_per_domain') or 'all'} val images per target; seed s adapts the seed-s "
                  "models. The best single model is picked on these numbers, which favours TTA alone.", "",
                  *merging_lines]
    gap = _gradient_gap(all_records)
    if gap is not None:
        lines += ["", f"- Every stream, both parts: Tent, EATA and SAR end within {gap:.3f} mIoU of BN-adapt on the "
                  "same stream, i.e. at the papers' learning rates and these stream lengths their gain over no TTA "
                  "is the test-batch statistics."]
    if missing:
        lines += ["", "Skipped (run folder missing or unfinished): " + ", ".join(f"`{m}`" for m in missing)]
    benches = sorted(out_dir.glob("benchmark_adapt_*.json"))
    if benches:
        lines += ["", "## Cost (benchmarks/adapt.py)", "", "| Model norm | Method | images/s | x plain | x Tent | "
                  "extra MiB |", "|---|---|---:|---:|---:|---:|"]
        for path in benches:
            bench = json.loads(path.read_text())
            for method, r in sorted(bench["results"].items()):
                lines.append(f"| {bench['config'].get('norm')} | {LABELS.get(method, method)} | "
                             f"{r['images_per_s']:.1f} | {r['time_vs_plain']:.2f} | {r['time_vs_tent']:.2f} | "
                             f"{r['extra_memory_mib']:.1f} |")
    return "\n".join(lines) + "\n"


def _figures(records: Sequence[dict], models: list[str], methods: list[str], out_dir: Path, note: str):
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


# ----------------------------------------------------------------- merging part
def merging_scores(records: Sequence[dict]) -> dict[tuple, dict[str, float]]:
    """(seed, model, method, setting) -> domain -> mIoU, merging part only."""
    out: dict[tuple, dict[str, float]] = {}
    for r in records:
        if r.get("part") != "merging" or r["setting"] == "sweep":
            continue
        values = r["per_domain"] if r["stream"] == "mixed" else {r["stream"]: r["metric"]}
        out.setdefault((r["seed"], r["model"], r["method"], r["setting"]), {}).update(values)
    return out


def _h(table: Mapping[tuple, dict[str, float]], seed: int, model: str, method: str, setting: str) -> float:
    values = table.get((seed, model, method, setting))
    return harmonic_mean(list(values.values())) if values else float("nan")


def verdict_rows(records: Sequence[dict], merged: str, methods: Sequence[str], settings: Sequence[str]
                 ) -> list[list[Any]]:
    """One row per (setting, TTA method): see the module docstring."""
    table = merging_scores(records)
    seeds = sorted({k[0] for k in table})
    models = list(dict.fromkeys(k[1] for k in table))
    singles = [m for m in models if m != merged]
    rows = []
    for setting in settings:
        for method in (m for m in methods if m != "source"):
            merged_tta = np.array([_h(table, s, merged, method, setting) for s in seeds])
            merged_only = np.array([_h(table, s, merged, "source", setting) for s in seeds])
            best = max(singles, key=lambda m: np.nanmean([_h(table, s, m, method, setting) for s in seeds]))
            single_tta = np.array([_h(table, s, best, method, setting) for s in seeds])
            d_merge, d_tta = merged_tta - merged_only, merged_tta - single_tta
            rows.append([setting, method, best, float(np.mean(merged_tta)), float(np.mean(d_merge)),
                         int((d_merge > 0).sum()), float(np.mean(d_tta)), int((d_tta > 0).sum()), len(seeds)])
    return rows


def _merging_verdict(difference: float, ahead: int, seeds: int) -> str:
    """"yes" / "no" only when the mean clears TIE and every seed agrees in sign."""
    if difference >= TIE and ahead == seeds:
        return "yes"
    if difference <= -TIE and ahead == 0:
        return "no"
    return "tie" if abs(difference) < TIE else "seeds disagree"


def write_merging_tables(records: Sequence[dict], cfg: Mapping[str, Any], out_dir: str | Path, note: str
                         ) -> tuple[list[Path], list[str]]:
    """Write both tables; return the files and the Markdown lines for the README."""
    out_dir = Path(out_dir)
    table = merging_scores(records)
    if not table:
        return [], []
    merging = cfg.get("merging") or {}
    settings = [s for s in merging.get("settings", []) if any(k[3] == s for k in table)]
    methods = [m for m in (merging.get("methods") or cfg["methods"]) if any(k[2] == m for k in table)]
    models = list(dict.fromkeys(k[1] for k in table))
    domains = list(dict.fromkeys(d for v in table.values() for d in v))
    seeds = sorted({k[0] for k in table})
    header = ["Model", "Method", *(f"{SETTING_LABELS[s]}: {d}" for s in settings for d in [*domains, "H"])]
    rows, csv_rows = [], []
    for model in models:
        for method in methods:
            cells = []
            for setting in settings:
                for d in domains:
                    cells.append(Summary([table[(s, model, method, setting)][d] for s in seeds
                                          if (s, model, method, setting) in table]))
                cells.append(Summary([_h(table, s, model, method, setting) for s in seeds
                                      if (s, model, method, setting) in table]))
            rows.append([model, LABELS.get(method, method), *(c.format() for c in cells)])
            csv_rows.append([model, method, len(cells[0].values),
                             *(v for c in cells for v in (round(c.mean, 3), round(c.std, 3)))])
    csv_header = ["model", "method", "seeds", *(f"{s}_{d}_{k}" for s in settings for d in [*domains, "H"]
                                                for k in ("mean", "std"))]
    caption = (f"TTA on the pipeline's models: mIoU (%) per target and H, mean ± std over {len(seeds)} seed(s)")
    files = write_table(out_dir / "tta_merging", header, rows, csv_header, csv_rows, caption, note)
    merged = next((m for m in models if m.startswith("merged")), None)
    lines = render_markdown(header, rows, caption, "").splitlines()
    if merged is None:
        return files, lines
    vrows = verdict_rows(records, merged, methods, settings)
    vheader = ["Setting", "TTA", "Best single model", f"H {merged} + TTA", "− merged alone", "beats merging",
               "− best single + TTA", "beats TTA alone"]
    shown = [[SETTING_LABELS[s], LABELS[m], b, f"{h:.1f}", f"{d1:+.2f} ({k1}/{n})", _merging_verdict(d1, k1, n),
              f"{d2:+.2f} ({k2}/{n})", _merging_verdict(d2, k2, n)] for s, m, b, h, d1, k1, d2, k2, n in vrows]
    csv_v = [[s, m, b, round(h, 3), round(d1, 3), k1, round(d2, 3), k2, n] for s, m, b, h, d1, k1, d2, k2, n in vrows]
    files += write_table(out_dir / "tta_merging_verdict", vheader, shown,
                         ["setting", "method", "best_single", "merged_tta_h", "minus_merged", "seeds_ahead_merged",
                          "minus_single_tta", "seeds_ahead_single", "seeds"], csv_v,
                         "Merged model + TTA against merging alone and TTA alone (H, mIoU points; "
                         "(k/n) = seeds where merged + TTA is ahead)", note)
    lines += ["", *render_markdown(vheader, shown, "Merged + TTA against merging alone and TTA alone", "").splitlines()]
    beats_merge = [_merging_verdict(r[4], r[5], r[8]) == "yes" for r in vrows]
    beats_tta = [_merging_verdict(r[6], r[7], r[8]) == "yes" for r in vrows]
    lines += ["", f"- Merged + TTA beats merging alone (mean >= {TIE} ahead, every seed ahead) in {sum(beats_merge)} "
              f"of {len(vrows)} (setting, TTA method) cells, the best single model with the same TTA in "
              f"{sum(beats_tta)}, both in {sum(a and b for a, b in zip(beats_merge, beats_tta))}."]
    return files, lines
