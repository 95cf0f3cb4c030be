"""Tables, figures and claims of the TTA experiment, from its records (``records.json``).

- ``tta_main``: per model and method, the harmonic mean H of mIoU over the target
  domains in each stream setting (mean ± std over seeds);
- ``tta_domains.csv``: every (seed, model, method, setting, domain) mIoU;
- ``tta_claims``: every claim below with its per-seed paired differences, their mean, 2 SE,
  the seeds and the verdict of the project's one pre-declared rule
  (``analysis.verdicts.judge``: held when mean > 2 SE, not held when mean < -2 SE, else
  inconclusive), whichever way it falls;
- ``tta_batch_size.pdf``: mixed-stream mIoU against batch size, one panel per model (when
  the batch-size sweep runs);
- ``tta_stream.pdf``: running mIoU along the mixed stream at the smallest swept batch size;
- ``tta_merging`` / ``tta_merging_verdict``: the pipeline's models with and without TTA and
  claim (d) per (setting, TTA method);
- ``README.md``: the learning-rate rules with their sources, the streams, the rule, all
  tables and claims, the run's cost.

The claims, fixed before any run (per seed s, H is the harmonic mean over the domains of
the model's mIoU in the setting; every claim is a paired per-seed difference d_s that the
claim says is > 0):

(a) "Tent collapses" (SAR, Niu et al. 2023, Sec. 4), per model and wild setting (mixed,
    batch1, imbalance, corrupted): d = H(no TTA) - H(Tent);
(b) "SAR beats Tent" (SAR, Sec. 5), per model and wild setting: d = H(SAR) - H(Tent);
(c) "BN-adapt beats no TTA" (Schneider et al. 2020), per BatchNorm model and setting:
    d = H(BN-adapt) - H(no TTA) (a model without BatchNorm has nothing to adapt);
(d) merging part, per setting and TTA method M: d = H(merged + M) - H(merged alone), and
    d = H(merged + M) - H(best single model + M), the best single model being the one with
    the highest seed-mean H under M in that setting, picked on these very numbers (which
    favours the single model, i.e. makes the claim harder to hold);
(e) "batch-free normalisation is more stable across settings than BatchNorm" (SAR, Sec. 4),
    per batch-free (GN / LN) model, BatchNorm model and TTA method M. Stability of a model
    under M, per seed: its worst gain over no TTA across the wild settings,
    W_s = min over wild settings w of [H_s(M, w) - H_s(no TTA, w)] (SAR's failure mode is TTA
    falling below no adaptation in some wild setting); d = W_s(GN/LN) - W_s(BN).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from analysis.figures import STYLE, plt, save_figure
from analysis.io import render_csv, write_text_atomic
from analysis.metrics import harmonic_mean
from analysis.tables import Summary, render_markdown, write_table
from analysis.verdicts import HELD, INCONCLUSIVE, NOT_HELD, RULE, Verdict, judge

LABELS = {"source": "no TTA", "bn_adapt": "BN-adapt", "tent": "Tent", "eata": "EATA", "sar": "SAR"}
SETTING_LABELS = {"single": "single shift", "mixed": "mixed shifts", "batch1": "batch size 1",
                  "imbalance": "label imbalance", "corrupted": "mixed + corruptions"}
WILD = ("mixed", "batch1", "imbalance", "corrupted")
BATCH_FREE = ("gn", "ln")
CLAIM_TITLES = {
    "a": "Tent collapses (no TTA H − Tent H)",
    "b": "SAR beats Tent (SAR H − Tent H)",
    "c": "BN-adapt beats no TTA (BN-adapt H − no TTA H)",
    "d": "merged + TTA beats merged alone, and the best single model with the same TTA",
    "e": "batch-free norm more stable than BatchNorm (worst wild-setting gain over no TTA, GN/LN − BN)",
}
# The learning rates (experiments/tta/common.py:sar_lr), with their sources; this module
# does not import the experiments layer, so the rule is restated here and tested against it.
LR_RULES = [
    "Tent (Wang et al., ICLR 2021, Sec. 4, ImageNet-C): SGD, momentum 0.9, lr 0.00025 at batch 64; "
    "no rule for other batch sizes (the released DequanWang/tent code has only a CIFAR-10-C example, "
    "Adam 1e-3 at batch 128).",
    "EATA (Niu et al., ICML 2022, Sec. 5): SGD, momentum 0.9, lr 0.00025 at batch 64; the released "
    "mr-eggplant/EATA main.py hard-codes 0.00025 whatever the batch size.",
    "SAR (Niu et al., ICLR 2023): the released mr-eggplant/SAR main.py, which runs Tent, EATA and SAR "
    "in the wild-world settings, sets for BN and GN ResNets `lr = (0.00025 / 64) * bs * 2 if bs < 32 "
    "else 0.00025` (0.00025 x B / 32 below batch 32, 0.00025 from 32 up, so 0.00025 at Tent's and "
    "EATA's batch 64) and doubles SAR's rate at batch size 1 (`exp_type == 'bs1'`: \"double lr for sar "
    "under bs=1\").",
    "Here, as in SAR's wild-world protocol, every method takes SAR's rule (experiments/tta/common.py "
    "`sar_lr`). No TTA hyper-parameter is chosen on TTA results.",
]


def sar_lr(batch_size: int, method: str = "tent", base_lr: float = 0.00025) -> float:
    """SAR's learning-rate rule, restated (tests pin it to ``experiments.tta.common.sar_lr``)."""
    lr = (base_lr / 64) * batch_size * 2 if batch_size < 32 else base_lr
    return 2 * lr if method == "sar" and batch_size == 1 else lr


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


def seed_h(records: Sequence[dict]) -> dict[tuple[str, str, str], dict[int, float]]:
    """(model, method, setting) -> seed -> H over the domains of that stream setting."""
    out: dict[tuple[str, str, str], dict[int, float]] = {}
    for (seed, model, method, setting), scores in _domain_scores(records).items():
        out.setdefault((model, method, setting), {})[int(seed)] = harmonic_mean(list(scores.values()))
    return out


# ----------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    """One judged claim: which (a-e), where it was measured, and its verdict."""

    key: str
    part: str
    model: str
    setting: str
    method: str
    verdict: Verdict

    @property
    def seeds(self) -> int:
        return len(self.verdict.differences)


def _judge(statement: str, claimed: Mapping[int, float], other: Mapping[int, float]) -> Verdict | None:
    """``judge`` on the seeds both series have (sorted); None when they share none."""
    seeds = sorted(set(claimed) & set(other))
    if not seeds:
        return None
    return judge(statement, [claimed[s] for s in seeds], [other[s] for s in seeds])


def _norms(records: Sequence[dict]) -> dict[str, str]:
    return {r["model"]: str(r.get("norm", "bn")) for r in records}


def bn_adapt_claims(records: Sequence[dict], settings: Sequence[str], part: str) -> list[Claim]:
    """(c) per BatchNorm model and setting."""
    h, out = seed_h(records), []
    for model, norm in _norms(records).items():
        if norm != "bn":
            continue
        for setting in settings:
            a, b = h.get((model, "bn_adapt", setting)), h.get((model, "source", setting))
            if a and b:
                v = _judge(f"BN-adapt beats no TTA ({model}, {SETTING_LABELS.get(setting, setting)})", a, b)
                if v:
                    out.append(Claim("c", part, model, setting, "bn_adapt", v))
    return out


def stability(h: Mapping[tuple[str, str, str], Mapping[int, float]], model: str, method: str,
              settings: Sequence[str]) -> dict[int, float]:
    """Per seed, the worst gain of ``method`` over no TTA across ``settings`` (claim (e));
    only seeds measured in every setting."""
    gains: dict[int, list[float]] = {}
    for setting in settings:
        ours, base = h.get((model, method, setting), {}), h.get((model, "source", setting), {})
        for seed in set(ours) & set(base):
            gains.setdefault(seed, []).append(ours[seed] - base[seed])
    return {seed: min(g) for seed, g in gains.items() if len(g) == len(settings)}


def norms_claims(records: Sequence[dict], settings: Sequence[str]) -> list[Claim]:
    """Claims (a), (b), (c) and (e) on the norms part's records (see the module docstring)."""
    h = seed_h(records)
    norms = _norms(records)
    wild = [s for s in settings if s in WILD]
    out: list[Claim] = []
    for model in norms:
        for setting in wild:
            label = SETTING_LABELS[setting]
            tent, src, sar = (h.get((model, m, setting)) for m in ("tent", "source", "sar"))
            if tent and src:
                v = _judge(f"Tent collapses: H below no TTA's ({model}, {label})", src, tent)
                if v:
                    out.append(Claim("a", "norms", model, setting, "tent", v))
            if sar and tent:
                v = _judge(f"SAR beats Tent ({model}, {label})", sar, tent)
                if v:
                    out.append(Claim("b", "norms", model, setting, "sar", v))
    out += bn_adapt_claims(records, settings, "norms")
    methods = list(dict.fromkeys(r["method"] for r in records if r["method"] != "source"))
    batch_norm = [m for m, n in norms.items() if n == "bn"]
    for free in (m for m, n in norms.items() if n in BATCH_FREE):
        for bn_model in batch_norm:
            for method in methods:
                a, b = stability(h, free, method, wild), stability(h, bn_model, method, wild)
                v = _judge(f"{free} more stable than {bn_model} under {LABELS.get(method, method)} "
                           "(worst wild-setting gain over no TTA)", a, b) if wild else None
                if v:
                    out.append(Claim("e", "norms", f"{free} vs {bn_model}", "worst of " + "/".join(wild), method, v))
    return out


def best_single(h: Mapping[tuple[str, str, str], Mapping[int, float]], singles: Sequence[str], method: str,
                setting: str) -> str | None:
    """The single model with the highest seed-mean H under ``method`` in ``setting``."""
    scored = [(float(np.mean(list(h[(m, method, setting)].values()))), m) for m in singles
              if h.get((m, method, setting))]
    return max(scored)[1] if scored else None


def merging_claims(records: Sequence[dict], merged: str, methods: Sequence[str], settings: Sequence[str]
                   ) -> list[Claim]:
    """Claim (d) per (setting, TTA method): merged + TTA against merged alone and against the
    best single model with the same TTA; then (c) for the part's BatchNorm models."""
    h = seed_h([r for r in records if r.get("part") == "merging"])
    models = list(dict.fromkeys(k[0] for k in h))
    singles = [m for m in models if m != merged]
    out = []
    for setting in settings:
        label = SETTING_LABELS.get(setting, setting)
        for method in (m for m in methods if m != "source"):
            ours = h.get((merged, method, setting))
            if not ours:
                continue
            alone = h.get((merged, "source", setting))
            if alone:
                v = _judge(f"{merged} + {LABELS.get(method, method)} beats {merged} alone ({label})", ours, alone)
                if v:
                    out.append(Claim("d", "merging", merged, setting, method, v))
            best = best_single(h, singles, method, setting)
            if best:
                v = _judge(f"{merged} + {LABELS.get(method, method)} beats the best single model + "
                           f"{LABELS.get(method, method)} ({best}, {label})", ours, h[(best, method, setting)])
                if v:
                    out.append(Claim("d", "merging", f"{merged} vs {best}", setting, method, v))
    return out


def _two_se(v: Verdict, digits: int = 2) -> str:
    return "–" if v.standard_error != v.standard_error else f"{2 * v.standard_error:.{digits}f}"


CLAIM_HEADER = ["Claim", "Statement", "Mean difference", "2 SE", "Seeds", "Verdict"]
CLAIM_CSV_HEADER = ["claim", "part", "model", "setting", "method", "statement", "mean_difference", "two_se",
                    "seeds", "verdict", "differences"]


def claim_rows(claims: Sequence[Claim]) -> tuple[list[list[str]], list[list[Any]]]:
    shown = [[f"({c.key})", c.verdict.claim, f"{c.verdict.mean:+.3f}", _two_se(c.verdict, 3), str(c.seeds),
              c.verdict.verdict] for c in claims]
    raw = [[c.key, c.part, c.model, c.setting, c.method, c.verdict.claim, round(c.verdict.mean, 4),
            "" if c.verdict.standard_error != c.verdict.standard_error else round(2 * c.verdict.standard_error, 4),
            c.seeds, c.verdict.verdict, " ".join(f"{d:.4f}" for d in c.verdict.differences)] for c in claims]
    return shown, raw


def claim_counts(claims: Sequence[Claim]) -> list[str]:
    """One line per claim letter: how many of its cells held / not held / inconclusive."""
    lines = []
    for key, title in CLAIM_TITLES.items():
        mine = [c for c in claims if c.key == key]
        if mine:
            counts = {v: sum(c.verdict.verdict == v for c in mine) for v in (HELD, NOT_HELD, INCONCLUSIVE)}
            lines.append(f"- ({key}) {title}: held in {counts[HELD]}, not held in {counts[NOT_HELD]}, "
                         f"inconclusive in {counts[INCONCLUSIVE]} of {len(mine)}.")
    return lines


def write_report(records: Sequence[dict], cfg: Mapping[str, Any], out_dir: str | Path, note: str = "",
                 missing: Sequence[str] = (), timing: Mapping[str, float] | None = None) -> list[Path]:
    """Tables, figures, claims and README.md of one run; ``missing``: pipeline models skipped,
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
    domains = ", ".join(cfg.get("domains") or [])
    caption = (f"Test-time adaptation on the targets ({domains}): H of mIoU (%) over the domains, "
               f"mean ± std over {len(cfg['seeds'])} seed(s)")
    outputs = write_table(out_dir / "tta_main", header, rows, csv_header, csv_rows, caption, note) if rows else []

    domain_rows = [[*key, d, round(v, 3)] for key, scores in _domain_scores(everything).items()
                   for d, v in scores.items()]
    write_text_atomic(out_dir / "tta_domains.csv",
                      render_csv(["seed", "model", "method", "setting", "domain", "miou"], domain_rows))
    outputs.append(out_dir / "tta_domains.csv")
    outputs += list(_figures(records, models, methods, out_dir, note))
    merging_files, merging_lines, merging_claim_list = write_merging_tables(everything, cfg, out_dir, note)
    outputs += merging_files
    claims = sorted(norms_claims(records, settings) + merging_claim_list, key=lambda c: c.key)  # stable: (a)..(e)
    shown, raw = claim_rows(claims)
    claims_caption = f"Claims and their pre-declared verdicts ({RULE}); differences in H points"
    outputs += write_table(out_dir / "tta_claims", CLAIM_HEADER, shown, CLAIM_CSV_HEADER, raw, claims_caption, note)
    readme = _readme(cfg, note, render_markdown(header, rows, caption, "") if rows else "",
                     render_markdown(CLAIM_HEADER, shown, claims_caption, "") if shown else "", claims,
                     merging_lines, missing, timing, records, out_dir, everything)
    write_text_atomic(out_dir / "README.md", readme)
    return outputs + [out_dir / "README.md"]


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


def _learning_rates(records: Sequence[dict]) -> str:
    """The learning rates the records ran with, per method and batch size."""
    used: dict[tuple[str, int], set] = {}
    for r in records:
        if r.get("lr") is not None:
            used.setdefault((r["method"], int(r["batch_size"])), set()).add(float(r["lr"]))
    if not used:
        return ""
    parts = [f"{LABELS.get(m, m)} at batch {b}: {', '.join(f'{v:.4g}' for v in sorted(vs))}"
             for (m, b), vs in sorted(used.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    return "Learning rates used (from the records): " + "; ".join(parts) + "."


def _stream_lines(cfg: Mapping[str, Any], part: str) -> str:
    sizes = (cfg.get("stream_images") or {}).get(part) or {}
    if not sizes:
        return ""
    order = [d for d in cfg.get("domains") or [] if d in sizes] + [d for d in sizes if d not in (cfg.get("domains") or [])]
    per = "; ".join(f"{d} " + " + ".join(f"{n} {split}" for split, n in sizes[d].items()) for d in order)
    return f"Stream images per target (labelled images of the splits used): {per}."


def _readme(cfg, note, main_md, claims_md, claims, merging_lines, missing, timing, records, out_dir: Path,
            all_records: Sequence[dict] = ()) -> str:
    import json

    resets = sum(r.get("recoveries", 0) for r in records)
    sar_options = (cfg.get("method_options") or {}).get("sar") or {}
    settings = [s for s in cfg["settings"]]
    lines = ["# Test-time adaptation on the miniature (measured)", "", f"> {note}" if note else "", "",
             "`python -m experiments.adapt` (configs/adapt.yaml; this file is written by analysis/tta.py). "
             f"Seeds {list(cfg['seeds'])}, batch {cfg['batch_size']} (batch 1 in the batch-size-1 setting), "
             f"E_0 = 0.4 ln {cfg['classes']}, EATA eps 0.05 and lambda 2000, SAR rho 0.05, "
             f"e_m {sar_options.get('reset_threshold', 0.2)}, SAR frozen: {list(sar_options.get('exclude') or [])}, "
             f"lr multiplier {cfg.get('lr_multiplier', 1.0)}.", ""]
    if timing:
        lines.append(f"Run time {timing['wall_s'] / 60:.1f} min wall, {timing['cpu_s'] / 60:.1f} min CPU "
                     f"({cfg.get('threads', 1)} thread(s)); source models reused when cached.")
        lines.append("")
    lines += ["## Learning rates and their sources", "", *(f"- {line}" for line in LR_RULES)]
    used = _learning_rates(all_records)
    if used:
        lines.append(f"- {used}")
    lines += ["", "## Verdicts", "",
              f"One pre-declared rule decides every claim (analysis/verdicts.py): {RULE}. The claims and how "
              "each is measured per seed are fixed in analysis/tta.py's docstring before any run; "
              "tta_claims.csv holds every per-seed difference. The rule has no minimum effect size: a "
              "difference of a few thousandths of a point that every seed shares is held (or not held) as "
              "firmly as a large one, so read each verdict beside its mean difference.", "",
              "- (e) measures stability per seed as the worst gain of the TTA method over no TTA across the "
              f"wild settings ({', '.join(s for s in settings if s in WILD)}): W_s = min_w [H_s(method, w) − "
              "H_s(no TTA, w)]; the claim compares W_s of the GN/LN model with W_s of the BN model seed by "
              "seed. A model without BatchNorm gets exactly 0 from BN-adapt (nothing to adapt).", "",
              *claim_counts(claims), ""]
    if claims_md:
        lines += [claims_md]
    if main_md:
        lines += ["## Normalisation variants in wild streams (SAR's claims)", "",
                  f"Source-only `mini_r18` per normalisation ({', '.join(cfg.get('norms') or [])}), trained on the "
                  "GTA-like source; streams from the splits " + str(list(cfg.get("splits") or ["val"])) + ", "
                  + ("all labelled images" if not cfg.get("images_per_domain") else
                     f"{cfg['images_per_domain']} images") + " per target; H of mIoU over the domains.",
                  _stream_lines(cfg, "norms"), "", main_md,
                  f"- SAR recovery resets over all streams: {resets}."]
        lines += _sweep_lines(records)
    if merging_lines:
        merging = cfg.get("merging") or {}
        lines += ["", "## TTA on the pipeline's models: merging + TTA", "",
                  f"Models from the study pipeline's run folders (runs_root `{cfg['runs_root']}`); streams from "
                  f"the splits {list(merging.get('splits') or cfg.get('splits') or ['val'])}, "
                  + ("all labelled images" if not merging.get("images_per_domain") else
                     f"{merging['images_per_domain']} images") + " per target; seed s adapts the seed-s models. "
                  "The best single model is picked on these numbers, which favours TTA alone.",
                  _stream_lines(cfg, "merging"), "", *merging_lines]
    gap = _gradient_gap(all_records)
    if gap is not None:
        lines += ["", f"- Every stream, both parts: the largest difference between a gradient method (Tent, EATA, "
                  f"SAR) and BN-adapt on the same stream is {gap:.3f} mIoU; where it is near 0 the gradient "
                  "methods' gain over no TTA is the test-batch statistics alone."]
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


REPORT_INPUTS = "report_inputs.json"


def rerender(out_dir: str | Path) -> list[Path]:
    """Write the report again from ``records.json`` and ``report_inputs.json`` (the
    configuration, note, skipped models and timing the run wrote beside them), e.g. after
    a change to this module: ``python -m analysis.tta results/tta``."""
    import json

    out_dir = Path(out_dir)
    records = json.loads((out_dir / "records.json").read_text())
    inputs = json.loads((out_dir / REPORT_INPUTS).read_text())
    return write_report(records, inputs["cfg"], out_dir, inputs.get("note", ""), inputs.get("missing") or [],
                        inputs.get("timing"))


# ----------------------------------------------------------------- merging part
def merging_scores(records: Sequence[dict]) -> dict[tuple, dict[str, float]]:
    """(seed, model, method, setting) -> domain -> mIoU, merging part only."""
    return _domain_scores([r for r in records if r.get("part") == "merging"])


def _h(table: Mapping[tuple, dict[str, float]], seed: int, model: str, method: str, setting: str) -> float:
    values = table.get((seed, model, method, setting))
    return harmonic_mean(list(values.values())) if values else float("nan")


def _shown_verdict(claim: Claim | None) -> tuple[str, str]:
    if claim is None:
        return "–", "–"
    return f"{claim.verdict.mean:+.2f} ({_two_se(claim.verdict)})", claim.verdict.verdict


def _csv_verdict(claim: Claim | None) -> list[Any]:
    """mean difference, 2 SE and verdict of ``claim`` for a CSV row (blank when absent)."""
    if claim is None:
        return ["", "", ""]
    v = claim.verdict
    return [round(v.mean, 3), round(2 * v.standard_error, 3) if v.standard_error == v.standard_error else "", v.verdict]


def write_merging_tables(records: Sequence[dict], cfg: Mapping[str, Any], out_dir: str | Path, note: str
                         ) -> tuple[list[Path], list[str], list[Claim]]:
    """Write the merging table and claim (d)'s table; return the files, the Markdown lines for
    the README and the part's claims ((d), and (c) for its BatchNorm models)."""
    out_dir = Path(out_dir)
    table = merging_scores(records)
    if not table:
        return [], [], []
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
    merging_records = [r for r in records if r.get("part") == "merging"]
    lines = render_markdown(header, rows, caption, "").splitlines()
    merged = next((m for m in models if m.startswith("merged")), None)
    part_claims = bn_adapt_claims(merging_records, settings, "merging")
    if merged is None:
        return files, lines, part_claims
    claims = merging_claims(merging_records, merged, methods, settings)
    h = seed_h(merging_records)
    singles = [m for m in models if m != merged]
    vheader = ["Setting", "TTA", "Best single model", f"H {merged} + TTA", "− merged alone (2 SE)", "beats merging",
               "− best single + TTA (2 SE)", "beats TTA alone"]
    shown, csv_v = [], []
    for setting in settings:
        for method in (m for m in methods if m != "source"):
            alone = next((c for c in claims if c.setting == setting and c.method == method and c.model == merged), None)
            versus = next((c for c in claims if c.setting == setting and c.method == method and c.model != merged), None)
            best = best_single(h, singles, method, setting) or "–"
            values = h.get((merged, method, setting), {})
            mean_h = float(np.mean(list(values.values()))) if values else float("nan")
            shown.append([SETTING_LABELS.get(setting, setting), LABELS.get(method, method), best, f"{mean_h:.1f}",
                          *_shown_verdict(alone), *_shown_verdict(versus)])
            csv_v.append([setting, method, best, round(mean_h, 3), *_csv_verdict(alone), *_csv_verdict(versus),
                          len(seeds)])
    files += write_table(out_dir / "tta_merging_verdict", vheader, shown,
                         ["setting", "method", "best_single", "merged_tta_h", "minus_merged", "minus_merged_two_se",
                          "beats_merging", "minus_single_tta", "minus_single_tta_two_se", "beats_tta_alone", "seeds"],
                         csv_v, f"Claim (d): merged model + TTA against merging alone and TTA alone (H, mIoU points; "
                         f"{RULE})", note)
    lines += ["", *render_markdown(vheader, shown, "Claim (d): merged + TTA against merging alone and TTA alone "
                                   "(mean per-seed difference, 2 SE in brackets, verdict)", "").splitlines()]
    return files, lines, claims + part_claims


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m analysis.tta OUT_DIR   (re-renders the report from records.json)")
    for path in rerender(sys.argv[1]):
        print(path)
