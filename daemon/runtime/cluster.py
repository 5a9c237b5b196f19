"""Chunks on a Ray cluster: an executor for the engine's chunk machinery.

The daemon (or ``finishline process``) stays the control plane: it watches, queues (SQLite on
the head is the single source of truth), assesses, plans chunks and delivers. Ray only runs
chunks. Each node holds long-lived actors, one per GPU share (``1 / workers_per_gpu``) or per
``cpus_per_slot`` cores on a node without a GPU; an actor runs a chunk's VapourSynth script
in its own process (as vspipe would) and pipes the y4m into the chunk's encoder, so the
networks one chunk loads stay loaded for the next (``vs_scripts.runtime.filters`` caches them
in module-level dicts). Media moves through shared storage, never Ray's object store:
``[cluster.paths]`` maps the head's path prefixes to the nodes'.

The engine sees only :class:`~daemon.engine.pipeline.ChunkSlot` (a name and a runner) through
:meth:`ClusterPool.placer`. Ray is optional (``pip install 'finishline[ray]'``) and is
imported inside functions only: the local engine never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from daemon.core.errors import AppError
from daemon.engine.chunks import ChunkTask
from daemon.engine.host import ChunkHost, HostError, raise_for
from daemon.engine.pipeline import Cancelled, ChunkSlot, Placer
from daemon.runtime.config import ClusterConfig

log = logging.getLogger(__name__)

NAMESPACE = "finishline"


class ClusterError(AppError):
    """A chunk could not run on the cluster (a path a node cannot see, a lost node, a
    resource no node declares)."""

    title = "cluster"


class ClusterUnavailable(Cancelled):
    """The cluster cannot be reached. Not the job's fault: it goes back to the queue (its
    chunks too, without counting an attempt) and the daemon keeps trying to connect."""

    title = "cluster unavailable"


def require_ray() -> None:
    """Raise a one-sentence error when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise AppError(
            "the ray engine needs Ray: pip install 'finishline[ray]' (on the head and every node)."
        ) from None


# -- pure: paths, vspipe's argv, slots -------------------------------------------------------------


def map_path(path: str, paths: Sequence[tuple[str, str]]) -> str:
    """``path`` as a node sees it: the longest matching head prefix replaced by the node's
    (whole path components only: ``/data`` does not match ``/database``)."""
    for head, node in sorted(paths, key=lambda p: -len(p[0])):
        if head == "/" and path.startswith("/"):
            return node.rstrip("/") + path
        if path == head or path.startswith(head + "/"):
            return node + path[len(head) :]
    return path


def map_argv(argv: Sequence[str], paths: Sequence[tuple[str, str]]) -> list[str]:
    """Every absolute path in ``argv`` mapped, including ``name=/path`` (``--arg`` values)."""
    out = []
    for item in argv:
        if item.startswith("/"):
            item = map_path(item, paths)
        elif "=" in item:
            name, value = item.split("=", 1)
            if value.startswith("/"):
                item = f"{name}={map_path(value, paths)}"
        out.append(item)
    return out


def map_task(task: ChunkTask, paths: Sequence[tuple[str, str]]) -> ChunkTask:
    """The task as a node runs it: its commands and files under the node's prefixes."""
    if not paths:
        return task
    return replace(
        task,
        vspipe=map_argv(task.vspipe, paths),
        encoder=map_argv(task.encoder, paths),
        partial=map_path(task.partial, paths),
        output=map_path(task.output, paths),
    )


def describe_paths(paths: Sequence[tuple[str, str]]) -> str:
    if not paths:
        return "no [cluster.paths] mapping: nodes must see the head's paths as they are"
    return "[cluster.paths] " + ", ".join(f'"{h}" = "{n}"' for h, n in paths)


def plan_node_slots(
    resources: Mapping[str, float], *, workers_per_gpu: int = 1, cpus_per_slot: int = 4
) -> list[dict[str, float]]:
    """What each actor of a node asks Ray for (pure): ``1 / workers_per_gpu`` of a GPU and an
    equal share of the node's cores on a GPU node; ``cpus_per_slot`` cores otherwise (one
    slot with all the cores on a smaller node)."""
    cpus = float(resources.get("CPU", 0))
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:
        n = gpus * max(1, workers_per_gpu)
        share = float(int(cpus // n)) if cpus >= n else round(cpus / n, 4)
        return [{"CPU": share, "GPU": 1 / max(1, workers_per_gpu)} for _ in range(n)]
    if cpus <= 0:
        return []
    if cpus < cpus_per_slot:
        return [{"CPU": cpus}]
    return [{"CPU": float(cpus_per_slot)} for _ in range(int(cpus // cpus_per_slot))]


def satisfies(resources: Mapping[str, float], needs: Mapping[str, float]) -> bool:
    """A node declaring ``resources`` may run chunks that need ``needs`` (labels: the
    amount a node declares must reach the amount asked for)."""
    return all(float(resources.get(k, 0)) >= v for k, v in needs.items())


def thread_budget(request: Mapping[str, float]) -> int:
    return max(1, int(request.get("CPU", 1)))


def resolve_address(address: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The ``HOST:PORT`` (or ``ray://HOST:PORT``) behind ``address``; ``auto`` is
    ``$RAY_ADDRESS`` or the cluster ``ray start`` recorded on this machine (None: none)."""
    environ = os.environ if environ is None else environ
    if address != "auto":
        return address
    if environ.get("RAY_ADDRESS"):
        return environ["RAY_ADDRESS"]
    try:
        text = Path("/tmp/ray/ray_current_cluster").read_text().strip()
    except OSError:
        return None
    return text or None


def reachable(address: str, *, timeout: float = 3.0) -> str | None:
    """Why ``address`` cannot be reached over TCP (None: it answers). Checked before
    ``ray.init``, which would otherwise retry for minutes."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return f"{address!r} is not HOST:PORT"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


# -- the node side: one actor per slot -------------------------------------------------------------


class ChunkActor(ChunkHost):
    """A :class:`~daemon.engine.host.ChunkHost` as a Ray actor: one slot of a node."""

    def where(self) -> dict[str, object]:
        import ray

        return {
            **super().where(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
        }


# -- the head side: the pool of actors -------------------------------------------------------------


@dataclass(eq=False)
class _Member:
    index: int
    handle: object
    node_id: str
    ip: str
    labels: dict[str, float]  # the node's resources
    request: dict[str, float]  # what the actor holds
    pending: object | None  # ``where()``'s ObjectRef until the actor is up
    info: dict[str, object] = field(default_factory=dict)
    busy: bool = False
    dead: bool = False
    last_used: float = 0.0

    @property
    def name(self) -> str:
        return f"ray:{self.ip}:{self.node_id[:8]}:a{self.index}"

    @property
    def device(self) -> str:
        parts = []
        if self.request.get("GPU"):
            parts.append(
                f"{self.request['GPU']:g} GPU (CUDA_VISIBLE_DEVICES={self.info.get('cuda', '?')})"
            )
        parts.append(f"{self.request.get('CPU', 0):g} CPU ({thread_budget(self.request)} threads)")
        return f"ray node {self.ip} {self.node_id[:8]}: " + ", ".join(parts)


class ClusterPool:
    """The actors on the cluster's nodes, kept in step with the nodes (new nodes get actors,
    a lost node's are dropped), handed out one chunk at a time. Thread-safe."""

    def __init__(
        self,
        cfg: ClusterConfig,
        *,
        workers_per_gpu: int = 1,
        on_slot: Callable[[str, str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.workers_per_gpu = workers_per_gpu
        self.on_slot = on_slot  # (slot name, device) when an actor is up: the daemon records it
        self._cond = threading.Condition()
        self._members: list[_Member] = []
        self._nodes: list[dict[str, object]] = []
        self._next = 0
        self._connected = False
        self._owns_ray = False
        self._failing: str | None = None  # the connection error last logged
        self._reconciled = 0.0
        self._last_try = 0.0
        self._connect_lock = threading.Lock()
        self._promote_lock = threading.Lock()
        self._try_lock = threading.Lock()
        self._hiccup = ""  # the last unexpected Ray error while placing (logged once)

    # -- connection --------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.cfg.address

    def connect(self) -> None:
        """Connect (once); raises :class:`ClusterUnavailable` in one sentence."""
        with self._connect_lock:
            if self._connected:
                return
            require_ray()
            import ray

            if self._owns_ray or not ray.is_initialized():
                target = resolve_address(self.cfg.address)
                if target is None:
                    raise ClusterUnavailable(
                        'no Ray cluster runs on this machine ([cluster] address = "auto"); start '
                        "one with `ray start --head` or set [cluster] address (--ray-address)."
                    )
                why = reachable(target)
                if why is not None:
                    raise ClusterUnavailable(
                        f"cannot reach the Ray cluster at {target} ({why}); start its head "
                        "(`ray start --head`) or fix [cluster] address (--ray-address)."
                    )
            if not ray.is_initialized():
                try:
                    ray.init(
                        address=target,
                        namespace=NAMESPACE,
                        log_to_driver=False,
                        logging_level=logging.WARNING,
                    )
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        ray.shutdown()
                    raise ClusterUnavailable(
                        f"cannot connect to the Ray cluster at {target} ({_first_line(exc)}); "
                        "check that its Ray version matches this one."
                    ) from None
                self._owns_ray = True
            self._connected = True
            self._nodes = [n for n in ray.nodes() if n.get("Alive")]
        log.info(
            "connected to the Ray cluster at %s: %d node(s), %d slot(s)",
            self.cfg.address,
            len(self._nodes),
            self.slots({}),
        )

    def ready(self) -> bool:
        """Connected now; otherwise one attempt, at most every ``retry_seconds``. The first
        failure is logged as an error, later ones only when the reason changes; jobs wait
        in the queue meanwhile."""
        if self._connected:
            return True
        if not self._try_lock.acquire(blocking=False):
            return False  # another thread is trying right now
        try:
            return self._try_connect()
        finally:
            self._try_lock.release()

    def _try_connect(self) -> bool:
        now = time.monotonic()
        if now - self._last_try < self.cfg.retry_seconds and self._failing is not None:
            return False
        self._last_try = now
        try:
            self.connect()
        except AppError as exc:  # unreachable, or Ray not installed: one line each time it changes
            if self._failing != str(exc):
                log.error(
                    "%s Jobs stay queued; trying again every %g s.", exc, self.cfg.retry_seconds
                )
            self._failing = str(exc)
            return False
        if self._failing is not None:
            log.info("the Ray cluster at %s answers again", self.cfg.address)
        self._failing = None
        return True

    def watch(self, stop: threading.Event) -> None:
        """Keep trying to connect until ``stop`` (a daemon thread runs this)."""
        while not stop.is_set():
            self.ready()
            stop.wait(1.0)

    def close(self) -> None:
        """Kill our actors (and disconnect, when we connected)."""
        if not self._connected:
            return
        import ray

        with self._cond:
            members, self._members = self._members, []
        for m in members:
            with contextlib.suppress(Exception):
                ray.kill(m.handle)
        if self._owns_ray:
            with contextlib.suppress(Exception):
                ray.shutdown()
        self._connected = False

    # -- capacity ----------------------------------------------------------------------------------

    def slots(self, needs: Mapping[str, float]) -> int:
        """How many chunks can run at once on nodes that satisfy ``needs``."""
        return sum(
            len(self._plan(n["Resources"]))  # type: ignore[arg-type]
            for n in self._nodes
            if satisfies(n["Resources"], needs)  # type: ignore[arg-type]
        )

    def threads(self) -> int | None:
        """The smallest slot's thread budget (for encoder options written on the head)."""
        budgets = [thread_budget(r) for n in self._nodes for r in self._plan(n["Resources"])]  # type: ignore[arg-type]
        return min(budgets) if budgets else None

    def _plan(self, resources: Mapping[str, float]) -> list[dict[str, float]]:
        return plan_node_slots(
            resources, workers_per_gpu=self.workers_per_gpu, cpus_per_slot=self.cfg.cpus_per_slot
        )

    # -- keeping actors in step with the nodes -----------------------------------------------------

    def _reconcile(self, *, force: bool = False) -> None:
        """New nodes get actors, a lost node's actors are dropped (at most every 2 s)."""
        import ray

        now = time.monotonic()
        if not force and now - self._reconciled < 2.0:
            return
        self._reconciled = now
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        alive = {n["NodeID"] for n in nodes}
        with self._cond:
            self._nodes = nodes
            for m in self._members:
                if m.node_id not in alive and not m.dead:
                    m.dead = True
                    log.warning("cluster slot %s is gone (its node left the cluster)", m.name)
            self._members = [m for m in self._members if not m.dead or m.busy]
            for n in nodes:
                have = sum(1 for m in self._members if m.node_id == n["NodeID"] and not m.dead)
                for request in self._plan(n["Resources"])[have:]:
                    self._members.append(self._start(n, request))
            self._cond.notify_all()

    def _start(self, node: Mapping[str, object], request: dict[str, float]) -> _Member:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = (
            _actor_class()
            .options(
                num_cpus=request.get("CPU", 0),
                num_gpus=request.get("GPU", 0),
                max_concurrency=4,  # run() in one thread; progress() and cancel() beside it
                max_restarts=0,  # a lost node's actor is replaced by the pool, not restarted
                scheduling_strategy=NodeAffinitySchedulingStrategy(str(node["NodeID"]), soft=False),
            )
            .remote(thread_budget(request))
        )
        self._next += 1
        labels = {str(k): float(v) for k, v in dict(node["Resources"]).items()}  # type: ignore[call-overload]
        return _Member(
            self._next - 1,
            actor,
            str(node["NodeID"]),
            str(node.get("NodeManagerAddress", "?")),
            labels,
            request,
            actor.where.remote(),  # type: ignore[attr-defined]
        )

    def _promote(self) -> None:
        """Actors whose ``where()`` answered are ready (or dead, if it failed)."""
        import ray

        if not self._promote_lock.acquire(blocking=False):
            return  # another thread is at it
        try:
            self._promote_pending(ray)
        finally:
            self._promote_lock.release()

    def _promote_pending(self, ray) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            pending = {m.pending: m for m in self._members if m.pending is not None}
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in done:
            m = pending[ref]
            try:
                m.info = ray.get(ref)
            except Exception as exc:
                log.warning("cluster slot %s did not start: %s", m.name, _first_line(exc))
                m.dead = True
            m.pending = None
            if not m.dead:
                log.info("cluster slot %s ready: %s", m.name, m.device)
                if self.on_slot is not None:
                    with contextlib.suppress(Exception):
                        self.on_slot(m.name, m.device)

    def start(self, timeout: float) -> list[str]:
        """Start the actors of every node now (rather than at the first chunk) and wait up to
        ``timeout`` seconds for them to answer; returns the names of the slots that are up."""
        import ray

        deadline = time.monotonic() + timeout
        self._reconcile(force=True)
        while True:
            with self._cond:
                pending = [m.pending for m in self._members if m.pending is not None]
            left = deadline - time.monotonic()
            if pending and left > 0:
                ray.wait(pending, num_returns=len(pending), timeout=left)
            self._promote()
            with self._cond:
                waiting = any(m.pending is not None for m in self._members)
            if not waiting or time.monotonic() >= deadline:
                return [name for name, _, _ in self.members()]
            time.sleep(0.05)  # another thread is promoting them

    # -- placing chunks ----------------------------------------------------------------------------

    def placer(self, needs: Mapping[str, float] | None = None, *, preset: str = "") -> Placer:
        """The engine's :class:`~daemon.engine.pipeline.Chunking` ``place`` for a job whose
        preset needs ``needs`` (custom resources a node must declare)."""
        wanted = dict(needs or {})

        def place(should_stop: Callable[[], bool]) -> contextlib.AbstractContextManager[ChunkSlot]:
            return self._place(wanted, should_stop, preset)

        return place

    @contextlib.contextmanager
    def _place(
        self, needs: dict[str, float], should_stop: Callable[[], bool], preset: str
    ) -> Iterator[ChunkSlot]:
        member = self._acquire(needs, should_stop, preset)
        try:
            yield ChunkSlot(member.name, lambda task, prog: self._run(member, task, prog))
        finally:
            with self._cond:
                member.busy = False
                member.last_used = time.monotonic()
                self._cond.notify_all()

    def _acquire(
        self, needs: dict[str, float], should_stop: Callable[[], bool], preset: str
    ) -> _Member:
        """A free actor on a node satisfying ``needs``: the least busy node first, then the
        actor idle longest (chunks spread over the nodes)."""
        since = time.monotonic()
        warned = False
        while True:
            if should_stop():
                raise Cancelled("cancelled while waiting for a cluster slot.")
            if not self.ready():
                raise ClusterUnavailable(self._failing or "the Ray cluster cannot be reached.")
            try:
                self._reconcile()
                self._promote()
            except Exception as exc:
                self._lost_connection(exc)  # raises when the cluster is gone
                if _first_line(exc) != self._hiccup:  # else log it once and go on waiting
                    self._hiccup = _first_line(exc)
                    log.warning("the Ray cluster did not answer as expected: %s", self._hiccup)
            with self._cond:
                if not any(satisfies(n["Resources"], needs) for n in self._nodes):  # type: ignore[arg-type]
                    raise ClusterError(_no_node(needs, preset))
                free = [m for m in self._members if m.pending is None and not m.dead
                        and not m.busy and satisfies(m.labels, needs)]  # fmt: skip
                if free:
                    load = {m.node_id: 0 for m in free}
                    for m in self._members:
                        if m.busy and m.node_id in load:
                            load[m.node_id] += 1
                    pick = min(free, key=lambda m: (load[m.node_id], m.last_used, m.index))
                    pick.busy = True
                    return pick
                if not warned and time.monotonic() - since > 60:
                    log.warning("waiting for a free cluster slot for %s", preset or "a chunk")
                    warned = True
                self._cond.wait(0.25)

    def _run(
        self, member: _Member, task: ChunkTask, on_progress: Callable[[int, float], None]
    ) -> None:
        """Run ``task`` on ``member``; raises on failure (the chunk goes back to the queue)."""
        import ray
        from ray.exceptions import RayActorError

        mapped = map_task(task, self.cfg.paths)
        ref = member.handle.run.remote(mapped.to_json(), describe_paths(self.cfg.paths))  # type: ignore[attr-defined]
        try:
            while True:
                done, _ = ray.wait([ref], timeout=0.5)
                if done:
                    result = ray.get(ref)
                    break
                frame, fps = ray.get(member.handle.progress.remote(), timeout=30)  # type: ignore[attr-defined]
                on_progress(frame, fps)
        except Cancelled:
            with contextlib.suppress(Exception):
                member.handle.cancel.remote()  # type: ignore[attr-defined]
                ray.wait([ref], timeout=10)
            raise
        except RayActorError as exc:
            self._lost(member, task, exc)
        except Exception as exc:
            self._lost_connection(exc)
            raise ClusterError(
                f"chunk {task.index} on {member.name} failed in Ray: {_first_line(exc)}"
            ) from None
        self._outcome(member, task, result)

    def _outcome(self, member: _Member, task: ChunkTask, result: dict[str, object]) -> None:
        if result.get("ok"):
            if not Path(task.output).exists():
                raise ClusterError(
                    f"chunk {task.index}: {member.name} wrote it, but {task.output} is not "
                    f"there on this machine; {describe_paths(self.cfg.paths)} must map to the "
                    "same shared storage."
                )
            log.info(
                "chunk %d done on %s (CUDA_VISIBLE_DEVICES=%s), written as %s",
                task.index,
                member.name,
                result.get("cuda", ""),
                result.get("output"),
            )
            return
        try:
            raise_for(task, result, member.name)
        except HostError as exc:  # a path the node cannot see, an error in the script
            raise ClusterError(str(exc)) from None

    def _lost(self, member: _Member, task: ChunkTask, exc: BaseException) -> None:
        """The actor (its node) died mid-chunk: its partial output is discarded and the
        chunk goes back to the queue, to run on another node."""
        import ray

        with self._cond:
            member.dead = True
            self._reconciled = 0.0  # look at the nodes again before the next placement
        with contextlib.suppress(Exception):  # merely unreachable: free its share for a new one
            ray.kill(member.handle)
        with contextlib.suppress(OSError):
            Path(task.partial).unlink()
        raise ClusterError(
            f"chunk {task.index}: {member.name} was lost while running it "
            f"({_first_line(exc)}); it runs again on another node."
        ) from None

    def _lost_connection(self, exc: BaseException) -> None:
        """Raise :class:`ClusterUnavailable` when the cluster no longer answers."""
        target = resolve_address(self.cfg.address)
        why = "no address" if target is None else reachable(target)
        if why is None:
            return
        self._connected = False
        message = (
            f"lost the Ray cluster at {target} ({why}; {_first_line(exc)}); the job goes back "
            "to the queue."
        )
        self._failing = message
        log.error("%s Trying again every %g s.", message, self.cfg.retry_seconds)
        raise ClusterUnavailable(message) from None

    # -- what runs where ---------------------------------------------------------------------------

    def members(self) -> list[tuple[str, str, bool]]:
        """(slot name, device, busy) of the actors that are up."""
        with self._cond:
            return [(m.name, m.device, m.busy) for m in self._members if m.pending is None
                    and not m.dead]  # fmt: skip


_ACTOR = None


def _actor_class():  # type: ignore[no-untyped-def]
    global _ACTOR
    if _ACTOR is None:
        import ray

        _ACTOR = ray.remote(ChunkActor)
    return _ACTOR


def _no_node(needs: Mapping[str, float], preset: str) -> str:
    if not needs:
        return (
            "the Ray cluster has no node with a GPU or CPU to run chunks; start one with "
            "`ray start --address=HEAD:6379`."
        )
    wanted = ", ".join(f"{k} = {v:g}" for k, v in sorted(needs.items()))
    example = ", ".join(f'"{k}": {v:g}' for k, v in sorted(needs.items()))
    return (
        f"no node of the Ray cluster declares {wanted}, which preset {preset or '?'} needs "
        f"([cluster.resources]); start such a node with `ray start --resources='{{{example}}}'` "
        "or change the mapping."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# -- `finishline cluster status` -------------------------------------------------------------------


def cluster_status(pool: ClusterPool, db: Path | None) -> str:
    """The nodes (alive or not), their resources and what is free, the finishline slots the
    daemon recorded and the chunks running on each (from the queue database)."""
    import ray

    nodes = ray.nodes()
    try:
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()
    except Exception:  # a private API: without it, totals only
        free = {}
    slots, chunks = _recorded(db)
    alive = [n for n in nodes if n.get("Alive")]
    lines = [f"Ray cluster at {pool.address}: {len(alive)} node(s) alive of {len(nodes)}"]
    for n in sorted(
        nodes, key=lambda n: (not n.get("Alive"), n["NodeManagerAddress"], n["NodeID"])
    ):
        node_id, ip = n["NodeID"], n["NodeManagerAddress"]
        state = "alive" if n.get("Alive") else "dead"
        res = n.get("Resources", {}) if n.get("Alive") else {}
        have = free.get(node_id, {})
        shown = [f"{k} {have.get(k, 0):g}/{v:g} free" for k, v in sorted(res.items())
                 if not k.startswith(("node:", "memory", "object_store_memory"))]  # fmt: skip
        lines.append(f"node {node_id[:8]} {ip} {state}  " + ", ".join(shown))
        prefix = f"ray:{ip}:{node_id[:8]}:"
        for name, device in sorted(slots.items()):
            if name.startswith(prefix):
                lines.append(f"  slot {name}  {device}")
                for job, idx, start, end, frame in chunks.get(name, []):
                    lines.append(
                        f"    chunk {idx} of {job} (frames {start}-{end - 1}): "
                        f"{frame}/{end - start}"
                    )
    return "\n".join(lines)


def _recorded(db: Path | None) -> tuple[dict[str, str], dict[str, list[tuple]]]:
    """Slots (name -> device) and running chunks by slot, from the queue database."""
    if db is None or not db.exists():
        return {}, {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}, {}
    try:
        slots = dict(con.execute("SELECT name, device FROM workers WHERE name LIKE 'ray:%'"))
        chunks: dict[str, list[tuple]] = {}
        for job, idx, start, end, frame, worker in con.execute(
            "SELECT job, idx, start, end, frame, worker FROM chunks "
            "WHERE state='running' AND worker LIKE '%@ray:%' ORDER BY job, idx"
        ):
            chunks.setdefault(worker.split("@", 1)[1], []).append((job, idx, start, end, frame))
        return slots, chunks
    except sqlite3.Error:
        return {}, {}
    finally:
        con.close()
