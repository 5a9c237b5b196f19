"""Splitting a clip's output frames into chunks (pure, like Av1an's ``extra_splits``).

Chunks are half-open ranges ``[start, end)`` of *output* frames, cut at scene cuts (a chunk
boundary there costs nothing: the encoder starts a GOP at a cut anyway) and about ``max_len``
frames long; a piece shorter than ``min_len`` is merged into its neighbour. A boundary that
is not a cut then moves (by up to a quarter of ``max_len``) to where the source has a keyframe
just before it, so a chunk does not first decode most of a GOP it never shows.

Every chunk is rendered from the whole clip's script with vspipe's frame range, so the
context a stage needs from outside the range (RIFE's next source frame, the temporal
denoiser's radius, the exposure stabiliser's ±4 frames) is read by VapourSynth on demand and
never encoded: a chunked picture is the unchunked picture, frame for frame.
:func:`context_frames` says how far that reach goes, for the plan's record.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
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
    total_frames: int,
    *,
    max_len: int,
    min_len: int = 1,
    cuts: Iterable[int] = (),
    seeks: Iterable[int] = (),
    taper: int = 0,
) -> list[Chunk]:
    """Half-open ranges covering ``[0, total_frames)``. ``cuts`` are output frames where a new
    shot starts; ``max_len`` <= 0 means one chunk for the whole clip. ``seeks`` are output
    frames where the source can be entered without decoding what comes before (just after a
    source keyframe): a boundary that is not a cut moves to the nearest one within a quarter
    of ``max_len``, so a chunk does not first decode up to a whole GOP it never shows.

    ``taper``: the workers sharing the clip (see :func:`next_chunk`: each runs through its
    share of it). The chunk that ends nearest the end of each share is halved (halves of at
    least ``min_len // 2``), so a worker done with its share first still finds half a chunk
    queued in another's, and the workers end within half a chunk of each other rather than a
    whole one. The shares are equal ones, where :func:`next_chunk`'s halving starts 2, 4 or 8
    workers; 3 start at 0, 1/4 and 1/2, so their halved chunks (near the thirds) help less.
    A snapped edge (``seeks``) can make a half shorter than ``min_len // 2``."""
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
    merged = _tapered(merged, total_frames, taper, max(1, min_len // 2))
    edges = [a for a, _ in merged[1:]] + [total_frames]
    edges = _snapped(edges, set(bounds), sorted(set(seeks)), max_len // 4)
    return [Chunk(i, a, b) for i, (a, b) in enumerate(itertools.pairwise([0, *edges]))]


def _tapered(
    pieces: list[tuple[int, int]], total: int, sharers: int, least: int
) -> list[tuple[int, int]]:
    """``pieces`` with the one ending nearest each of ``sharers`` equal shares' ends split in
    two (when both halves have ``least`` frames)."""
    if sharers <= 1:
        return pieces
    ends = {
        min(range(len(pieces)), key=lambda j: abs(pieces[j][1] - total * k // sharers))
        for k in range(1, sharers + 1)
    }
    out: list[tuple[int, int]] = []
    for j, (a, b) in enumerate(pieces):
        if j in ends and b - a >= 2 * least:
            out += [(a, (a + b) // 2), ((a + b) // 2, b)]
        else:
            out.append((a, b))
    return out


def _snapped(edges: list[int], fixed: set[int], seeks: list[int], slack: int) -> list[int]:
    """Each edge not in ``fixed`` (the last edge, the clip's end, always is) moved to its
    nearest seek point within ``slack``, as long as the edges stay in order with no empty
    piece between them."""
    out: list[int] = []
    for i, e in enumerate(edges):
        if e not in fixed and seeks:
            j = bisect.bisect_left(seeks, e)
            near = min(seeks[max(0, j - 1) : j + 1], key=lambda k: abs(k - e))
            if abs(near - e) <= slack and (out[-1] if out else 0) < near < edges[i + 1]:
                e = near
        out.append(e)
    return out


def _even(a: int, b: int, max_len: int) -> list[tuple[int, int]]:
    """``[a, b)`` in the fewest equal parts of at most ``max_len`` frames."""
    n = -(-(b - a) // max_len)
    step = (b - a) / n
    edges = [a + round(step * i) for i in range(n)] + [b]
    return list(itertools.pairwise(edges))


def next_chunk(states: Sequence[str], after: int | None = None) -> int | None:
    """The queued chunk a free worker takes (``states[i]``: chunk i's "queued", "running",
    "done" or "failed"; ``after``: the chunk this worker's host ran last, None if none), so
    that each host runs long runs of consecutive chunks: the next chunk of a run goes on
    decoding where the last one stopped, where a jump seeks back to a keyframe and re-reads
    the temporal stages' context.

    1. ``after + 1``, when it is queued;
    2. else the first queued chunk that no running chunk is right in front of (nobody is
       about to go on into it);
    3. else the middle of the longest run of queued chunks: the worker in front of it keeps
       the first half, this one takes the second.

    None when nothing is queued."""
    queued = [i for i, s in enumerate(states) if s == "queued"]
    if not queued:
        return None
    if after is not None and after + 1 in queued:
        return after + 1
    runs: list[list[int]] = []
    for i in queued:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        if run[0] == 0 or states[run[0] - 1] != "running":
            return run[0]
    longest = max(runs, key=len)  # the first of the longest, for a stable choice
    return longest[len(longest) // 2]


def chunk_length(seconds: float, fps: float) -> int:
    """``chunk_seconds`` of output as frames (0: no chunking, as for a length no clip
    reaches: infinite, or beyond a float's range as frames)."""
    if not (0 < seconds * fps < math.inf) or fps <= 0:
        return 0
    return max(1, round(seconds * fps))


#: chunks each worker sharing a clip gets, at least (while chunks stay >= a quarter of the
#: configured length)
CHUNKS_PER_WORKER = 4


def shared_length(max_len: int, total_frames: int, workers: int) -> int:
    """The chunk length when ``workers`` share one clip of ``total_frames``: the configured
    ``max_len``, shortened until each worker has about :data:`CHUNKS_PER_WORKER` chunks, but
    not below a quarter of ``max_len`` (a chunk has a fixed cost: an encoder start, and a
    seek where a worker's run of chunks begins).

    Why: the workers finish together only to within the chunk still running when the last
    one is taken. Three 20 s chunks on two workers leave one of them idle for a third of the
    clip; eight 7.5 s chunks, for at most an eighth, and less as a faster worker takes more
    of them."""
    if workers <= 1 or max_len <= 0:
        return max_len
    enough = -(-total_frames // (CHUNKS_PER_WORKER * workers))
    return min(max_len, max(max_len // 4, enough, 1))


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
