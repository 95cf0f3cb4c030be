"""Pre-declared verdicts: one rule, written before any run, decides whether a claim held.

A claim compares two quantities measured on the same seeds (e.g. "the merged model's H
beats the best single-target model's H"). Per seed s the paired difference is
d_s = claimed_s - other_s (oriented so that the claim says d > 0). With n seeds, mean m and
standard error SE = std(d, ddof 1) / sqrt(n):

- **held** when m > 2 SE (and m > 0): the difference is positive beyond twice its standard error;
- **not held** when m < -2 SE: the difference is negative beyond twice its standard error;
- **inconclusive** otherwise (including n < 2, where no standard error exists).

Two standard errors is about a 95 % interval for the mean under a normal approximation; with
3 seeds it is a loose test, which is why ``seeds=[0,1,2,3,4]`` is documented for tighter
answers. The rule is the same for every claim of every study; nothing is tuned per claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
RULE = ("per-seed paired difference d (claim says d > 0): held if mean(d) > 2 SE, not held if "
        "mean(d) < -2 SE, else inconclusive; SE = std(d) / sqrt(n)")


@dataclass(frozen=True)
class Verdict:
    claim: str
    differences: tuple[float, ...]
    mean: float
    standard_error: float
    verdict: str

    def describe(self, digits: int = 2) -> str:
        if math.isnan(self.standard_error):
            spread = "n/a"
        else:
            spread = f"{self.standard_error:.{digits}f}"
        return (f"{self.claim}: {self.verdict} (mean difference {self.mean:+.{digits}f}, "
                f"2 SE {'n/a' if spread == 'n/a' else f'{2 * self.standard_error:.{digits}f}'}, "
                f"{len(self.differences)} seeds)")


def judge(claim: str, claimed: Sequence[float], other: Sequence[float]) -> Verdict:
    """The verdict on ``claimed > other``, paired by position (seed)."""
    if len(claimed) != len(other):
        raise ValueError(f"{claim}: {len(claimed)} values against {len(other)}; pair them by seed")
    differences = tuple(float(a) - float(b) for a, b in zip(claimed, other))
    return judge_differences(claim, differences)


def judge_differences(claim: str, differences: Sequence[float]) -> Verdict:
    differences = tuple(float(d) for d in differences)
    n = len(differences)
    if n == 0:
        raise ValueError(f"{claim}: no values to judge")
    mean = sum(differences) / n
    if n < 2:
        return Verdict(claim, differences, mean, math.nan, INCONCLUSIVE)
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    se = math.sqrt(variance / n)
    if mean > 2 * se and mean > 0:
        verdict = HELD
    elif mean < -2 * se and mean < 0:
        verdict = NOT_HELD
    else:
        verdict = INCONCLUSIVE
    return Verdict(claim, differences, mean, se, verdict)
