"""Retiming plans (pure)."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from vs_scripts.plan.cadence import Step, at_cut, output_count, plan_retime


def test_12_to_24_alternates_copies_and_midpoints() -> None:
    steps = plan_retime(4, F(12), F(24))
    assert steps == [
        Step(0, F(0)),
        Step(0, F(1, 2)),
        Step(1, F(0)),
        Step(1, F(1, 2)),
        Step(2, F(0)),
        Step(2, F(1, 2)),
        Step(3, F(0)),
        Step(3, F(0)),
    ]


def test_8_to_24_thirds() -> None:
    steps = plan_retime(16, F(8), F(24))
    assert len(steps) == 48
    assert [s.t for s in steps[:3]] == [F(0), F(1, 3), F(2, 3)]


@pytest.mark.parametrize("src", [F(8), F(12), F(16), F(24), F(25), F(30), F(24000, 1001)])
@pytest.mark.parametrize("out", [F(24), F(25), F(30), F(50), F(60), F(30000, 1001)])
def test_any_rate_to_any_target_keeps_duration(src: F, out: F) -> None:
    n = 37
    steps = plan_retime(n, src, out)
    assert len(steps) == output_count(n, src, out)
    assert abs(len(steps) / out - n / src) <= 1 / out
    for s in steps:
        assert 0 <= s.left < n and 0 <= s.t < 1
        assert s.left + (1 if s.t else 0) < n


def test_equal_rates_pass_through() -> None:
    assert all(s == Step(i, F(0)) for i, s in enumerate(plan_retime(10, F(25), F(25))))


def test_lower_target_decimates_without_blending() -> None:
    steps = plan_retime(60, F(60), F(24))
    assert len(steps) == 24 and all(s.is_copy for s in steps)
    assert [s.left for s in steps[:5]] == [0, 3, 5, 8, 10]


def test_cut_picks_nearest_side() -> None:
    assert at_cut(Step(5, F(1, 3))) == 5
    assert at_cut(Step(5, F(2, 3))) == 6
