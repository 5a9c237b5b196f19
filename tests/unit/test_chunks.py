"""Chunk planning, device slots and counting a chunk's frames: pure rules."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from daemon.core.tools import cpu_quota
from daemon.engine.chunks import mov_video_samples
from daemon.engine.slots import Slot, plan_slots, visible_gpus
from vs_scripts.plan.chunks import (
    Chunk,
    chunk_length,
    context_frames,
    map_cuts,
    next_chunk,
    plan_chunks,
    shared_length,
)


def ranges(chunks: list[Chunk]) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in chunks]


def covers(chunks: list[Chunk], total: int) -> bool:
    """Half-open, in order, no gap, no overlap, indices 0..n-1."""
    return (
        chunks[0].start == 0
        and chunks[-1].end == total
        and all(a.end == b.start for a, b in itertools.pairwise(chunks))
        and [c.index for c in chunks] == list(range(len(chunks)))
    )


def test_short_clips_and_no_chunking_are_one_chunk() -> None:
    assert plan_chunks(100, max_len=0) == [Chunk(0, 0, 100)]
    assert plan_chunks(100, max_len=100) == [Chunk(0, 0, 100)]
    assert plan_chunks(0, max_len=10) == []


def test_long_shots_split_into_equal_parts_none_too_long() -> None:
    chunks = plan_chunks(100, max_len=40)
    assert ranges(chunks) == [(0, 33), (33, 67), (67, 100)]
    assert covers(chunks, 100) and all(c.frames <= 40 for c in chunks)


def test_cuts_are_boundaries() -> None:
    chunks = plan_chunks(100, max_len=60, min_len=10, cuts=[30])
    assert ranges(chunks) == [(0, 30), (30, 65), (65, 100)]
    assert covers(chunks, 100) and all(c.frames <= 60 for c in chunks)
    assert 30 in {c.start for c in chunks}


def test_a_cut_on_a_length_boundary_makes_no_sliver() -> None:
    chunks = plan_chunks(80, max_len=40, min_len=20, cuts=[40])
    assert ranges(chunks) == [(0, 40), (40, 80)]


def test_pieces_shorter_than_the_minimum_join_a_neighbour() -> None:
    chunks = plan_chunks(100, max_len=50, min_len=20, cuts=[45, 48, 52])
    assert covers(chunks, 100)
    assert all(c.frames >= 20 or c.frames == 100 for c in chunks[:-1])
    assert all(c.frames <= 50 for c in chunks)


def test_cuts_outside_the_clip_are_ignored() -> None:
    assert ranges(plan_chunks(50, max_len=30, cuts=[0, -3, 50, 99])) == [(0, 25), (25, 50)]


def test_boundaries_move_to_the_nearest_seek_point_but_cuts_stay() -> None:
    # 1440 frames in 240s, keyframes (+ margin) near 258, 508, ...; a cut at 300
    seeks = [258, 508, 758, 1008, 1258, 1400]
    chunks = plan_chunks(1440, max_len=240, min_len=120, seeks=seeks)
    assert ranges(chunks) == [(0, 258), (258, 508), (508, 758), (758, 1008), (1008, 1258),
                              (1258, 1440)]  # fmt: skip
    assert covers(chunks, 1440) and all(c.frames <= 240 + 240 // 4 for c in chunks)
    cut = plan_chunks(1440, max_len=240, min_len=120, cuts=[300], seeks=seeks)
    assert 300 in {c.start for c in cut} and covers(cut, 1440)
    # a seek point further than a quarter chunk away is not taken
    assert ranges(plan_chunks(480, max_len=240, seeks=[301])) == [(0, 240), (240, 480)]


@pytest.mark.parametrize("seeks", [[1, 2, 3], [99], [49, 50, 51], list(range(100))])
def test_snapping_never_makes_an_empty_or_backwards_chunk(seeks: list[int]) -> None:
    for max_len in (10, 25, 40):
        chunks = plan_chunks(100, max_len=max_len, min_len=max_len // 2, cuts=[50], seeks=seeks)
        assert covers(chunks, 100) and all(c.frames > 0 for c in chunks)
        assert 50 in {c.start for c in chunks}


def test_lengths_context_and_cut_mapping() -> None:
    assert chunk_length(20, 24) == 480 and chunk_length(0, 24) == 0
    # no limit a clip can reach (a config's 1e308 s, ``inf``) is no chunking, not an error
    for seconds in (-5.0, math.inf, 1e308, math.nan):
        assert chunk_length(seconds, 24) == 0
    assert context_frames(rife=True, denoise_radius=0, stabilise=True) == 4
    assert context_frames(rife=True, denoise_radius=0, stabilise=False) == 1
    assert map_cuts([1.0, 2.5, 99.0], 24, 100) == [24, 60]


def test_a_free_worker_goes_on_where_its_host_stopped_or_splits_the_longest_run() -> None:
    q, r, d = "queued", "running", "done"
    assert next_chunk([]) is None and next_chunk([d, r, d]) is None
    assert next_chunk([q] * 6) == 0  # the first worker starts at the beginning
    assert next_chunk([r, q, q, q, q, q]) == 3  # the second takes the second half
    assert next_chunk([d, q, q, r, q, q], after=0) == 1  # each goes on with its own run
    assert next_chunk([d, r, q, d, q, q], after=3) == 4
    # its next one is taken: a run nobody is in front of, else the longest run's middle
    assert next_chunk([d, d, r, r, q, d, q, q], after=1) == 6
    assert next_chunk([d, r, q, q, q, d, r, q], after=5) == 3
    # a retried chunk (back to queued) with no one in front is taken first
    assert next_chunk([q, r, q, q], after=None) == 0


def simulate(chunks: int, workers: int) -> list[list[int]]:
    """Which chunks each worker runs when they take turns claiming (one finishes, claims)."""
    states, runs = ["queued"] * chunks, [[] for _ in range(workers)]
    current: list[int | None] = [None] * workers
    for turn in itertools.count():
        w = turn % workers
        if current[w] is not None:
            states[current[w]] = "done"
        pick = next_chunk(states, runs[w][-1] if runs[w] else None)
        current[w] = pick
        if pick is None:
            if all(c is None for c in current):
                return runs
            continue
        states[pick] = "running"
        runs[w].append(pick)
    raise AssertionError


@pytest.mark.parametrize(("chunks", "workers"), [(6, 2), (12, 2), (9, 3), (20, 4), (3, 4)])
def test_workers_run_consecutive_chunks_and_share_them_evenly(chunks: int, workers: int) -> None:
    runs = simulate(chunks, workers)
    assert sorted(itertools.chain(*runs)) == list(range(chunks))  # each chunk once
    jumps = sum(b != a + 1 for run in runs for a, b in itertools.pairwise(run))
    assert jumps <= workers  # a host seeks about once, not at every chunk
    sizes = [len(run) for run in runs if run]
    assert max(sizes) - min(sizes) <= 1


def test_slots_share_the_cores_and_pin_the_gpus() -> None:
    cpu = plan_slots(workers=3, cores=16)
    assert [s.threads for s in cpu] == [6, 5, 5] and sum(s.threads for s in cpu) == 16
    assert all(s.gpu is None for s in cpu)
    gpus = plan_slots(gpus=8, cores=64)
    assert [s.gpu for s in gpus] == list(range(8)) and {s.threads for s in gpus} == {8}
    shared = plan_slots(gpus=2, workers_per_gpu=2, cores=8)
    assert [(s.name, s.gpu) for s in shared] == [
        ("gpu0.0", 0), ("gpu0.1", 0), ("gpu1.0", 1), ("gpu1.1", 1)
    ]  # fmt: skip
    assert [s.gpu for s in plan_slots(workers=3, gpus=4, cores=4)] == [0, 1, 2]
    assert plan_slots(cores=1) == [Slot("cpu0", None, 1)]
    # one CPU slot per core at most: eight workers on two cores would each start threads
    # on the same two
    assert plan_slots(workers=8, cores=2) == [Slot("cpu0", None, 1), Slot("cpu1", None, 1)]
    # a cluster's head: its workers mostly wait on the cluster, so two share one core
    assert len(plan_slots(workers=2, cores=1, per_core=False)) == 2


def test_a_cgroup_cpu_quota_limits_the_cores() -> None:
    """A container's ``--cpus 1.5`` (a quota, not a cpuset: every core stays in the
    affinity mask) gives the slots 2 cores' budget, not the host's 64; the tightest limit on
    the cgroup or an ancestor holds, in cgroup v2 and v1."""
    v2 = {
        "/sys/fs/cgroup/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/kubepods/cpu.max": "800000 100000\n",
        "/sys/fs/cgroup/kubepods/pod1/cpu.max": "150000 100000\n",
    }
    assert cpu_quota("0::/kubepods/pod1\n", v2.get) == 1.5
    assert cpu_quota("0::/kubepods\n", v2.get) == 8.0
    assert cpu_quota("0::/\n", v2.get) is None  # max: no quota
    v1 = {
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    }
    assert cpu_quota("4:memory:/docker/abc\n12:cpu,cpuacct:/docker/abc\n", v1.get) == 2.0
    # /proc in another order than the mount's name (CentOS 7): found through the cpu link
    linked = {k.replace("/cpu,cpuacct/", "/cpu/"): v for k, v in v1.items()}
    assert cpu_quota("12:cpuacct,cpu:/docker/abc\n", linked.get) == 2.0
    # nothing readable, or nonsense: no quota (the affinity mask alone counts)
    assert cpu_quota("", {}.get) is None and cpu_quota("junk", {}.get) is None
    assert cpu_quota("0::/", {"/sys/fs/cgroup/cpu.max": "abc def"}.get) is None


@pytest.mark.parametrize(("slot", "cuda"), [(Slot("gpu1", 1, 4), "1"), (Slot("cpu0", None, 2), "")])
def test_a_slot_sets_its_childrens_environment(slot: Slot, cuda: str) -> None:
    env = slot.env({"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"})
    assert env["CUDA_VISIBLE_DEVICES"] == cuda and env["PATH"] == "/bin"
    assert env["FINISHLINE_THREADS"] == env["OMP_NUM_THREADS"] == str(slot.threads)


def test_a_gpu_slot_stays_within_the_daemons_own_visible_gpus() -> None:
    """A daemon started with CUDA_VISIBLE_DEVICES=2,3 (GPUs 0 and 1 left to other work) gives
    its slots GPUs 2 and 3, not 0 and 1; unset, slot i is GPU i."""
    slots = plan_slots(gpus=2, cores=8)
    assert [s.env({"CUDA_VISIBLE_DEVICES": "2,3"})["CUDA_VISIBLE_DEVICES"] for s in slots] == [
        "2", "3"
    ]  # fmt: skip
    uuids = {"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}
    assert [s.env(uuids)["CUDA_VISIBLE_DEVICES"] for s in slots] == ["GPU-aa", "GPU-bb"]
    assert [s.env({})["CUDA_VISIBLE_DEVICES"] for s in slots] == ["0", "1"]
    assert [s.env({"CUDA_VISIBLE_DEVICES": "3"})["CUDA_VISIBLE_DEVICES"] for s in slots] == [
        "3", ""
    ]  # fmt: skip
    assert visible_gpus({}) is None
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3,1,-1,0"}) == ["3", "1"]  # CUDA stops at -1


def box(kind: bytes, *payload: bytes, large: bool = False) -> bytes:
    body = b"".join(payload)
    if large:  # a 64-bit size, as ffmpeg writes for a big mdat
        return (1).to_bytes(4, "big") + kind + (16 + len(body)).to_bytes(8, "big") + body
    return (8 + len(body)).to_bytes(4, "big") + kind + body


def trak(handler: bytes, samples: int) -> bytes:
    hdlr = box(b"hdlr", bytes(8), handler, bytes(12))
    stsz = box(b"stsz", bytes(8), samples.to_bytes(4, "big"))
    stbl = box(b"stbl", box(b"stsd", bytes(8)), stsz)
    return box(b"trak", box(b"tkhd", bytes(84)), box(b"mdia", hdlr, box(b"minf", stbl)))


def test_a_quicktime_files_video_samples_come_from_its_sample_table(tmp_path: Path) -> None:
    ftyp, mdat = box(b"ftyp", b"qt  ", bytes(4)), box(b"mdat", bytes(100), large=True)
    moov = box(b"moov", box(b"mvhd", bytes(100)), trak(b"soun", 99), trak(b"vide", 240))
    files = {
        "chunk.mov": (ftyp + box(b"wide") + mdat + moov, 240),
        "faststart.mp4": (ftyp + moov + mdat, 240),
        "cut-off.mov": (ftyp + mdat + moov[:-10], None),  # no complete moov: ffprobe counts
        "cut-off-faststart.mp4": (ftyp + moov + mdat[:-10], None),  # moov, but frames missing
        "no-moov.mov": (ftyp + mdat, None),
        "fragmented.mp4": (ftyp + box(b"moov", trak(b"vide", 0), box(b"mvex")) + mdat, None),
        "two-videos.mov": (ftyp + box(b"moov", trak(b"vide", 1), trak(b"vide", 2)), None),
        "matroska.mkv": (bytes.fromhex("1a45dfa3") + bytes(40), None),
    }
    for name, (data, samples) in files.items():
        (tmp_path / name).write_bytes(data)
        assert mov_video_samples(tmp_path / name) == samples, name
    assert mov_video_samples(tmp_path / "missing.mov") is None


def test_workers_sharing_a_clip_get_enough_chunks_to_finish_together() -> None:
    # one worker: the configured length (a chunk has a fixed cost, and nobody waits)
    assert shared_length(480, 1440, 1) == 480
    # 60 s at 24 fps, 20 s chunks, two workers: 3 chunks would leave one idle a third of
    # the time; 8 of 180 frames instead
    assert shared_length(480, 1440, 2) == 180
    assert len(plan_chunks(1440, max_len=180, min_len=90)) == 8
    # a 3-minute reel on 8 GPUs: 32 chunks, not 9 (8 at once, then one alone)
    assert shared_length(480, 4320, 8) == 135
    # never under a quarter of the configured length, never over it
    assert shared_length(480, 1440, 16) == 120
    assert shared_length(480, 100_000, 2) == 480
    assert shared_length(0, 1440, 2) == 0
    assert shared_length(3, 10, 4) == 1


def test_the_chunk_ending_each_workers_share_is_halved() -> None:
    """Two workers take a clip's halves (next_chunk); the last chunk of each half is cut in
    two, so the one done first finds half a chunk left, not the other's last whole one."""
    plain = plan_chunks(1440, max_len=180, min_len=90)
    tapered = plan_chunks(1440, max_len=180, min_len=90, taper=2)
    assert covers(tapered, 1440) and len(tapered) == len(plain) + 2
    assert ranges(tapered)[3:5] == [(540, 630), (630, 720)]
    assert ranges(tapered)[-2:] == [(1260, 1350), (1350, 1440)]
    # the second worker starts at the second half
    states = ["running"] + ["queued"] * (len(tapered) - 1)
    assert tapered[next_chunk(states)].start == 720
    # one worker: nothing to taper; halves never under half the minimum length
    assert plan_chunks(1440, max_len=180, min_len=90, taper=1) == plain
    assert ranges(plan_chunks(7, max_len=5, min_len=4, taper=2)) == [(0, 2), (2, 4), (4, 7)]
    # at a cut: the halves stay inside the shot
    cut = plan_chunks(36, max_len=5, min_len=2, cuts=[18], taper=2)
    assert (14, 16) in ranges(cut) and (16, 18) in ranges(cut) and (18, 22) in ranges(cut)


@pytest.mark.parametrize("workers", [2, 3, 4, 8])
def test_tapered_plans_cover_the_clip_in_order(workers: int) -> None:
    for total in (50, 240, 1441, 4320):
        max_len = shared_length(24, total, workers)
        for cuts in ([], [total // 3], [total // 2, total // 2 + 7]):
            plain = plan_chunks(total, max_len=max_len, min_len=max_len // 2, cuts=cuts)
            chunks = plan_chunks(
                total, max_len=max_len, min_len=max_len // 2, cuts=cuts, taper=workers
            )
            assert covers(chunks, total), (total, cuts)
            # only halves added: every boundary (cuts included) kept, at most one per worker
            assert {c.start for c in plain} <= {c.start for c in chunks}
            assert len(plain) <= len(chunks) <= len(plain) + workers


def test_a_plan_leaves_out_the_encoders_thread_count() -> None:
    """A job taken up again by a worker with another share of the cores keeps its plan (and
    its finished chunks); any other change to a chunk's commands makes a new one."""
    from daemon.engine.chunks import ChunkTask
    from daemon.engine.pipeline import plan_form

    def task(*encoder: str) -> ChunkTask:
        return ChunkTask(0, 0, 10, ["vspipe", "-"], ["ffmpeg", *encoder, "out.mkv"], "p", "o")

    six = task("-x265-params", "crf=20:pools=6:numa-pools=2", "-threads", "6")
    five = task("-x265-params", "crf=20:pools=5:numa-pools=2", "-threads", "5")
    assert plan_form(six) == plan_form(five)
    assert plan_form(six).encoder[2] == "crf=20:pools=*:numa-pools=2"
    assert plan_form(six) != plan_form(task("-x265-params", "crf=22:pools=6", "-threads", "6"))
