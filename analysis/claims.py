"""The claims each study tests, and the preconditions they rest on, judged by one rule.

Every claim is a paired comparison over seeds (``analysis.verdicts``): per seed s, the
claimed quantity minus the other one; held / not held / inconclusive by the mean difference
against twice its standard error. The claims and the quantities they compare are fixed here,
before any run; a study only supplies its per-seed records ``{method, seed, domain, miou}``.

A *threshold* claim (e.g. "STDA reaches 35 mIoU") compares a per-seed value against a
constant the same way.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

from analysis.metrics import harmonic_mean
from analysis.tables import DOMAIN_NAMES
from analysis.verdicts import Verdict, judge

Scores = dict[int, dict[str, dict[str, float]]]   # seed -> method -> domain (and "H") -> mIoU


def scores(records: Iterable[Mapping], domains: Sequence[str]) -> Scores:
    out: Scores = {}
    for r in records:
        out.setdefault(int(r["seed"]), {}).setdefault(r["method"], {})[r["domain"]] = float(r["miou"])
    for per_method in out.values():
        for values in per_method.values():
            if all(d in values for d in domains):
                values["H"] = harmonic_mean([values[d] for d in domains])
    return out


def _series(table: Scores, pick: Callable[[dict[str, dict[str, float]]], float]) -> list[float]:
    return [pick(table[seed]) for seed in sorted(table)]


def _has(table: Scores, *methods: str) -> bool:
    return bool(table) and all(m in table[s] for s in table for m in methods)


def calibration_claims(table: Scores) -> list[Verdict]:
    """The stand-in's preconditions (docs/calibration.md)."""
    out = []
    if _has(table, "stda_cityscapes", "stda_idd"):
        out.append(judge("STDA GTA→Cityscapes beats STDA GTA→IDD on Cityscapes",
                         _series(table, lambda t: t["stda_cityscapes"]["cityscapes"]),
                         _series(table, lambda t: t["stda_idd"]["cityscapes"])))
        out.append(judge("STDA GTA→IDD beats STDA GTA→Cityscapes on IDD",
                         _series(table, lambda t: t["stda_idd"]["idd"]),
                         _series(table, lambda t: t["stda_cityscapes"]["idd"])))
        for model, domain in (("stda_cityscapes", "cityscapes"), ("stda_idd", "idd")):
            out.append(judge(f"STDA GTA→{DOMAIN_NAMES[domain]} reaches 35 mIoU on {DOMAIN_NAMES[domain]}",
                             _series(table, lambda t, m=model, d=domain: t[m][d]), [35.0] * len(table)))
    if _has(table, "source_only"):
        for domain in ("cityscapes", "idd"):
            out.append(judge(f"source-only reaches 20 mIoU on {DOMAIN_NAMES[domain]}",
                             _series(table, lambda t, d=domain: t["source_only"][d]), [20.0] * len(table)))
    for domain in ("cityscapes", "idd"):
        stda, oracle = f"stda_{domain}", f"oracle_{domain}"
        if _has(table, stda, "source_only"):
            out.append(judge(f"self-training beats source-only on {DOMAIN_NAMES[domain]}",
                             _series(table, lambda t, m=stda, d=domain: t[m][d]),
                             _series(table, lambda t, d=domain: t["source_only"][d])))
        if _has(table, stda, oracle):
            out.append(judge(f"the {DOMAIN_NAMES[domain]} oracle beats self-training on {DOMAIN_NAMES[domain]}",
                             _series(table, lambda t, m=oracle, d=domain: t[m][d]),
                             _series(table, lambda t, m=stda, d=domain: t[m][d])))
    return out


def table1_claims(table: Scores) -> list[Verdict]:
    """The paper's Table 1 claims (and its precondition) on H over Cityscapes and IDD."""
    out = [v for v in calibration_claims(table) if "beats STDA" in v.claim or "35 mIoU" in v.claim]
    if not _has(table, "stda_cityscapes", "stda_idd"):
        return out
    best = lambda t: max(t["stda_cityscapes"]["H"], t["stda_idd"]["H"])  # noqa: E731  (per seed)
    if _has(table, "merged_pooled"):
        out.append(judge("merged (params + pooled buffers) H beats the best single-target H",
                         _series(table, lambda t: t["merged_pooled"]["H"]), _series(table, best)))
    if _has(table, "merged_pooled", "merged_first_buffers"):
        out.append(judge("pooled BatchNorm buffers beat model-1 buffers (H)",
                         _series(table, lambda t: t["merged_pooled"]["H"]),
                         _series(table, lambda t: t["merged_first_buffers"]["H"])))
    if _has(table, "merged_encoder_only", "merged_pooled"):
        out.append(judge("the encoder-only merge beats the full merge (H)",
                         _series(table, lambda t: t["merged_encoder_only"]["H"]),
                         _series(table, lambda t: t["merged_pooled"]["H"])))
    if _has(table, "merged_pooled", "data_combination"):
        out.append(judge("merged (pooled) H beats data combination H",
                         _series(table, lambda t: t["merged_pooled"]["H"]),
                         _series(table, lambda t: t["data_combination"]["H"])))
    return out


def method_claims(records: Iterable[Mapping], settings: Mapping[str, Sequence[str]], baseline: str,
                  labels: Mapping[str, str] | None = None) -> dict[tuple[str, str], Verdict]:
    """Per setting and method: "the method's H beats the baseline's H" (the methods study).

    ``records`` carry a ``setting`` key; ``settings`` maps each setting to its domains. Keyed by
    (method, setting); the baseline itself is not judged against itself.
    """
    labels = dict(labels or {})
    records = list(records)
    out: dict[tuple[str, str], Verdict] = {}
    for setting, domains in settings.items():
        table = scores([r for r in records if r["setting"] == setting], domains)
        if not _has(table, baseline):
            continue
        methods = dict.fromkeys(m for per_seed in table.values() for m in per_seed)
        for method in methods:
            if method == baseline or not _has(table, method):
                continue
            out[(method, setting)] = judge(
                f"{labels.get(method, method)} H beats {labels.get(baseline, baseline)} H ({setting})",
                _series(table, lambda t, m=method: t[m]["H"]), _series(table, lambda t: t[baseline]["H"]))
    return out


def table4_claims(table: Scores) -> list[Verdict]:
    """The paper's Table 4: pooled buffers help, and help a BatchNorm backbone more than a
    LayerNorm one (whose only BatchNorm is in the decode head)."""
    out = []
    for norm, label in (("bn", "BatchNorm"), ("ln", "LayerNorm")):
        if _has(table, f"{norm}_pooled", f"{norm}_midpoint"):
            out.append(judge(f"{label} backbone: pooled buffers beat model-1 buffers (H)",
                             _series(table, lambda t, n=norm: t[f"{n}_pooled"]["H"]),
                             _series(table, lambda t, n=norm: t[f"{n}_midpoint"]["H"])))
    if _has(table, "bn_pooled", "bn_midpoint", "ln_pooled", "ln_midpoint"):
        gain = lambda t, n: t[f"{n}_pooled"]["H"] - t[f"{n}_midpoint"]["H"]  # noqa: E731
        out.append(judge("pooling gains more H on the BatchNorm backbone than on the LayerNorm one",
                         _series(table, lambda t: gain(t, "bn")), _series(table, lambda t: gain(t, "ln"))))
    return out


def table3_claims(table: Scores) -> list[Verdict]:
    """The paper's Table 3 on four targets: merging all four models, and the paper's best
    subset (IDD + Dark Zurich), beat the best single-target model's H (per seed)."""
    singles = [m for m in ("C", "I", "A", "D") if _has(table, m)]
    if len(singles) < 2:
        return []
    best = lambda t: max(t[m]["H"] for m in singles)  # noqa: E731
    out = []
    for merge, label in (("C+I+A+D", "the merge of all four models"), ("I+D", "the IDD + Dark Zurich merge")):
        if _has(table, merge):
            out.append(judge(f"{label} beats the best single-target model (H over four targets)",
                             _series(table, lambda t, m=merge: t[m]["H"]), _series(table, best)))
    return out


def lmc_claims(barriers: Mapping[str, Sequence[float]], titles: Mapping[str, str] | None = None) -> list[Verdict]:
    """The paper's interpolation claim: the path between models that share the pretrained init
    stays connected, and breaks (a barrier) with different or with no pretraining. Judged as
    per-seed differences of the H barrier against curve ``shared_pretraining``."""
    titles = dict(titles or {})
    reference = barriers.get("shared_pretraining")
    if reference is None:
        return []
    out = []
    for curve in ("different_init", "no_pretraining"):
        if curve in barriers and len(barriers[curve]) == len(reference):
            out.append(judge(f"{titles.get(curve, curve)}: a larger H barrier than with shared pretraining",
                             list(barriers[curve]), list(reference)))
    return out


CLAIMS = {"calibration": calibration_claims, "table1": table1_claims, "table3": table3_claims,
          "table4": table4_claims}


def claims_of(kind: str | None, records: Iterable[Mapping], domains: Sequence[str]) -> list[Verdict]:
    if not kind:
        return []
    if kind not in CLAIMS:
        raise ValueError(f"unknown claims {kind!r}; known: {sorted(CLAIMS)}")
    return CLAIMS[kind](scores(records, domains))


def write_claims(verdicts: Sequence[Verdict], out_stem, note: str = "") -> list:
    """``<stem>.md/.tex/.csv``: every claim with its numbers and verdict, the rule in the caption."""
    from analysis.tables import write_table
    from analysis.verdicts import RULE

    rows = [[v.claim, f"{v.mean:+.2f}", "–" if v.standard_error != v.standard_error else f"{2 * v.standard_error:.2f}",
             str(len(v.differences)), v.verdict] for v in verdicts]
    csv_rows = [[v.claim, round(v.mean, 4), round(2 * v.standard_error, 4) if v.standard_error == v.standard_error
                 else "", len(v.differences), v.verdict, " ".join(f"{d:.4f}" for d in v.differences)]
                for v in verdicts]
    return write_table(out_stem, ["Claim", "Mean difference", "2 SE", "Seeds", "Verdict"], rows,
                       ["claim", "mean_difference", "two_se", "seeds", "verdict", "differences"], csv_rows,
                       f"Claims and their pre-declared verdicts ({RULE})", note)
