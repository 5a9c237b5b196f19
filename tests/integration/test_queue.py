"""The SQLite queue: real database files, several connections, threads and processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from daemon.runtime.queue import Queue
from daemon.runtime.reader import SCHEMA_VERSION, QueueReader, QueueUnavailable
from daemon.runtime.states import JobState, TransitionError
from tests.helpers import digest, finishline


def add(q: Queue, n: int, **kw: object) -> list[int]:
    return [
        q.add_job(f"/hot/p/c{i}.mp4", name=f"c{i}.mp4", preset="p", content_hash=f"h{i}", **kw)
        for i in range(n)
    ]  # type: ignore[arg-type]


def test_wal_mode_and_rows_kept(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    (job_id,) = add(q, 1)
    job = q.claim_next("w")
    assert job and job.id == job_id and job.state is JobState.RUNNING
    q.transition(job_id, JobState.RUNNING, JobState.DONE, output="/out/c0.mp4")
    assert q.get(job_id).state is JobState.DONE  # history: the row stays
    mode = sqlite3.connect(tmp_path / "q.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_guarded_transition_checks_the_expected_state(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    (job_id,) = add(q, 1)
    with pytest.raises(TransitionError, match="is queued, not running"):
        q.transition(job_id, JobState.RUNNING, JobState.DONE)
    with pytest.raises(TransitionError, match="cannot become done"):
        q.transition(job_id, JobState.QUEUED, JobState.DONE)


def test_priority_then_fifo(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    a, b, c = add(q, 3)
    q.set_priority(c, 5)
    assert [q.claim_next("w").id for _ in range(3)] == [c, a, b]
    assert q.claim_next("w") is None


def _claim_all(db: str, name: str, out: multiprocessing.Queue) -> None:
    q = Queue(db)
    got = []
    while (job := q.claim_next(name)) is not None:
        got.append(job.id)
    out.put(got)


def test_two_processes_never_claim_the_same_job(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    q = Queue(db)
    ids = add(q, 200)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(db), f"w{i}", out)) for i in range(3)]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    flat = [j for part in claimed for j in part]
    assert sorted(flat) == sorted(ids)  # every job exactly once
    assert len(set(flat)) == len(flat)


def test_threads_sharing_connections_never_double_claim(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    ids = add(Queue(db), 100)
    seen: list[int] = []
    lock = threading.Lock()

    def run() -> None:
        q = Queue(db)
        while (job := q.claim_next(threading.current_thread().name)) is not None:
            with lock:
                seen.append(job.id)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(ids)


def test_recover_requeues_with_attempts_and_gives_up(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    q = Queue(db)
    (_job_id,) = add(q, 1, max_attempts=2)
    q.claim_next("w")
    q.close()  # the daemon "dies" with the job running
    q = Queue(db)
    (job,) = q.recover()
    assert job.state is JobState.QUEUED and job.attempts == 1
    q.claim_next("w")
    (job,) = Queue(db).recover()
    assert job.state is JobState.FAILED and job.attempts == 2 and "interrupted" in job.error


def test_control_interface(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    a, b = add(q, 2)
    for job_id in (a, b):  # retry needs the source to still exist
        (tmp_path / f"{job_id}.mp4").write_bytes(b"x")
        q.set_src(job_id, tmp_path / f"{job_id}.mp4")
    q.pause()
    assert q.paused and q.claim_next("w") is None
    q.pause(False)
    assert q.cancel(a).state is JobState.CANCELLED
    running = q.claim_next("w")
    assert running.id == b
    assert q.cancel(b).cancel_requested == 1 and q.cancel_requested(b)
    q.transition(b, JobState.RUNNING, JobState.FAILED, error="boom")
    assert q.retry(b).state is JobState.QUEUED
    assert q.retry(a).state is JobState.QUEUED
    with pytest.raises(TransitionError):
        q.retry(a)
    assert q.counts() == {"queued": 2}
    q.transition(q.claim_next("w").id, JobState.RUNNING, JobState.FAILED, error="boom")
    (tmp_path / f"{a}.mp4").unlink()
    with pytest.raises(TransitionError, match=r"its source .* is gone"):
        q.retry(a)


def test_duplicate_lookup(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.add_job("/hot/p/a.mp4", name="a.mp4", preset="p", content_hash="same")
    assert q.find_duplicate("same", "p") is not None
    assert q.find_duplicate("same", "other-preset") is None


# -- the read-only reader -------------------------------------------------------------------


def daemon_like_root(tmp_path: Path) -> Path:
    """A root whose queue.db a stopped daemon left behind (tables made, WAL checkpointed)."""
    root = tmp_path / "root"
    q = Queue(root / "queue.db")
    add(q, 3)
    q.close()
    return root


def test_looking_leaves_the_database_byte_identical(tmp_path: Path) -> None:
    root = daemon_like_root(tmp_path)
    db = root / "queue.db"
    before = digest(db)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    for args in (["queue", "list"], ["queue", "show", "1"]):
        res = finishline(*args, "--root", str(root), env=env)
        assert res.returncode == 0, res.stderr
    assert "c0.mp4" in finishline("queue", "list", "--root", str(root), env=env).stdout
    r = QueueReader(db)
    assert [j.name for j in r.jobs()] == ["c2.mp4", "c1.mp4", "c0.mp4"]
    r.close()
    assert digest(db) == before
    assert not (tmp_path / "config").exists()  # read-only commands write no config either


def test_queue_show_says_a_queued_job_waits_for_a_paused_queue(tmp_path: Path) -> None:
    root = daemon_like_root(tmp_path)
    q = Queue(root / "queue.db")
    q.pause()
    q.close()
    shown = finishline("queue", "show", "1", "--root", str(root)).stdout
    assert "waiting: the queue is paused (finishline queue resume)" in shown, shown
    assert ": None" not in shown, shown  # an empty field reads -, not Python's None


def test_a_read_only_database_can_still_be_listed(tmp_path: Path) -> None:
    root = daemon_like_root(tmp_path)
    (root / "queue.db").chmod(0o444)
    root.chmod(0o555)
    try:
        res = finishline("queue", "list", "--root", str(root))
        assert res.returncode == 0 and "c1.mp4" in res.stdout, res.stderr
        if os.geteuid() != 0:  # root writes through file modes
            control = finishline("queue", "cancel", "1", "--root", str(root))
            assert control.returncode == 1 and "Traceback" not in control.stderr
            assert "cannot" in control.stderr
    finally:
        root.chmod(0o755)


def test_a_newer_schema_and_a_missing_queue_are_one_sentence(tmp_path: Path) -> None:
    root = daemon_like_root(tmp_path)
    with sqlite3.connect(root / "queue.db") as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(QueueUnavailable, match="written by a newer finishline"):
        QueueReader(root / "queue.db")
    res = finishline("queue", "list", "--root", str(root))
    assert (
        res.returncode == 1 and "newer finishline" in res.stderr and "Traceback" not in res.stderr
    )
    with pytest.raises(QueueUnavailable, match="no queue at"):
        Queue(tmp_path / "nowhere" / "queue.db", create=False)
    assert not (tmp_path / "nowhere").exists()


def test_a_reader_waits_for_a_queue_the_daemon_is_still_creating(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    sqlite3.connect(path).close()  # the daemon's connect has made the file, not yet the tables
    creating = threading.Timer(0.3, lambda: Queue(path).close())
    creating.start()
    try:
        reader = QueueReader(path)  # sees the tables once the daemon has made them
    finally:
        creating.join()
    assert reader.jobs() == []
    reader.close()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(QueueUnavailable, match="not a finishline queue"):
        QueueReader(empty, timeout=0.2)  # an empty file that stays empty: refused, not hung


def test_chunk_claims_keep_each_host_on_consecutive_chunks(tmp_path: Path) -> None:
    """Two workers on one job's six chunks each take a run of consecutive chunks (their hosts
    go on reading where they stopped); a helper with no job of its own takes the job its last
    chunk came from first."""
    from daemon.engine.chunks import ChunkStore, ChunkTask

    store = ChunkStore(tmp_path / "chunks.db")

    def plan(job: str, n: int) -> None:
        tasks = [ChunkTask(i, 10 * i, 10 * i + 10, ["vspipe"], ["enc"], "p", "o") for i in range(n)]
        store.plan(job, "k", tasks)

    plan("a", 6)
    taken: dict[str, list[int]] = {"w1": [], "w2": []}
    last: dict[str, tuple[str, int] | None] = {"w1": None, "w2": None}
    while True:
        rows = {w: store.claim(w, job="a", after=last[w]) for w in taken}
        if not any(rows.values()):
            break
        for w, row in rows.items():
            if row is not None:
                taken[w].append(row.index)
                last[w] = (row.job, row.index)
                store.done(row)
    assert taken == {"w1": [0, 1, 2], "w2": [3, 4, 5]}
    plan("b", 2)
    plan("c", 2)
    first = store.claim("helper", after=("c", 7))
    assert first is not None and (first.job, first.index) == ("c", 0)
    plan("job-10", 1)
    plan("job-9", 1)
    store.forget("b")
    store.forget("c")
    oldest = store.claim("helper")
    assert oldest is not None and oldest.job == "job-9"  # not job-10, which sorts first as text
    store.close()


def test_a_stopped_chunk_goes_back_alone(tmp_path: Path) -> None:
    """A cancelled chunk is put back by its own row: another worker's chunk stays running
    even when that worker's name starts with this one's (``w1`` and ``w10``), and
    ``_`` in a name is no wildcard."""
    from daemon.engine.chunks import ChunkStore, ChunkTask

    store = ChunkStore(tmp_path / "chunks.db")
    tasks = [ChunkTask(i, 10 * i, 10 * i + 10, ["vspipe"], ["enc"], "p", "o") for i in range(3)]
    store.plan("a", "k", tasks)
    mine, other, third = (store.claim(w, job="a") for w in ("h:1:w1", "h:1:w10", "h:1:w1_"))
    assert mine is not None and other is not None and third is not None
    store.requeue(mine)
    states = {r.index: (r.state, r.worker, r.attempts) for r in store.rows("a")}
    assert states[mine.index] == ("queued", None, 0)
    assert states[other.index] == ("running", "h:1:w10", 0)
    assert states[third.index] == ("running", "h:1:w1_", 0)
    store.close()


def test_a_chunk_lost_with_its_worker_every_time_fails_for_good(tmp_path: Path) -> None:
    """A chunk whose worker dies while running it (killed, out of memory) goes back to the
    queue with the attempt counted; after ``max_attempts`` such runs it fails for good, with
    a report saying why, instead of bringing workers down forever. Only the dead worker's
    chunks are released (a prefix, not a LIKE pattern)."""
    from daemon.engine.chunks import ChunkStore, ChunkTask

    store = ChunkStore(tmp_path / "chunks.db")
    tasks = [ChunkTask(i, 10 * i, 10 * i + 10, ["vspipe"], ["enc"], "p", "o") for i in range(2)]
    store.plan("a", "k", tasks)
    for attempt in (1, 2):
        row = store.claim("h:1_:w1", job="a")
        other = store.claim("h:12:w1", job="a")
        assert row is not None and row.index == 0
        assert store.release(worker_prefix="h:1_:", max_attempts=2) == 1
        assert other is not None  # another process's chunk is not touched
        assert [(r.state, r.attempts) for r in store.rows("a")][1] == ("running", 0)
        store.release(worker_prefix="h:12:")  # no attempt counted
        (first, second) = store.rows("a")
        assert (first.attempts, second.attempts) == (attempt, 0)
    assert first.state == "failed" and "the last of its 2 attempts" in (first.error or "")
    assert second.state == "queued"
    store.close()


def test_a_plan_taken_up_again_gives_its_queued_chunks_the_new_commands(tmp_path: Path) -> None:
    """The same plan written again (a restarted job, another worker's thread count) keeps
    its finished chunks and gives the queued ones this worker's commands."""
    from daemon.engine.chunks import ChunkStore, ChunkTask

    store = ChunkStore(tmp_path / "chunks.db")

    def tasks(threads: str) -> list[ChunkTask]:
        return [ChunkTask(i, 10 * i, 10 * i + 10, ["vspipe"], ["enc", threads], "p", "o")
                for i in range(2)]  # fmt: skip

    store.plan("a", "k", tasks("6"))
    row = store.claim("w1", job="a")
    assert row is not None and row.index == 0
    store.done(row)
    store.done(row)  # twice, or by a worker that no longer holds it: no change
    rows = store.plan("a", "k", tasks("5"))
    assert [(r.state, r.task.encoder) for r in rows] == [
        ("done", ["enc", "6"]), ("queued", ["enc", "5"])
    ]  # fmt: skip
    store.close()
