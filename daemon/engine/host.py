"""Running a chunk inside a long-lived process that keeps VapourSynth and the networks the
filters load (torch, the model weights) warm from one chunk to the next: the chunk's script is
executed as vspipe would run it (its ``--arg`` values as globals), output 0 sliced to the
chunk's range and written as y4m into the encoder's stdin.

:class:`ChunkHost` does the work; a Ray actor on each node of a cluster is one
(``daemon.runtime.cluster``), and so is each local worker's host process
(:class:`WarmHost`, :func:`serve`), so a chunk costs an encoder start, not a Python, torch
and model start (seconds on a CPU, more with TensorRT engines on a GPU).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from daemon.core.errors import AppError, EncodeError
from daemon.core.tools import find_tool
from daemon.engine.chunks import ChunkTask, run_chunk
from daemon.engine.pipeline import (
    Cancelled,
    ChunkSlot,
    Placer,
    SlotPool,
    pump,
    with_parent,
)
from daemon.engine.slots import THREAD_VARIABLES, Slot

T = TypeVar("T")


#: seconds a host keeps the last chunk's script output (decoders, frame caches) when idle
KEEP_S = 30.0


class HostError(AppError):
    """A chunk could not run in its host (a bad command, a path it cannot see)."""


#: arguments that name a folder the script may create itself (not checked on the node)
CREATED_BY_SCRIPT = frozenset({"engine_cache"})
#: arguments that may name a file prefix (BestSource's index, PREFIX.N.bsindex): their folder
#: is what must be visible
PREFIXES = frozenset({"cache"})


@dataclass(frozen=True, slots=True)
class VspipeCall:
    """What ``vspipe -c y4m -p --arg k=v ... [-s S] [-e E] SCRIPT -`` asks for; ``end`` is
    half-open (vspipe's ``-e`` is inclusive), ``None`` meaning to the last frame."""

    script: str
    args: dict[str, str]
    start: int = 0
    end: int | None = None


_VSPIPE_VALUE = {"-c", "--container", "-a", "--arg", "-s", "--start", "-e", "--end",
                 "-o", "--outputindex", "-r", "--requests"}  # fmt: skip


def parse_vspipe(argv: Sequence[str]) -> VspipeCall:
    """The inverse of ``commands.vspipe_command`` (argv[0] is vspipe itself)."""
    args: dict[str, str] = {}
    start, end = 0, None
    positional: list[str] = []
    items = iter(argv[1:])
    for item in items:
        if item in _VSPIPE_VALUE:
            value = next(items, None)
            if value is None:
                raise HostError(f"vspipe command ends after {item}: {' '.join(argv)}")
            if item in ("-a", "--arg"):
                name, _, val = value.partition("=")
                args[name] = val
            elif item in ("-s", "--start"):
                start = int(value)
            elif item in ("-e", "--end"):
                end = int(value) + 1
        elif item.startswith("-") and item != "-":
            continue  # flags: -p, --progress
        else:
            positional.append(item)
    if not positional:
        raise HostError(f"vspipe command names no script: {' '.join(argv)}")
    return VspipeCall(positional[0], args, start, end)


class ChunkHost:
    """One slot of a node (a GPU share or some cores). Runs chunks in this process: the
    script is executed as vspipe would (its ``--arg`` values as globals), output 0 sliced to
    the chunk's range and written as y4m into the encoder's stdin; the outputs are cleared
    after each chunk, the networks the filters cached stay loaded for the next one."""

    def __init__(self, threads: int) -> None:
        os.environ["FINISHLINE_THREADS"] = str(threads)  # read when the filters load
        for var in THREAD_VARIABLES:
            os.environ[var] = str(threads)
        self.threads = threads
        self._progress: tuple[int, float] = (0, 0.0)
        self._encoder: subprocess.Popen[bytes] | None = None
        self._cancelled = False
        self._lock = threading.Lock()
        # the last script's whole output, kept for the job's next chunk (see _clip), and let
        # go of when no request came for KEEP_S: that chunk comes at once or not at all
        self._kept: tuple[tuple[object, ...], object] | None = None
        self._idle: threading.Timer | None = None

    def where(self) -> dict[str, object]:
        return {
            "ip": "127.0.0.1",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "threads": self.threads,
        }

    def progress(self) -> tuple[int, float]:
        return self._progress

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._encoder is not None:
                with contextlib.suppress(ProcessLookupError):
                    self._encoder.kill()

    def run(self, task_json: str, paths_note: str) -> dict[str, object]:
        """Run one (already mapped) task: commands, frame check, rename. Returns an outcome
        dict (errors travel as data: an exception's pickle would lose its fields)."""
        with self._busy():
            return self._run(ChunkTask.from_json(task_json), paths_note)

    def _run(self, task: ChunkTask, paths_note: str) -> dict[str, object]:
        self._progress, self._cancelled = (0, 0.0), False
        where = self.where()
        try:
            missing = _not_visible(task)
            if missing and not paths_note:  # this machine's own host
                return {"ok": False, "kind": "path", "message": f"{missing} is not there."}
            if missing:
                return {
                    "ok": False,
                    "kind": "path",
                    "message": f"node {where['ip']} ({where['host']}) cannot see {missing} "
                    f"({paths_note}); mount the shared storage there or fix [cluster.paths] "
                    "in daemon.toml",
                }
            run_chunk(task, self._pipe, on_progress=self._on_progress)
        except EncodeError as exc:
            return {"ok": False, "kind": "encode", "stage": exc.stage, "commands": exc.commands,
                    "codes": exc.codes, "tails": exc.tails, "hint": exc.hint}  # fmt: skip
        except Cancelled:
            return {"ok": False, "kind": "cancelled"}
        except Exception as exc:
            return {"ok": False, "kind": "error", "message": str(exc) or repr(exc),
                    "trace": traceback.format_exc()}  # fmt: skip
        return {"ok": True, "output": task.output, **where}

    def info(self, vspipe: Sequence[str]) -> dict[str, object]:
        """What ``vspipe --info`` would say of a script (``vspipe``: that command), answered
        here: the script is loaded with the networks this host has loaded already, and kept
        for the job's chunks."""
        try:
            call = parse_vspipe(vspipe)
            with self._busy(), contextlib.redirect_stdout(sys.stderr):
                frames = self._clip(VspipeCall(call.script, call.args)).num_frames
        except Exception:
            self.forget()
            return {"ok": False, "kind": "error", "message": _trace_tail()}
        return {"ok": True, "frames": frames}

    def forget(self) -> None:
        """Let go of the kept script output (its decoders and frame caches)."""
        with self._lock:
            self._kept = None

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """A request: the idle countdown stops while it runs and starts again after it."""
        with self._lock:
            if self._idle is not None:
                self._idle.cancel()
        try:
            yield
        finally:
            idle = threading.Timer(KEEP_S, self.forget)
            idle.daemon = True
            with self._lock:
                self._idle = idle
            idle.start()

    def _clip(self, call: VspipeCall):  # type: ignore[no-untyped-def]
        """Output 0 of ``call``'s script over its range. The script's whole output is kept
        for the next chunk: a job's chunks mostly come to a host in order, and the next one
        then goes on decoding where this one stopped (no seek back to a keyframe, the
        temporal stages' context frames still cached) instead of loading the script again."""
        key = (call.script, Path(call.script).read_bytes(), tuple(sorted(call.args.items())))
        with self._lock:
            kept = self._kept
        if kept is None or kept[0] != key:
            self.forget()  # the old job's decoders go before the new ones open
            kept = (key, _load_clip(call))
            with self._lock:
                self._kept = kept
        whole = kept[1]
        end = whole.num_frames if call.end is None else call.end  # type: ignore[attr-defined]
        return whole[call.start : end]  # type: ignore[index]

    def _on_progress(self, frame: int, fps: float) -> None:
        self._progress = (frame, fps)

    def _pipe(
        self,
        first: Sequence[str],
        second: Sequence[str],
        total: int,
        on_frames: Callable[[int, float], None],
    ) -> None:
        """``vspipe | encoder`` with the vspipe part in this process."""
        import vapoursynth as vs

        call = parse_vspipe(first)
        encoder = _local_tool(second)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout never carries anything
                clip = self._clip(call)
        except Exception:
            self.forget()
            raise EncodeError(
                "chunk",
                [first, second],
                [1, None],
                [_trace_tail(), ""],
                hint="the VapourSynth script failed on the node; its error is above",
            ) from None
        with self._lock:
            if self._cancelled:
                raise Cancelled("cancelled before encoding.")
            proc = subprocess.Popen(
                with_parent(encoder),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self._encoder = proc
        enc_tail: deque[str] = deque(maxlen=40)
        reader = threading.Thread(target=pump, args=(proc.stderr, enc_tail.append), daemon=True)
        reader.start()
        started = time.monotonic()

        def progress(done: int, _total: int) -> None:
            elapsed = time.monotonic() - started
            on_frames(done, done / elapsed if elapsed > 0 else 0.0)

        vs_code, vs_tail = 0, ""
        try:
            with contextlib.redirect_stdout(sys.stderr):
                clip.output(proc.stdin, y4m=True, progress_update=progress)
        except (vs.Error, OSError) as exc:
            vs_code, vs_tail = 1, f"{type(exc).__name__}: {exc}"
            self.forget()  # loaded again for the retry
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            proc.wait()
            reader.join(timeout=5)
            with self._lock:
                self._encoder = None
            del clip
            vs.clear_outputs()
        if self._cancelled:
            raise Cancelled("cancelled while encoding.")
        codes = [vs_code, proc.returncode]
        if codes != [0, 0]:
            hint = (
                "the encoder stopped first; see its error"
                if proc.returncode
                else "the VapourSynth script failed while rendering; its error is above"
            )
            raise EncodeError(
                "chunk", [first, second], codes, [vs_tail, "\n".join(enc_tail)], hint=hint
            )


def _load_clip(call: VspipeCall):  # type: ignore[no-untyped-def]
    """Execute the script as vspipe does and return its whole output 0."""
    import vapoursynth as vs

    vs.clear_outputs()
    scope: dict[str, object] = {"__name__": "__vapoursynth__", "__file__": call.script}
    scope.update(call.args)
    code = compile(Path(call.script).read_bytes(), call.script, "exec")
    exec(code, scope)
    out = vs.get_output(0)
    return getattr(out, "clip", out)


def _not_visible(task: ChunkTask) -> str | None:
    """The first path of ``task`` this node cannot see (None: all there)."""
    call = parse_vspipe(task.vspipe)
    wanted = [call.script, str(Path(task.output).parent)]
    wanted += [v for k, v in sorted(call.args.items()) if v.startswith("/") and k not in
               CREATED_BY_SCRIPT | PREFIXES]  # fmt: skip
    for path in wanted:
        if not os.path.exists(path):
            return path
    for k in PREFIXES & call.args.keys():
        if not os.path.exists(call.args[k]) and not os.path.isdir(os.path.dirname(call.args[k])):
            return call.args[k]
    return None


def _local_tool(argv: Sequence[str]) -> list[str]:
    """The encoder command with this node's binary when the head's path is not here."""
    if os.path.exists(argv[0]):
        return list(argv)
    return [find_tool(Path(argv[0]).name), *argv[1:]]


def _trace_tail(lines: int = 25) -> str:
    return "\n".join(traceback.format_exc().strip().splitlines()[-lines:])


def raise_for(task: ChunkTask, result: dict[str, object], where: str) -> None:
    """Raise what a failed outcome of :meth:`ChunkHost.run` stands for (nothing if it
    succeeded); ``where`` names the host in the messages."""
    kind = result.get("kind")
    if result.get("ok"):
        return
    if kind == "encode":
        raise EncodeError(
            str(result["stage"]),
            result["commands"],  # type: ignore[arg-type]
            result["codes"],  # type: ignore[arg-type]
            result["tails"],  # type: ignore[arg-type]
            hint=f"on {where}: {result.get('hint') or 'see the stderr tails'}",
        )
    if kind == "cancelled":
        raise Cancelled(f"chunk {task.index} was cancelled on {where}.")
    if kind == "path":
        raise HostError(str(result["message"]))
    raise HostError(f"chunk {task.index} failed on {where}: {result.get('message')}")


# -- this machine's warm hosts: one process per device slot ----------------------------------------


def serve(threads: int, preload: Sequence[str] = ()) -> None:
    """A host process (``python -m daemon.engine.host THREADS [MODULE...]``): one request per
    line on stdin (``{"task": TASK_JSON}``), answered on stdout by ``{"progress": [frame,
    fps]}`` lines every half second while the chunk runs, then ``{"result": OUTCOME}``. Nothing
    else may reach that stdout: file descriptor 1 is pointed at stderr for the scripts and
    filters. The filters and the ``preload`` modules (torch: 1.5-3 s) are imported before the
    first request, while the parent is still assessing and checking the clip."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for module in ("vs_scripts.runtime.filters", *preload):
        with contextlib.suppress(ImportError):  # a missing one fails in the script, clearly
            importlib.import_module(module)
    host = ChunkHost(threads)
    lock = threading.Lock()

    def send(message: dict[str, object]) -> None:
        with lock:
            channel.write(json.dumps(message) + "\n")

    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if "info" in request:
            send({"result": host.info(request["info"])})
        else:
            send({"result": _run_reporting(host, request["task"], send)})


def _run_reporting(
    host: ChunkHost, task_json: str, send: Callable[[dict[str, object]], None]
) -> dict[str, object]:
    """Run a chunk, sending its progress every half second while it runs."""
    done = threading.Event()

    def report() -> None:
        # a wait, not a sleep: the result goes out the moment the chunk ends (a sleeping
        # reporter held every chunk's result back by up to half a second)
        while not done.wait(0.5):
            send({"progress": list(host.progress())})

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        return host.run(task_json, "")
    finally:
        done.set()
        reporter.join()


def use_hosts() -> bool:
    """Warm hosts, unless ``FINISHLINE_HOSTS=0`` asks for a vspipe per encode."""
    return os.environ.get("FINISHLINE_HOSTS", "1") != "0"


class _Spawner:
    """Starts processes from one thread that lives as long as this process: the parent-death
    signal a host gets (setpriv) fires when the *thread* that started it ends, and the chunk
    threads that need a host end with their job."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Callable[[], object], list[object], threading.Event]]
        self._requests = queue.Queue()
        threading.Thread(target=self._serve, name="host-spawner", daemon=True).start()

    def _serve(self) -> None:
        while True:
            make, box, done = self._requests.get()
            try:
                box.append(make())
            except BaseException as exc:  # handed to the caller
                box.append(exc)
            done.set()

    def call(self, make: Callable[[], T]) -> T:
        box: list[object] = []
        done = threading.Event()
        self._requests.put((make, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]  # type: ignore[return-value]


class WarmHost:
    """This machine's host process for one device slot (its environment: the slot's GPU and
    thread budget), started by :meth:`start` or on first use, and again after it died or was
    stopped."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        threads: int,
        spawner: _Spawner | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        self.name = name
        self._env = env
        self._argv = [sys.executable, "-m", "daemon.engine.host", str(threads), *preload]
        self._spawner = spawner or _Spawner()
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        """The running host process, started now if there is none (it loads while the caller
        goes on: the first request waits for it on the pipe)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            proc = self._proc = self._spawner.call(
                lambda: subprocess.Popen(
                    with_parent(self._argv),
                    env=self._env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    bufsize=1,
                )
            )
        return proc

    def run(self, task: ChunkTask, on_progress: Callable[[int, float], None]) -> None:
        """Run ``task`` in the host; raises as a failed chunk does. When ``on_progress``
        raises (a cancel), the host is stopped and the error goes on."""
        commands = [task.vspipe, task.encoder]
        result = self._ask(
            {"task": task.to_json()}, on_progress, commands, "chunk", "; the chunk is retried"
        )
        raise_for(task, result, self._where())

    def info(self, vspipe: Sequence[str]) -> int:
        """The frame count of the script ``vspipe --info`` (that command) would give, from the
        host, which keeps the script loaded for the job's chunks; raises as the check would."""
        result = self._ask({"info": list(vspipe)}, lambda *_: None, [list(vspipe)], "script check")
        if not result.get("ok"):
            raise EncodeError(
                "script check",
                [list(vspipe)],
                [1],
                [str(result.get("message", ""))],
                hint=f"on {self._where()}: the script failed to load; its error is above",
            )
        return int(result["frames"])  # type: ignore[call-overload]

    def _where(self) -> str:
        return f"{self.name} (pid {self._proc.pid if self._proc else '-'})"

    def _ask(
        self,
        request: dict[str, object],
        on_progress: Callable[[int, float], None],
        commands: list[list[str]],
        stage: str,
        after: str = "",
    ) -> dict[str, object]:
        """Send one request and wait for its result (progress lines go to ``on_progress``);
        raises as ``stage`` failing when the host dies first."""
        proc = self.start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            for line in proc.stdout:
                message = json.loads(line)
                if "result" in message:
                    return message["result"]  # type: ignore[no-any-return]
                on_progress(*message["progress"])
        except BrokenPipeError:
            pass  # the host died before reading: told below
        except BaseException:  # a cancel from on_progress: the chunk stops with its host
            self.stop()
            raise
        code = proc.wait()
        self._proc = None
        raise EncodeError(
            stage,
            commands,
            [code] + [None] * (len(commands) - 1),
            [""] * len(commands),
            hint=f"the host process of {self.name} died (exit {code}){after}",
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


class HostPool:
    """One :class:`WarmHost` per device slot of this machine, shared by the jobs of one
    process: an engine's ``Chunking.place`` (as a cluster's is), waiting for a free slot."""

    def __init__(self, slots: Sequence[Slot], preload: Sequence[str] = ()) -> None:
        self.slots = SlotPool(slots)
        spawner = _Spawner()
        self._hosts = {
            s.name: WarmHost(s.name, s.env(), s.threads, spawner, preload) for s in slots
        }

    def start(self) -> None:
        """Start every slot's host now, so they load while this process assesses the clips."""
        for host in self._hosts.values():
            host.start()

    def placer(self) -> Placer:
        @contextlib.contextmanager
        def place(should_stop: Callable[[], bool]) -> Iterator[ChunkSlot]:
            with self.slots.take(should_stop) as slot:
                yield ChunkSlot(f"{slot.name}@host", self._hosts[slot.name].run)

        return place

    def check(self, vspipe: Sequence[str], should_stop: Callable[[], bool]) -> int:
        """A script check (``Chunking.check``) in a free slot's host."""
        with self.slots.take(should_stop) as slot:
            return self._hosts[slot.name].info(vspipe)

    def close(self) -> None:
        for host in self._hosts.values():
            host.stop()


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 1, sys.argv[2:])
