"""Tables of the merging part of the TTA experiment: does TTA on a merged model beat
merging alone and TTA alone?

- ``tta_merging``: per model and method, mIoU per target domain and H, for each stream
  setting (mean ± std over seeds);
- ``tta_merging_verdict``: for each TTA method and setting, H of the merged model with
  TTA minus (a) the merged model without TTA and (b) the best single model with the same
  TTA method (best by seed-mean H, chosen on these very numbers, which favours the single
  model). Differences are per seed, then averaged; (k/n) counts the seeds where the
  merged model with TTA is ahead. A verdict is "yes" / "no" only when the mean clears
  0.1 points and all seeds agree, else "tie" or "seeds disagree".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from analysis.metrics import harmonic_mean
from analysis.tables import Summary, render_markdown, write_table

LABELS = {"source": "no TTA", "bn_adapt": "BN-adapt", "tent": "Tent", "eata": "EATA", "sar": "SAR"}
TIE = 0.1  # mIoU points, as in the claims table


def scores(records: Sequence[dict]) -> dict[tuple, dict[str, float]]:
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
    table = scores(records)
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


def _verdict(difference: float, ahead: int, seeds: int) -> str:
    """"yes" / "no" only when the mean clears TIE and every seed agrees in sign."""
    if difference >= TIE and ahead == seeds:
        return "yes"
    if difference <= -TIE and ahead == 0:
        return "no"
    return "tie" if abs(difference) < TIE else "seeds disagree"


def write_merging_tables(records: Sequence[dict], cfg: Mapping[str, Any], out_dir: str | Path, note: str
                         ) -> tuple[list[Path], list[str]]:
    """Write both tables; return the files and the Markdown lines for the README."""
    from experiments.tta.report import SETTING_LABELS

    out_dir = Path(out_dir)
    table = scores(records)
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
    shown = [[SETTING_LABELS[s], LABELS[m], b, f"{h:.1f}", f"{d1:+.2f} ({k1}/{n})", _verdict(d1, k1, n),
              f"{d2:+.2f} ({k2}/{n})", _verdict(d2, k2, n)] for s, m, b, h, d1, k1, d2, k2, n in vrows]
    csv_v = [[s, m, b, round(h, 3), round(d1, 3), k1, round(d2, 3), k2, n] for s, m, b, h, d1, k1, d2, k2, n in vrows]
    files += write_table(out_dir / "tta_merging_verdict", vheader, shown,
                         ["setting", "method", "best_single", "merged_tta_h", "minus_merged", "seeds_ahead_merged",
                          "minus_single_tta", "seeds_ahead_single", "seeds"], csv_v,
                         "Merged model + TTA against merging alone and TTA alone (H, mIoU points; "
                         "(k/n) = seeds where merged + TTA is ahead)", note)
    lines += ["", *render_markdown(vheader, shown, "Merged + TTA against merging alone and TTA alone", "").splitlines()]
    beats_merge = [_verdict(r[4], r[5], r[8]) == "yes" for r in vrows]
    beats_tta = [_verdict(r[6], r[7], r[8]) == "yes" for r in vrows]
    lines += ["", f"- Merged + TTA beats merging alone (mean >= {TIE} ahead, every seed ahead) in {sum(beats_merge)} "
              f"of {len(vrows)} (setting, TTA method) cells, the best single model with the same TTA in "
              f"{sum(beats_tta)}, both in {sum(a and b for a, b in zip(beats_merge, beats_tta))}."]
    return files, lines
