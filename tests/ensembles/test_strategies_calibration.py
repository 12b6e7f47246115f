"""Per-member temperature scaling fitted on dev, and the strategies that act on calibrated confidences."""

import math

import numpy as np
import pytest

from ensembles.errors import ParamsError
from ensembles.strategies import MemberAnswer, make_strategy
from ensembles.strategies.calibration import Calibrator, expected_calibration_error


def ma(member: str, answer: str, p: float | None = None) -> MemberAnswer:
    """A member answer whose confidence exp(mean logprob) is ``p``."""
    return MemberAnswer(member=member, answer=answer, logprob=None if p is None else math.log(p))


def overconfident_free_text(items: int = 1000, sharpen: float = 3.0, seed: int = 0):
    """A member right with probability p on each item, which reports sigmoid(sharpen * logit(p))."""
    rng = np.random.default_rng(seed)
    outputs, references = [], []
    for i in range(items):
        p = rng.uniform(0.5, 0.95)
        reported = 1.0 / (1.0 + math.exp(-sharpen * math.log(p / (1.0 - p))))
        right = rng.random() < p
        outputs.append([ma("loud", str(i) if right else "wrong", reported)])
        references.append(str(i))
    return outputs, references


def overconfident_multiple_choice(items: int = 600, sharpen: float = 3.0, seed: int = 1):
    """The gold option is drawn from softmax(logits); the member reports sharpen * logits as option log-likelihoods."""
    rng = np.random.default_rng(seed)
    outputs, references = [], []
    for _ in range(items):
        logits = rng.normal(0.0, 1.0, 4)
        gold = rng.choice(4, p=np.exp(logits) / np.exp(logits).sum())
        options = {letter: float(sharpen * x) for letter, x in zip("ABCD", logits, strict=True)}
        outputs.append([MemberAnswer("mc", max(options, key=options.get), option_logprobs=options)])
        references.append("ABCD"[gold])
    return outputs, references


# --- the calibrator ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dev", [overconfident_free_text, overconfident_multiple_choice])
def test_an_overconfident_member_gets_a_temperature_above_one_and_its_ece_drops_on_dev(dev):
    outputs, references = dev()
    (member,) = {a.member for item in outputs for a in item}
    fitted = Calibrator().fit(outputs, references).members[member]
    assert fitted.temperature > 1.5
    assert fitted.answers == len(outputs)
    assert fitted.ece_before > 0.1
    assert fitted.ece_after < fitted.ece_before / 2


def test_an_underconfident_member_gets_a_temperature_below_one():
    rng = np.random.default_rng(2)
    outputs, references = [], []
    for i in range(500):
        right = rng.random() < 0.9
        outputs.append([ma("shy", str(i) if right else "wrong", 0.6)])
        references.append(str(i))
    fitted = Calibrator().fit(outputs, references).members["shy"]
    assert fitted.temperature < 1.0
    assert fitted.ece_after < fitted.ece_before


def test_at_temperature_one_the_calibrated_confidence_is_the_raw_one():
    calibrator = Calibrator()  # nothing fitted: every member keeps T = 1
    assert calibrator.confidence(ma("x", "7", 0.8), 0.5) == pytest.approx(0.8)
    options = {"A": -1.0, "B": -2.0, "C": -4.0}
    expected = math.exp(-1.0) / sum(math.exp(v) for v in options.values())
    assert calibrator.confidence(MemberAnswer("x", "A", option_logprobs=options), 0.5) == pytest.approx(expected)


def test_a_member_without_logprobs_keeps_temperature_one_and_has_no_ece():
    outputs = [[ma("remote", "1"), ma("local", "1", 0.9)], [ma("remote", "2"), ma("local", "3", 0.9)]]
    calibrator = Calibrator().fit(outputs, ["1", "2"])
    assert calibrator.summary()["remote"] == {"temperature": 1.0, "answers": 0, "ece_before": None, "ece_after": None}
    assert calibrator.summary()["local"]["answers"] == 2
    # An answer without scores, or an empty one, falls back to the default.
    assert calibrator.confidence(ma("remote", "1"), 0.25) == 0.25
    assert calibrator.confidence(ma("local", "", 0.9), 0.25) == 0.25


def test_expected_calibration_error_uses_fifteen_equal_width_bins():
    # Bin (0.6, 0.667]: confidence 0.65 twice, one right -> gap 0.15. Bin (0.933, 1]: 0.95, right -> gap 0.05.
    conf = np.array([0.65, 0.65, 0.95])
    right = np.array([1.0, 0.0, 1.0])
    assert expected_calibration_error(conf, right) == pytest.approx((2 * 0.15 + 0.05) / 3)
    # One bin sees only the average: a wrong 0.2 and a right 0.8 look calibrated together, not apart.
    assert expected_calibration_error(np.array([0.2, 0.8]), np.array([0.0, 1.0]), bins=1) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0.2, 0.8]), np.array([0.0, 1.0])) == pytest.approx(0.2)


# --- strategies that act on confidences ----------------------------------------------------------------


def dev_with_a_loud_member_and_a_quiet_reliable_one(items: int = 40):
    """cheap says 0.9 and is right on half the items; mid says 0.6 and is always right; big, last, too."""
    outputs, references = [], []
    for i in range(items):
        cheap = str(i) if i % 2 == 0 else "wrong"
        outputs.append([ma("cheap", cheap, 0.9), ma("mid", str(i), 0.6), ma("big", str(i), 0.6)])
        references.append(str(i))
    return outputs, references


def test_calibration_changes_the_threshold_a_cascade_learns_and_its_decision():
    dev = dev_with_a_loud_member_and_a_quiet_reliable_one()
    plain = make_strategy("cascade", {"max_cost": 2.0})
    plain.fit(*dev)
    calibrated = make_strategy("cascade", {"max_cost": 2.0, "calibrate": True})
    calibrated.fit(*dev)

    # Raw confidences: cheap's 0.9 always beats mid's 0.6, so within two calls per item the cascade
    # can only stop at cheap and be right half the time.
    assert plain.dev_accuracy == 0.5
    # Calibrated, cheap falls near one half and mid rises near one: a threshold between them stops at mid.
    temperatures = {m: c["temperature"] for m, c in calibrated.calibrator.summary().items()}
    assert temperatures["cheap"] > 1.0 > temperatures["mid"]
    assert calibrated.dev_accuracy == 1.0
    assert calibrated.dev_cost == 2.0
    assert calibrated.threshold != plain.threshold

    item = [ma("cheap", "7", 0.9), ma("mid", "8", 0.6), ma("big", "8", 0.6)]
    assert plain.combine(item).answer == "7"
    decision = calibrated.combine(item)
    assert decision.answer == "8"
    assert decision.details["answered_by"] == "mid"
    cheap = decision.details["calibration"]["cheap"]
    assert cheap["ece_after"] < cheap["ece_before"]


def test_a_cascade_with_a_fixed_threshold_and_calibration_fits_only_the_temperatures():
    cascade = make_strategy("cascade", {"threshold": 0.8, "calibrate": True})
    assert cascade.needs_fit is True
    cascade.fit(*dev_with_a_loud_member_and_a_quiet_reliable_one())
    assert cascade.threshold == 0.8
    assert cascade.dev_accuracy is None
    assert cascade.combine([ma("cheap", "7", 0.9), ma("mid", "8", 0.6), ma("big", "9", 0.6)]).answer == "8"


def test_a_calibrated_confidence_vote_stops_trusting_a_loud_member():
    dev = dev_with_a_loud_member_and_a_quiet_reliable_one()
    item = [ma("cheap", "7", 0.9), ma("mid", "8", 0.6)]
    plain = make_strategy("weighted_vote", {"weights": "confidence"})
    assert plain.combine(item).answer == "7"

    calibrated = make_strategy("weighted_vote", {"weights": "confidence", "calibrate": True})
    assert calibrated.needs_fit is True
    calibrated.fit(*dev)
    decision = calibrated.combine(item)
    assert decision.answer == "8"
    assert set(decision.details["calibration"]) == {"cheap", "mid", "big"}


def test_calibrated_stacking_features_carry_the_calibrated_confidences():
    dev = dev_with_a_loud_member_and_a_quiet_reliable_one()
    stacking = make_strategy("stacking", {"calibrate": True})
    stacking.fit(*dev)
    item = [ma("cheap", "7", 0.9), ma("mid", "8", 0.6), ma("big", "8", 0.6)]
    features = stacking.features(item, "7")
    members = stacking.members
    conf = features[len(members) : 2 * len(members)]
    assert conf[members.index("cheap")] == pytest.approx(stacking.calibrator.confidence(item[0], 0.0))
    assert conf[members.index("cheap")] < 0.6
    decision = stacking.combine(item)
    assert decision.answer == "8"
    assert decision.details["calibration"] == stacking.calibrator.summary()


def test_strategies_without_calibrate_keep_their_raw_confidences():
    for name, params in [("weighted_vote", {"weights": "confidence"}), ("cascade", {}), ("stacking", {})]:
        strategy = make_strategy(name, params)
        assert strategy.params.calibrate is False
        strategy.fit(*dev_with_a_loud_member_and_a_quiet_reliable_one())
        assert strategy.calibrator is None
        assert "calibration" not in strategy.combine([ma("cheap", "7", 0.9), ma("mid", "8", 0.6)]).details


def test_calibrating_a_vote_by_dev_accuracy_is_a_params_error_naming_the_field():
    with pytest.raises(ParamsError, match="'weighted_vote': calibrate: .*set weights to 'confidence'"):
        make_strategy("weighted_vote", {"calibrate": True})
    with pytest.raises(ParamsError, match="invalid params for 'cascade': calibrate: .*valid boolean"):
        make_strategy("cascade", {"calibrate": "perhaps"})
