"""cache/audit.py: the acceptance threshold learned from audits, on clear numbers."""

from __future__ import annotations

import pytest

from cache.audit import Audit, Calibration, choose_threshold, estimated_error

# Offline: 20% of the pairs accepted at 0.5 are wrong, 5% at 0.8, 1% at 0.95.
PRIOR = Calibration(thresholds=(0.5, 0.8, 0.95), error=(0.20, 0.05, 0.01))


def test_without_audits_the_threshold_is_the_offline_operating_point():
    assert PRIOR.operating_point(0.05) == 0.8
    assert PRIOR.operating_point(0.2) == 0.5
    assert PRIOR.operating_point(0.01) == 0.95
    assert PRIOR.operating_point(0.001) == 0.999  # out of reach: the ceiling


def test_wrong_audits_raise_the_threshold_above_them():
    wrong = [Audit(0.85, False)] * 5
    assert choose_threshold(wrong, 0.05, PRIOR) == 0.95
    assert estimated_error(wrong, 0.8, PRIOR, 50.0) == pytest.approx((5 + 2.5) / 55)


def test_right_audits_bring_it_down_as_evidence_grows():
    few = [Audit(0.6, True)] * 10
    many = [Audit(0.6, True)] * 500
    assert choose_threshold(few, 0.05, PRIOR) == 0.8  # 10 audits do not outweigh the prior
    assert choose_threshold(many, 0.05, PRIOR) == 0.5  # (0 + 50 * 0.2) / 550 < 0.05


def test_a_bound_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError):
        choose_threshold([], 0.0, PRIOR)
    with pytest.raises(ValueError):
        Calibration(thresholds=(0.9, 0.5), error=(0.1, 0.2))
    with pytest.raises(ValueError):
        Calibration(thresholds=(0.5,), error=(0.1, 0.2))
