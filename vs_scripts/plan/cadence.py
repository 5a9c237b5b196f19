"""Retiming plans: which source frames make each output frame, and at what time between them.

Pure. Frame ranges are half-open; rates are exact fractions. RIFE 4.x interpolates at any
timestep, so any source rate maps to any target: equal rates pass through, higher targets
interpolate, lower targets decimate (nearest frame, no blending).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class Step:
    """Output frame = source ``left`` if ``t == 0``, else a blend towards ``left + 1`` at ``t``."""

    left: int
    t: Fraction

    @property
    def is_copy(self) -> bool:
        return self.t == 0


def output_count(n_src: int, src_fps: Fraction, out_fps: Fraction) -> int:
    """Frames at ``out_fps`` covering the same duration as ``n_src`` frames at ``src_fps``."""
    if n_src <= 0:
        return 0
    return max(1, round(Fraction(n_src) * out_fps / src_fps))


def plan_retime(n_src: int, src_fps: Fraction, out_fps: Fraction) -> list[Step]:
    if src_fps <= 0 or out_fps <= 0:
        raise ValueError("frame rates must be positive")
    steps: list[Step] = []
    ratio = src_fps / out_fps
    for n in range(output_count(n_src, src_fps, out_fps)):
        pos = n * ratio
        if out_fps < src_fps:  # decimate: the nearest real frame
            left = min(n_src - 1, math.floor(pos + Fraction(1, 2)))
            steps.append(Step(left, Fraction(0)))
            continue
        left = math.floor(pos)
        t = pos - left
        if left >= n_src - 1:  # past the last real frame: hold it
            steps.append(Step(n_src - 1, Fraction(0)))
        else:
            steps.append(Step(left, t))
    return steps


def at_cut(step: Step) -> int:
    """The real frame to show instead of interpolating across a scene cut: the nearest one,
    from the side of the cut the output time falls on."""
    return step.left if step.t < Fraction(1, 2) else step.left + 1
