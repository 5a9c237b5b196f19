"""Chunks on a Ray cluster: one cluster per test session (a head and two worker nodes on
127.0.0.1, each with one CPU and one logical GPU; one node declares ``nvenc``). The pure
parts (path mapping, vspipe's argv, slot plans, the config table) run without Ray."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.core.errors import EncodeError
from daemon.engine.chunks import ChunkRow, ChunkStore
from daemon.engine.commands import vspipe_command
from daemon.engine.finish import Engine
from daemon.engine.host import parse_vspipe
from daemon.engine.pipeline import Chunking, ChunkTask
from daemon.engine.presets import find_preset
from daemon.runtime.cluster import (
    ClusterPool,
    map_path,
    map_task,
    plan_node_slots,
    satisfies,
)
from daemon.runtime.config import ClusterConfig, parse_config
from daemon.runtime.reader import QueueReader
from daemon.runtime.states import JobState
from tests.conftest import DATA, make_clip
from tests.helpers import BIN, finishline, frame_hashes, streams, wait_for

#: Ray on the loopback only (otherwise it swaps 127.0.0.1 for the machine's outward address)
#: and no usage report
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
MB = 1024 * 1024


# -- pure -------------------------------------------------------------------------------------


def test_paths_map_by_whole_components_longest_first() -> None:
    paths = (("/srv", "/mnt/all"), ("/srv/media", "/net/media"))
    assert map_path("/srv/media/a.mp4", paths) == "/net/media/a.mp4"
    assert map_path("/srv/work/x", paths) == "/mnt/all/work/x"
    assert map_path("/srvx/a", paths) == "/srvx/a"  # not a component of /srv
    task = ChunkTask(
        0, 0, 12, ["vspipe", "--arg", "src=/srv/media/a.mp4", "/srv/w/s.vpy", "-"],
        ["/usr/bin/ffmpeg", "-i", "-", "/srv/w/c/00000.partial.mkv"],
        "/srv/w/c/00000.partial.mkv", "/srv/w/c/00000.mkv",
    )  # fmt: skip
    mapped = map_task(task, paths)
    assert mapped.vspipe[2:4] == ["src=/net/media/a.mp4", "/mnt/all/w/s.vpy"]
    assert mapped.encoder[0] == "/usr/bin/ffmpeg"  # not under a mapped prefix
    assert mapped.encoder[-1] == mapped.partial == "/mnt/all/w/c/00000.partial.mkv"


def test_vspipe_argv_parses_back_to_its_range() -> None:
    argv = vspipe_command(
        "vspipe", "/w/s.vpy", src="/m/a b.mp4", cache="/w/i", extra={"rife": "/m/r.pth"},
        start=24, end=36,
    )  # fmt: skip
    call = parse_vspipe(argv)
    assert (call.script, call.start, call.end) == ("/w/s.vpy", 24, 36)  # -e is inclusive
    assert call.args == {"src": "/m/a b.mp4", "cache": "/w/i", "rife": "/m/r.pth"}
    assert parse_vspipe(vspipe_command("vspipe", "/w/s.vpy", src="x", cache="y")).end is None


def test_slots_per_node() -> None:
    gpu = plan_node_slots({"CPU": 16, "GPU": 2}, workers_per_gpu=2)
    assert gpu == [{"CPU": 4.0, "GPU": 0.5}] * 4
    assert plan_node_slots({"CPU": 10}, cpus_per_slot=4) == [{"CPU": 4.0}] * 2
    assert plan_node_slots({"CPU": 2}, cpus_per_slot=4) == [{"CPU": 2}]
    assert satisfies({"CPU": 1, "nvenc": 1}, {"nvenc": 1}) and not satisfies({"CPU": 1}, {"x": 1})


def test_cluster_table() -> None:
    cfg = parse_config(
        '[cluster]\nengine = "ray"\naddress = "ray://head:10001"\n'
        '[cluster.paths]\n"/srv/finishline" = "/mnt/finishline"\n'
        "[cluster.resources]\nyoutube-4k = { nvenc = 1 }\n",
        source="d.toml",
    )
    assert cfg.cluster.engine == "ray" and cfg.cluster.address == "ray://head:10001"
    assert cfg.cluster.paths == (("/srv/finishline", "/mnt/finishline"),)
    assert cfg.cluster.needs("youtube-4k") == {"nvenc": 1.0} and cfg.cluster.needs("x") == {}
    with pytest.raises(Exception, match=r"engine = 'k8s' is not allowed"):
        parse_config('[cluster]\nengine = "k8s"\n', source="d.toml")


def test_the_local_default_never_imports_ray() -> None:
    code = "import sys, app.cli, daemon.runtime.service; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the session's cluster ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """Head + two worker nodes on 127.0.0.1 (1 CPU, 1 logical GPU each; the second worker
    declares ``nvenc``); this process is connected as a driver. Shut down at session end."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'finishline[ray]'")
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the env was set
    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "num_gpus": 1,
            "object_store_memory": 80 * MB}  # fmt: skip
    cluster = Cluster(
        initialize_head=True, connect=True, head_node_args={**node, "include_dashboard": False}
    )
    try:
        cluster.add_node(**node)
        cluster.add_node(**node, resources={"nvenc": 1})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def pools(ray_cluster: object) -> Iterator[Callable[..., ClusterPool]]:
    """Make pools on the session's cluster; their actors are killed after the test."""
    made: list[ClusterPool] = []

    def make(**kwargs: object) -> ClusterPool:
        pool = ClusterPool(ClusterConfig(engine="ray", **kwargs))  # type: ignore[arg-type]
        pool.connect()
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


class RecordingStore(ChunkStore):
    """The chunks table, remembering every outcome (the rows are forgotten after a join)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.finished: list[ChunkRow] = []
        self.attempts: list[tuple[int, str | None, str]] = []

    def done(self, row: ChunkRow) -> None:
        self.finished.append(row)
        super().done(row)

    def failed(self, row: ChunkRow, error: str, *, max_attempts: int) -> bool:
        self.attempts.append((row.index, row.worker, error))
        return super().failed(row, error, max_attempts=max_attempts)


def node_of(worker: str | None) -> str:
    """``HOST:PID:role@ray:IP:NODE:aN`` -> NODE."""
    return (worker or "").split("@", 1)[-1].split(":")[2]


def chunking(store: ChunkStore, pool: ClusterPool, job: str, needs=None, **kw) -> Chunking:  # type: ignore[no-untyped-def]
    return Chunking(
        store=store, job=job, seconds=kw.pop("seconds", 1.0),
        workers=max(1, pool.slots(needs or {})), place=pool.placer(needs, preset=job),
        always=True, **kw,
    )  # fmt: skip


def leftovers(work: Path) -> list[str]:
    return sorted(p.name for p in work.rglob("chunks/*") if p.is_file())


# -- on the cluster -----------------------------------------------------------------------------


def test_chunks_spread_over_nodes_through_the_mapped_paths(
    pools, tmp_path: Path, test_presets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Chunks on three nodes, each actor in its GPU share, reading and writing through the
    nodes' view of the folder ([cluster.paths]); the picture is the local run's, frame for
    frame (nothing but y4m reached the encoder)."""
    caplog.set_level("INFO", logger="daemon.runtime.cluster")
    src = make_clip(tmp_path / "clip.mp4", seconds=3.0, audio=False)
    view = tmp_path.parent / f"{tmp_path.name}-node-view"  # the nodes' mount of tmp_path
    view.symlink_to(tmp_path)
    pool = pools(paths=((str(tmp_path), str(view)),))
    store = RecordingStore(tmp_path / "chunks.db")
    engine = Engine(find_preset("small-colour"), work_root=tmp_path / "work")
    local = engine.finish(src, tmp_path / "local.mkv").output
    result = engine.finish(src, tmp_path / "ray.mkv", chunking=chunking(store, pool, "spread"))
    assert frame_hashes(result.output) == frame_hashes(local) and len(frame_hashes(local)) == 36
    # 36 frames, 1 s (12-frame) chunks shared by three slots: 12 chunks of 3, the one ending
    # each slot's third halved (1 + 2 frames): 15
    assert sorted(r.index for r in store.finished) == list(range(15))
    assert len({node_of(r.worker) for r in store.finished}) >= 2, [r.worker for r in store.finished]
    done = [r.getMessage() for r in caplog.records if " done on ray:" in r.getMessage()]
    assert len(done) == 15 and all("CUDA_VISIBLE_DEVICES=0" in m for m in done), done
    assert all(str(view) in m for m in done), done  # written through the nodes' view
    assert not leftovers(tmp_path / "work")


@pytest.mark.allow_error_logs
def test_a_path_no_node_sees_fails_the_chunk_naming_the_mapping(
    pools, tmp_path: Path, test_presets: Path
) -> None:
    src = make_clip(tmp_path / "clip.mp4", seconds=1.0, audio=False)
    pool = pools(paths=((str(tmp_path), "/nonexistent/finishline-view"),))
    store = ChunkStore(tmp_path / "chunks.db")
    engine = Engine(find_preset("small-colour"), work_root=tmp_path / "work")
    with pytest.raises(Exception) as info:
        engine.finish(
            src, tmp_path / "o.mkv", chunking=chunking(store, pool, "bad", max_attempts=1)
        )
    message = str(info.value)
    assert "cannot see /nonexistent/finishline-view/" in message, message
    assert f'[cluster.paths] "{tmp_path}" = "/nonexistent/finishline-view"' in message, message
    assert not (tmp_path / "o.mkv").exists()


def test_a_preset_needing_a_resource_runs_only_where_it_is(
    pools, tmp_path: Path, test_presets: Path
) -> None:
    import ray

    nvenc = {n["NodeID"][:8] for n in ray.nodes() if n["Alive"] and "nvenc" in n["Resources"]}
    src = make_clip(tmp_path / "clip.mp4", seconds=3.0, audio=False)
    pool = pools()
    store = RecordingStore(tmp_path / "chunks.db")
    engine = Engine(find_preset("small-colour"), work_root=tmp_path / "work")
    engine.finish(src, tmp_path / "o.mkv", chunking=chunking(store, pool, "nv", {"nvenc": 1}))
    assert len(store.finished) == 3 and {node_of(r.worker) for r in store.finished} == nvenc


@pytest.mark.allow_error_logs
def test_a_node_lost_mid_chunk_is_retried_on_another(
    ray_cluster, pools, tmp_path: Path, test_presets: Path
) -> None:
    """A second ``nvenc`` node joins; while it runs a chunk it is removed: the chunk runs
    again on the other ``nvenc`` node, the output is delivered once and verified, and no
    partial file is left."""
    import ray

    extra = ray_cluster.add_node(  # type: ignore[attr-defined]
        node_ip_address="127.0.0.1", num_cpus=1, num_gpus=1, resources={"nvenc": 1},
        object_store_memory=80 * MB,
    )  # fmt: skip
    removed = False
    try:
        ray_cluster.wait_for_nodes()  # type: ignore[attr-defined]
        doomed = extra.node_id[:8]
        src = make_clip(tmp_path / "clip.mp4", size="320x180", fps="24", seconds=4.0, audio=False)
        pool = pools()
        # both nvenc actors up before the job, so the chunks alternate between them from the
        # first (else the warm node may finish the clip while the extra one is starting)
        up = pool.start(timeout=120)
        assert any(node_of(f"x@{name}") == doomed for name in up), up
        store = RecordingStore(tmp_path / "chunks.db")
        engine = Engine(find_preset("slow-x265"), work_root=tmp_path / "work")
        out: dict[str, object] = {}

        def run() -> None:
            try:
                out["result"] = engine.finish(
                    src, tmp_path / "o.mp4", chunking=chunking(store, pool, "lost", {"nvenc": 1})
                )
            except Exception as exc:
                out["error"] = exc

        def running_on_doomed() -> bool:
            if not job.is_alive():
                raise AssertionError(f"the job ended with no chunk caught on the extra node: {out}")
            # running there: the node's actor holds the chunk (a chunk of 12 frames can end
            # between two progress reports, so its frame count is not waited for)
            return any(r.state == "running" and node_of(r.worker) == doomed
                       for r in store.rows("lost"))  # fmt: skip

        job = threading.Thread(target=run)
        job.start()
        try:
            wait_for(running_on_doomed, 120, "a chunk running on the extra node")
            ray_cluster.remove_node(extra)  # type: ignore[attr-defined]
            removed = True
        finally:
            job.join(timeout=240)
        assert not job.is_alive(), "the job did not end within 240 s of the node's removal"
    finally:
        if not removed:  # the next tests count the session's three nodes
            ray_cluster.remove_node(extra)  # type: ignore[attr-defined]
    assert "error" not in out, out.get("error")
    lost = [a for a in store.attempts if node_of(a[1]) == doomed]
    assert lost and "was lost while running it" in lost[0][2], store.attempts
    redone = {r.index: r for r in store.finished}
    assert node_of(redone[lost[0][0]].worker) != doomed
    assert int(streams(tmp_path / "o.mp4")["video"]["nb_read_packets"]) == 96
    assert not leftovers(tmp_path / "work") and not list(tmp_path.glob(".*partial*"))
    assert doomed not in {n["NodeID"][:8] for n in ray.nodes() if n["Alive"]}


def test_a_failing_script_brings_its_error_and_node_home(pools, tmp_path: Path) -> None:
    """The node's stderr tail (here the script's traceback) and the node's name reach the
    EncodeError the job's log and error report are made from."""
    script = tmp_path / "bad.vpy"
    script.write_text("import vapoursynth as vs\nraise ValueError('boom from the script')\n")
    partial, output = tmp_path / "00000.partial.mkv", tmp_path / "00000.mkv"
    task = ChunkTask(
        0, 0, 12, vspipe_command("vspipe", str(script), src=str(script), cache=str(tmp_path)),
        ["ffmpeg", "-v", "error", "-f", "yuv4mpegpipe", "-i", "-", "-c:v", "ffv1", str(partial)],
        str(partial), str(output),
    )  # fmt: skip
    pool = pools()
    with pytest.raises(EncodeError) as info, pool.placer()(lambda: False) as slot:
        slot.run(task, lambda frame, fps: None)
    report = info.value.report()
    assert "ValueError: boom from the script" in report, report
    assert f"on {slot.name}" in str(info.value) and slot.name.startswith("ray:127.0.0.1:")
    assert not partial.exists() and not output.exists()


def test_process_engine_ray_prints_only_the_output(
    ray_cluster, tmp_path: Path, test_presets: Path
) -> None:
    """The CLI front end: a short clip is one chunk on the cluster; stdout holds only the
    finished file (Ray's start-up lines stay on stderr)."""
    src = make_clip(tmp_path / "clip.mp4", seconds=1.0)
    env = {**os.environ, **RAY_ENV}
    res = finishline(
        "process", str(src), "--preset", "small-x265", "-q", "-o", str(tmp_path / "o.mp4"),
        "--engine", "ray", "--ray-address", ray_cluster.address,  # type: ignore[attr-defined]
        "--chunk-seconds", "0", env=env, timeout=180,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{tmp_path / 'o.mp4'}\n"


# -- the daemon as the control plane ------------------------------------------------------------


def daemon_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ, **RAY_ENV, "FINISHLINE_PRESETS": str(DATA / "presets_ok"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }  # fmt: skip


def start_daemon(tmp_path: Path, config: Path, root: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN / "finishline"), "daemon", "--config", str(config)],
        env=daemon_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "daemon.log").open("ab"),
    )  # fmt: skip
    wait_for(lambda: (root / "queue.db").exists() and (root / "hot" / "slow-x265").is_dir(), 30)
    return proc


def test_head_daemon_killed_mid_job_delivers_once(ray_cluster, tmp_path: Path) -> None:
    """The daemon runs a job's chunks on the cluster (``queue show`` names the node of each
    chunk, ``cluster status`` the nodes, their slots and use); ``kill -9`` once a chunk is
    done, restart: the chunks in flight are queued again, the job is delivered once."""
    root = tmp_path / "root"
    config = tmp_path / "daemon.toml"
    address = ray_cluster.address  # type: ignore[attr-defined]
    config.write_text(
        f'root = "{root}"\nworkers = 1\nsettle_seconds = 0.5\nbatch_window = 1.0\n'
        'chunk_seconds = 1.0\npresets = ["slow-x265"]\n'
        f'[cluster]\nengine = "ray"\naddress = "{address}"\n'
    )
    env = daemon_env(tmp_path)

    def chunks():  # type: ignore[no-untyped-def]
        r = QueueReader(root / "queue.db")
        try:
            return r.chunks(1), r.get(1)
        finally:
            r.close()

    daemon = start_daemon(tmp_path, config, root)
    try:
        src = make_clip(tmp_path / "long.mp4", size="320x180", fps="24", seconds=5.0)
        (root / "hot" / "slow-x265" / "long.mp4").write_bytes(src.read_bytes())
        wait_for(lambda: any(c.state == "done" for c in chunks()[0]), 120, "a chunk done")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    finally:
        if daemon.poll() is None:
            daemon.kill()
    done_before = [c for c in chunks()[0] if c.state == "done"]
    shown = finishline("queue", "show", "1", "--root", str(root), env=env).stdout
    assert done_before and "@ray:127.0.0.1:" in shown, shown
    daemon = start_daemon(tmp_path, config, root)
    try:
        mine = f":{daemon.pid}:"  # the restarted daemon's workers (not the killed one's rows)
        wait_for(lambda: any(c.state == "running" and mine in (c.worker or "") and c.frame > 0
                             for c in chunks()[0]), 120, "a chunk running again")  # fmt: skip
        status = finishline(
            "cluster", "status", "--root", str(root), "--ray-address", address, env=env,
            timeout=120,
        )  # fmt: skip
        wait_for(lambda: chunks()[1].state is JobState.DONE, 180, "delivery after the restart")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert status.returncode == 0, status.stderr
    nodes = [line for line in status.stdout.splitlines() if line.startswith("node ")]
    assert sum(" alive " in line for line in nodes) == 3, status.stdout
    assert "slot ray:127.0.0.1:" in status.stdout and "CUDA_VISIBLE_DEVICES=0" in status.stdout
    assert "GPU 0/1 free" in status.stdout, status.stdout  # the daemon's actors hold the GPUs
    outputs = sorted(p.name for p in (root / "out" / "slow-x265").glob("*.mp4"))
    assert outputs == ["long.mp4"]
    assert int(streams(root / "out" / "slow-x265" / "long.mp4")["video"]["nb_read_packets"]) == 120
    assert chunks()[1].attempts == 1
    log = (root / "logs" / "finishline.log").read_text()
    assert f"({len(done_before)} done by an earlier run)" in log, log
    assert "CUDA_VISIBLE_DEVICES=0" in log


def test_an_unreachable_cluster_keeps_jobs_queued_with_one_error(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'finishline[ray]'")
    root = tmp_path / "root"
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'root = "{root}"\nworkers = 1\nsettle_seconds = 0.5\nbatch_window = 0.5\n'
        'presets = ["slow-x265"]\n'
        '[cluster]\nengine = "ray"\naddress = "127.0.0.1:9"\nretry_seconds = 0.5\n'
    )
    daemon = start_daemon(tmp_path, config, root)
    try:
        src = make_clip(tmp_path / "clip.mp4", seconds=1.0)
        (root / "hot" / "slow-x265" / "clip.mp4").write_bytes(src.read_bytes())
        reader = QueueReader(root / "queue.db")
        try:
            wait_for(lambda: reader.get(1) is not None, 30, "the job queued")
            time.sleep(3.0)  # several connection attempts
            assert reader.get(1).state is JobState.QUEUED  # type: ignore[union-attr]
        finally:
            reader.close()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    log = (root / "logs" / "finishline.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line and "cluster" in line]
    assert len(errors) == 1 and "cannot reach the Ray cluster at 127.0.0.1:9" in errors[0], errors
    assert daemon.returncode == 0
