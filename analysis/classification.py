"""Tables and figures of the classification check (``python -m experiments.classify``), each
figure with its CSV beside it, from the per-seed results the experiment writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from analysis.figures import STYLE, plt
from analysis.io import atomic_path, write_csv, write_text_atomic
from analysis.tables import mean_std
from analysis.verdicts import RULE, Verdict, judge

COLUMN_WIDTH_IN = 3.3
SUMMARY_METRICS = ("accuracy_a", "accuracy_b", "accuracy_merged", "loss_merged", "barrier")
# Not the paper's training-free merge: the midpoint with BatchNorm statistics re-estimated
# on unlabelled training images of both halves (experiment: reestimate_per_class).
DIAGNOSTIC_METRICS = ("accuracy_merged_reestimated",)


def _label(panel: str, starts: dict) -> str:
    def start(name: str | None) -> str:
        return "random" if name in (None, "random") else str(name)
    return f"{panel} ({start(starts['a'])} / {start(starts['b'])})"


def path_statistics(seeds: Sequence[dict], metric: str) -> list[list[Any]]:
    """Rows ``panel, alpha, mean, std, n`` of ``metric`` along each panel's path."""
    rows = []
    for panel in seeds[0]["panels"]:
        paths = [s["panels"][panel]["path"] for s in seeds]
        for i, point in enumerate(paths[0]):
            mean, std = mean_std([p[i][metric] for p in paths])
            rows.append([panel, point["alpha"], mean, std, len(paths)])
    return rows


def plot_path(seeds: Sequence[dict], metric: str, pdf_path: Path) -> Path:
    """Mean +- std of ``metric`` along alpha, one line per panel; CSV written beside."""
    rows = path_statistics(seeds, metric)
    write_csv(pdf_path.with_suffix(".csv"), ["panel", "alpha", "mean", "std", "seeds"], rows)
    style = {"pdf.fonttype": 42, "ps.fonttype": 42, "font.size": 8, "axes.linewidth": 0.6,
             "legend.fontsize": 6.5, "legend.frameon": False}
    with plt.style.context(str(STYLE)), plt.rc_context(style):
        figure, axis = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.3), constrained_layout=True)
        for panel in seeds[0]["panels"]:
            alpha = np.array([r[1] for r in rows if r[0] == panel])
            mean = np.array([r[2] for r in rows if r[0] == panel])
            std = np.array([r[3] for r in rows if r[0] == panel])
            line, = axis.plot(alpha, mean, marker="o", markersize=2.5, linewidth=1.2,
                              label=_label(panel, seeds[0]["panels"][panel]["starts"]))
            axis.fill_between(alpha, mean - std, mean + std, color=line.get_color(), alpha=0.2,
                              linewidth=0)
        if metric == "accuracy":
            chance = 100.0 / seeds[0]["num_classes"]
            axis.axhline(chance, color="grey", linestyle=":", linewidth=0.8, label="chance")
            axis.set_ylabel("accuracy on all classes (%)")
        else:
            axis.set_ylabel("cross-entropy on all classes")
        axis.set_xlabel(r"$\alpha$  (0: model A, half 1;  1: model B, half 2)")
        axis.set_xlim(0, 1)
        axis.legend(loc="best")
        with atomic_path(pdf_path) as tmp:
            figure.savefig(tmp, format="pdf")
        plt.close(figure)
    return pdf_path


def summarise(seeds: Sequence[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``panel -> metric -> {mean, std, seeds}`` over seeds (the diagnostic metric where
    every seed has it)."""
    summary = {}
    for panel in seeds[0]["panels"]:
        summary[panel] = {}
        extra = [m for m in DIAGNOSTIC_METRICS if all(m in s["panels"][panel] for s in seeds)]
        for metric in (*SUMMARY_METRICS, *extra):
            mean, std = mean_std([s["panels"][panel][metric] for s in seeds])
            summary[panel][metric] = {"mean": mean, "std": std, "seeds": len(seeds)}
    return summary


# The paper's three claims, each judged by the project's one rule (analysis/verdicts.py) over
# per-seed values: (claim, panel it needs, the claimed side, the other side).
CLAIMS = (
    ("pretrained merged > the better half", ("pretrained",),
     lambda p: p["pretrained"]["accuracy_merged"],
     lambda p: max(p["pretrained"]["accuracy_a"], p["pretrained"]["accuracy_b"])),
    ("random-init merged < pretrained merged", ("pretrained", "random"),
     lambda p: p["pretrained"]["accuracy_merged"], lambda p: p["random"]["accuracy_merged"]),
    ("two-pretrainings merged < pretrained merged", ("pretrained", "two_pretrainings"),
     lambda p: p["pretrained"]["accuracy_merged"], lambda p: p["two_pretrainings"]["accuracy_merged"]),
)


def verdicts(seeds: Sequence[dict]) -> list[Verdict]:
    """The verdict on each claim whose panels the run has (accuracy on all classes, %)."""
    out = []
    for claim, needed, claimed, other in CLAIMS:
        if all(panel in seeds[0]["panels"] for panel in needed):
            out.append(judge(claim, [claimed(s["panels"]) for s in seeds],
                             [other(s["panels"]) for s in seeds]))
    return out


def own_half_rows(seeds: Sequence[dict]) -> list[tuple[str, float, float, int]]:
    """``start/half, mean, std, n`` of each trained model's accuracy on its own classes."""
    rows = []
    for name in seeds[0].get("training", {}):
        values = [s["training"][name]["own_half_accuracy"] for s in seeds
                  if "own_half_accuracy" in s.get("training", {}).get(name, {})]
        if values:
            rows.append((name, *mean_std(values), len(values)))
    return rows


def summary_markdown(summary: dict, seeds: Sequence[dict], note: str) -> str:
    """The summary table (mean +- std over seeds) with the data note."""
    lines = [
        "# Classification check: merging two models trained on disjoint class halves",
        "",
        f"Seeds: {', '.join(str(s['seed']) for s in seeds)}. Accuracy (%) on the test images of "
        "all classes; a single half-model can at best reach the share of its own classes. "
        "Merged: midpoint weights with pooled BatchNorm statistics. Barrier: highest "
        "cross-entropy on the straight path (11+ points) minus the mean of the endpoints'.",
        "",
        "| panel (start A / start B) | model A | model B | merged | merged loss | loss barrier |",
        "|---|---|---|---|---|---|",
    ]
    for panel, metrics in summary.items():
        cells = [f"{metrics[m]['mean']:.2f} ± {metrics[m]['std']:.2f}" for m in SUMMARY_METRICS]
        lines.append(f"| {_label(panel, seeds[0]['panels'][panel]['starts'])} | " + " | ".join(cells) + " |")
    lines += ["", f"Chance: {100.0 / seeds[0]['num_classes']:.1f} %."]
    own = own_half_rows(seeds)
    if own:
        lines += ["", "Each trained model on the test images of its own classes (%; the half it "
                  "trained on, so 100 is reachable):", "",
                  "| start / half | accuracy on own classes |", "|---|---|"]
        lines += [f"| {name} | {mean:.2f} ± {std:.2f} |" for name, mean, std, _ in own]
    found = verdicts(seeds)
    if found:
        lines += ["", "## Verdicts", "", f"Rule (analysis/verdicts.py, declared before the runs): {RULE}. "
                  "Values: accuracy (%) on all classes, paired by seed.", ""]
        lines += [f"- {v.describe()}; per-seed differences "
                  f"{', '.join(f'{d:+.1f}' for d in v.differences)}" for v in found]
    diagnostic = {panel: metrics["accuracy_merged_reestimated"] for panel, metrics in summary.items()
                  if "accuracy_merged_reestimated" in metrics}
    if diagnostic:
        lines += ["", "## Diagnostic (not one of the claims, not the paper's merge)", "",
                  "The same midpoint weights with BatchNorm statistics re-estimated on unlabelled "
                  "training images of both halves, instead of pooled from the two models' buffers "
                  "(it needs data; the merge above does not). It measures how much of the merged "
                  "model's loss is the pooled statistics' mismatch with what the merged weights "
                  "compute (see experiments/classification/README.md).", "",
                  "| panel | merged, pooled statistics | merged, re-estimated statistics |", "|---|---|---|"]
        lines += [f"| {_label(panel, seeds[0]['panels'][panel]['starts'])} | "
                  f"{summary[panel]['accuracy_merged']['mean']:.2f} ± {summary[panel]['accuracy_merged']['std']:.2f} | "
                  f"{v['mean']:.2f} ± {v['std']:.2f} |" for panel, v in diagnostic.items()]
        if "pretrained" in diagnostic:
            v = judge("pretrained merged with re-estimated statistics > the better half",
                      [s["panels"]["pretrained"]["accuracy_merged_reestimated"] for s in seeds],
                      [max(s["panels"]["pretrained"]["accuracy_a"], s["panels"]["pretrained"]["accuracy_b"])
                       for s in seeds])
            lines += ["", f"- (same rule) {v.describe()}; per-seed differences "
                      f"{', '.join(f'{d:+.1f}' for d in v.differences)}"]
    lines += ["", f"Note: {note}", ""]
    return "\n".join(lines)


def write_outputs(seeds: Sequence[dict], out_dir: Path, note: str
                  ) -> tuple[dict[str, Path], dict]:
    """Write raw path CSV, two figures (+CSV), summary CSV and markdown; return paths."""
    if not seeds:
        raise ValueError("no seed results to summarise")
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"path_csv": out_dir / "interpolation.csv"}
    raw = [[panel, s["seed"], row["alpha"], row["accuracy"], row["loss"]]
           for s in seeds for panel, result in s["panels"].items() for row in result["path"]]
    write_csv(outputs["path_csv"], ["panel", "seed", "alpha", "accuracy", "loss"], raw)
    for metric in ("accuracy", "loss"):
        pdf = plot_path(seeds, metric, out_dir / f"interpolation_{metric}.pdf")
        outputs[f"{metric}_pdf"], outputs[f"{metric}_csv"] = pdf, pdf.with_suffix(".csv")
    summary = summarise(seeds)
    outputs["summary_csv"] = out_dir / "summary.csv"
    write_csv(outputs["summary_csv"], ["panel", "start_a", "start_b", "metric", "mean", "std", "seeds"],
               [[panel, seeds[0]["panels"][panel]["starts"]["a"], seeds[0]["panels"][panel]["starts"]["b"],
                 metric, v["mean"], v["std"], v["seeds"]]
                for panel, metrics in summary.items() for metric, v in metrics.items()])
    found = verdicts(seeds)
    if found:
        outputs["verdicts_csv"] = out_dir / "verdicts.csv"
        write_csv(outputs["verdicts_csv"], ["claim", "verdict", "mean_difference", "standard_error", "seeds",
                                            "differences"],
                  [[v.claim, v.verdict, v.mean, v.standard_error, len(v.differences),
                    " ".join(f"{d:.4f}" for d in v.differences)] for v in found])
    outputs["summary_md"] = out_dir / "summary.md"
    write_text_atomic(outputs["summary_md"], summary_markdown(summary, seeds, note))
    return outputs, summary
