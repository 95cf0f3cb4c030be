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


def test_table1_claims_pair_each_seed_and_compare_the_declared_quantities():
    from analysis.claims import claims_of

    records = []
    for seed, shift in enumerate((0.0, 1.0, 2.0)):
        for method, cs, idd in (("stda_cityscapes", 40 + shift, 20), ("stda_idd", 30, 36 + shift),
                                ("merged_pooled", 38, 34), ("merged_first_buffers", 38 - shift, 34),
                                ("merged_encoder_only", 38, 34), ("data_combination", 39, 35)):
            records += [{"method": method, "seed": seed, "domain": "cityscapes", "miou": cs},
                        {"method": method, "seed": seed, "domain": "idd", "miou": idd}]
    verdicts = {v.claim: v for v in claims_of("table1", records, ["cityscapes", "idd"])}
    own = verdicts["STDA GTA→Cityscapes beats STDA GTA→IDD on Cityscapes"]
    assert own.differences == (10.0, 11.0, 12.0) and own.verdict == HELD
    level = verdicts["STDA GTA→IDD reaches 35 mIoU on IDD"]
    assert level.differences == (1.0, 2.0, 3.0) and level.verdict == HELD
    assert verdicts["STDA GTA→Cityscapes reaches 35 mIoU on Cityscapes"].verdict == HELD
    # H of the merge (2*38*34/72 = 35.89) against the better STDA model's H per seed:
    # seed 0: max(H(40,20) = 26.67, H(30,36) = 32.73) -> +3.16
    merged = verdicts["merged (params + pooled buffers) H beats the best single-target H"]
    assert merged.differences[0] == pytest.approx(2 * 38 * 34 / 72 - 2 * 30 * 36 / 66)
    # pooled vs model-1 buffers: equal at seed 0, then H(38,34) - H(37,34), H(38,34) - H(36,34)
    buffers = verdicts["pooled BatchNorm buffers beat model-1 buffers (H)"]
    assert buffers.differences[0] == 0.0 and buffers.differences[2] > buffers.differences[1] > 0
    assert verdicts["the encoder-only merge beats the full merge (H)"].verdict == INCONCLUSIVE  # all zero
    assert verdicts["merged (pooled) H beats data combination H"].verdict == NOT_HELD


def _records(rows):
    return [{"method": m, "seed": seed, "domain": d, "miou": v} for m, seed, d, v in rows]


def test_table4_claims_compare_the_pooling_gain_per_backbone():
    from analysis.claims import claims_of

    rows = []
    for seed in range(3):
        for method, value in (("bn_midpoint", 20), ("bn_pooled", 22 + seed), ("ln_midpoint", 30), ("ln_pooled", 30)):
            rows += [(method, seed, "cityscapes", value), (method, seed, "idd", value)]
    verdicts = {v.claim: v for v in claims_of("table4", _records(rows), ["cityscapes", "idd"])}
    assert verdicts["BatchNorm backbone: pooled buffers beat model-1 buffers (H)"].differences == (2.0, 3.0, 4.0)
    assert verdicts["LayerNorm backbone: pooled buffers beat model-1 buffers (H)"].verdict == INCONCLUSIVE
    gain = verdicts["pooling gains more H on the BatchNorm backbone than on the LayerNorm one"]
    assert gain.differences == (2.0, 3.0, 4.0) and gain.verdict == HELD


def test_table3_claims_take_the_best_single_model_per_seed():
    from analysis.claims import claims_of

    domains = ["cityscapes", "idd", "acdc", "darkzurich"]
    rows = []
    for seed in range(3):
        best = 10.0 + seed  # which single model is best changes with the seed
        for method in ("C", "I", "A", "D"):
            value = best if method == "CIAD"[seed] else 5.0
            rows += [(method, seed, d, value) for d in domains]
        rows += [("C+I+A+D", seed, d, 9.0) for d in domains] + [("I+D", seed, d, 20.0) for d in domains]
    verdicts = {v.claim: v for v in claims_of("table3", _records(rows), domains)}
    every = verdicts["the merge of all four models beats the best single-target model (H over four targets)"]
    assert every.differences == pytest.approx((-1.0, -2.0, -3.0)) and every.verdict == NOT_HELD
    assert verdicts["the IDD + Dark Zurich merge beats the best single-target model (H over four targets)"] \
        .differences == pytest.approx((10.0, 9.0, 8.0))


def test_lmc_claims_pair_barriers_by_seed_against_shared_pretraining():
    from analysis.claims import lmc_claims

    verdicts = lmc_claims({"shared_pretraining": [1.0, 2.0, 1.5], "different_init": [9.0, 8.0, 9.5],
                           "no_pretraining": [1.0, 2.5, 1.0], "no_ema_teacher": [0.0, 0.0, 0.0]},
                          {"different_init": "(d) different random initialisations"})
    assert [v.claim for v in verdicts] == [
        "(d) different random initialisations: a larger H barrier than with shared pretraining",
        "no_pretraining: a larger H barrier than with shared pretraining"]
    assert verdicts[0].differences == (8.0, 6.0, 8.0) and verdicts[0].verdict == HELD
    assert verdicts[1].verdict == INCONCLUSIVE
    assert lmc_claims({"different_init": [1.0]}) == []
