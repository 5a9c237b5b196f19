"""Splitting a clip's output frames into chunks (pure, like Av1an's ``extra_splits``).

Chunks are half-open ranges ``[start, end)`` of *output* frames, cut at scene cuts (a chunk
boundary there costs nothing: the encoder starts a GOP at a cut anyway) and at most
``max_len`` frames long; a piece shorter than ``min_len`` is merged into its neighbour.

Every chunk is rendered from the whole clip's script with vspipe's frame range, so the
context a stage needs from outside the range (RIFE's next source frame, the temporal
denoiser's radius, the exposure stabiliser's ±4 frames) is read by VapourSynth on demand and
never encoded: a chunked picture is the unchunked picture, frame for frame.
:func:`context_frames` says how far that reach goes, for the plan's record.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    start: int  # first output frame
    end: int  # one past the last output frame

    @property
    def frames(self) -> int:
        return self.end - self.start


def plan_chunks(
    total_frames: int, *, max_len: int, min_len: int = 1, cuts: Iterable[int] = ()
) -> list[Chunk]:
    """Half-open ranges covering ``[0, total_frames)``. ``cuts`` are output frames where a new
    shot starts; ``max_len`` <= 0 means one chunk for the whole clip."""
    if total_frames <= 0:
        return []
    if max_len <= 0 or total_frames <= max_len:
        return [Chunk(0, 0, total_frames)]
    min_len = max(1, min(min_len, max_len))
    bounds = sorted({c for c in cuts if 0 < c < total_frames} | {0, total_frames})
    pieces: list[tuple[int, int]] = []
    for a, b in itertools.pairwise(bounds):
        pieces += _even(a, b, max_len)  # shots longer than max_len: equal parts
    merged: list[tuple[int, int]] = []
    for a, b in pieces:
        if merged and (b - a < min_len or merged[-1][1] - merged[-1][0] < min_len):
            pa = merged.pop()[0]
            # a short piece joins its neighbour; together too long, they are split evenly
            # (a cut inside a chunk costs a GOP there, a sliver of a chunk costs a process)
            merged += _even(pa, b, max_len)
            continue
        merged.append((a, b))
    return [Chunk(i, a, b) for i, (a, b) in enumerate(merged)]


def _even(a: int, b: int, max_len: int) -> list[tuple[int, int]]:
    """``[a, b)`` in the fewest equal parts of at most ``max_len`` frames."""
    n = -(-(b - a) // max_len)
    step = (b - a) / n
    edges = [a + round(step * i) for i in range(n)] + [b]
    return list(itertools.pairwise(edges))


def chunk_length(seconds: float, fps: float) -> int:
    """``chunk_seconds`` of output as frames (0: no chunking)."""
    if seconds <= 0 or fps <= 0:
        return 0
    return max(1, round(seconds * fps))


def context_frames(*, rife: bool, denoise_radius: int, stabilise: bool) -> int:
    """How many frames beyond a chunk's range its stages read (RIFE: the next source frame;
    the temporal denoiser: its radius; the exposure stabiliser: ±4)."""
    return max(1 if rife else 0, denoise_radius, 4 if stabilise else 0)


def map_cuts(source_cuts: Iterable[float], fps: float, total_frames: int) -> list[int]:
    """Scene cuts found in the source (seconds) as output frame indices."""
    out = set()
    for t in source_cuts:
        n = round(t * fps)
        if 0 < n < total_frames:
            out.add(n)
    return sorted(out)
