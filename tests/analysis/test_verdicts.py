"""The one pre-declared verdict rule: paired difference against twice its standard error."""

import math

import pytest

from analysis.verdicts import HELD, INCONCLUSIVE, NOT_HELD, judge, judge_differences


def test_the_rule_on_hand_computed_cases():
    # d = (1, 2, 3): mean 2, std 1, SE 1/sqrt(3) = 0.577: 2 > 1.155 -> held
    v = judge("a beats b", [11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert v.differences == (1.0, 2.0, 3.0) and v.mean == 2.0
    assert v.standard_error == pytest.approx(1 / math.sqrt(3)) and v.verdict == HELD
    assert judge_differences("x", [-1.0, -2.0, -3.0]).verdict == NOT_HELD
    # d = (1, -1, 2): mean 0.667, SE 0.882: inside +-2 SE -> inconclusive
    assert judge_differences("x", [1.0, -1.0, 2.0]).verdict == INCONCLUSIVE
    assert judge_differences("x", [5.0]).verdict == INCONCLUSIVE  # one seed: no standard error
    assert judge_differences("x", [0.0, 0.0, 0.0]).verdict == INCONCLUSIVE
    assert judge_differences("x", [0.5, 0.5, 0.5]).verdict == HELD  # no spread, positive
    assert "held (mean difference +2.00" in v.describe()
    with pytest.raises(ValueError, match="pair them by seed"):
        judge("x", [1.0, 2.0], [1.0])
