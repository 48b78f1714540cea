"""``fastlift kernels check``: compile every Triton specialisation the real code paths launch, for a GPU
target, on any machine (no GPU needed), and report resources and tensor-core use.

The real model code runs on CPU tensors inside a compile-only session
(:func:`fastlift.kernels.launch.compile_only`): every launch the fused training step, the fused
inference lifter and the streaming engine make is compiled for the target by
:class:`fastlift.kernels.aot.Compiler` instead of being run. Workloads are the benchmark and
test shapes of the 243-frame model (1,024 channels):

* training forward + backward: 1f model at batch 1024 (the bench recipe) with dropout 0.25 and
  without dropout, dilated model at batch 64, 1f model in eval mode (frozen BN) at batch 64;
* inference: ``fuse(model).lift`` of a 1,000-frame sequence and ``forward`` of 2 x 1,500 frames;
* streaming: one step of every CUDA-graph bucket N = 1, 2, 4, ... 256;

each in fp32 (TF32 off: IEEE), TF32 (torch's default for convolutions), bf16 and fp16.
``--quick`` compiles one representative per kernel x precision: the most demanding
specialisation (largest tiles x stages, most prologue/epilogue features) of a smaller workload
set. Exit status 1 when a specialisation fails to compile or needs more shared memory than the
target has; 0 (after one line) when this Triton has no NVIDIA back end.

``fastlift kernels tune`` (CUDA only) times the tile spaces of :mod:`fastlift.kernels.tuning` for the
243-frame model and saves the winners (``$FASTLIFT_TILE_CACHE`` loads them).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time

WIDTHS = [3, 3, 3, 3, 3]  # the 243-frame model
CHANNELS = 1024
JOINTS = 17
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
KERNELS = ("tconv_fwd", "tconv_dgrad", "tconv_wgrad", "bn_act", "bn_finalize", "bn_grad_coef", "stream_layer")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="kernels_command", metavar="{check,warmup,tune}")
    c = sub.add_parser("check", help="compile every Triton specialisation for a GPU target (no GPU needed)",
                       description=__doc__.split("\n\n")[0])
    c.add_argument("--arch", type=int, action="append", metavar="CC",
                   help="target compute capability, repeatable (80, 86, 89, 90; default 90)")
    c.add_argument("--quick", action="store_true", help="one representative specialisation per kernel x precision")
    c.add_argument("--precision", action="append", choices=PRECISIONS,
                   help="precisions to check, repeatable (default: all of fp32, tf32, bf16, fp16)")
    c.add_argument("--json", "-o", "--out", dest="json", metavar="PATH", help="write the results as JSON to PATH")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    c.add_argument("--override", action="append", default=[], metavar="KERNEL:KEY=VALUE[,KEY=VALUE]",
                   help="force launch keywords of one kernel (e.g. tconv_fwd:BLOCK_M=256,num_stages=5), to try "
                        "a tile configuration")
    c.add_argument("--kernel", action="append", choices=KERNELS, metavar="NAME",
                   help=f"only these kernels, repeatable (default all: {', '.join(KERNELS)})")
    c.add_argument("--jobs", "-j", type=int, default=0, metavar="N",
                   help="worker processes, each compiling some precisions (default: CPU count, at most 4)")
    c.add_argument("--verbose", "-v", action="store_true", help="print one line per compiled specialisation")
    _add_warmup_arguments(sub)

    from fastlift import cli_common

    t = sub.add_parser("tune", help="time the tile configurations of the GEMM kernels on this GPU and save the "
                                    "winners (load them with $FASTLIFT_TILE_CACHE)",
                       description=_TUNE_DOC)
    cli_common.add_out_argument(t, help_text="JSON file of tuned tile configurations", required=True)
    cli_common.add_overwrite_argument(t)
    cli_common.add_precision_argument(t, TUNE_PRECISIONS, "bf16", help_text="compute precision of the warm-up")
    cli_common.add_device_argument(t, default="cuda")
    t.add_argument("--mode", choices=("train", "infer", "both"), default="both",
                   help="warm-up workload: a training step, whole-sequence inference, or both (default both)")
    t.add_argument("--batch", type=int, default=64, metavar="B", help="training batch (default 64)")
    t.add_argument("--frames", type=int, default=1000, metavar="T", help="inference sequence length (default 1000)")
    t.add_argument("--channels", type=int, default=CHANNELS, metavar="C", help=f"model width (default {CHANNELS})")


def _parse_overrides(items) -> dict:
    out: dict = {}
    for item in items:
        kernel, sep, kvs = item.partition(":")
        if not sep or not kernel or not kvs:
            raise ValueError(f"--override: expected KERNEL:KEY=VALUE[,KEY=VALUE], got {item!r}")
        for kv in kvs.split(","):
            k, sep, v = kv.partition("=")
            if not sep or not k:
                raise ValueError(f"--override: expected KEY=VALUE in {item!r}, got {kv!r}")
            try:
                val = int(v)
            except ValueError:
                val = {"True": True, "False": False}.get(v, v)
            out.setdefault(kernel, {})[k] = val
    return out


# ------------------------------------------------------------------------------------ workloads
class _Workloads:
    """The real code paths, driven on CPU tensors (their launches only compile)."""

    def __init__(self):
        self._models: dict = {}

    def _model(self, one_f: bool, dropout: float):
        import torch

        import fastlift

        key = (one_f, dropout)
        if key not in self._models:
            torch.manual_seed(0)
            cls = fastlift.TemporalModelOptimized1f if one_f else fastlift.TemporalModel
            self._models[key] = cls(JOINTS, 2, JOINTS, WIDTHS, channels=CHANNELS, dropout=dropout, impl="triton")
        return self._models[key]

    def _reference(self):
        from fastlift import reference

        if "ref" not in self._models:
            import torch

            torch.manual_seed(0)
            self._models["ref"] = reference.TemporalModel(JOINTS, 2, JOINTS, WIDTHS, channels=CHANNELS,
                                                          dropout=0.0).eval()
        return self._models["ref"]

    def train(self, dtype, one_f: bool, batch: int, frames: int, dropout: float, eval_mode: bool = False):
        import torch

        m = self._model(one_f, dropout)
        m.train(not eval_mode)
        x = torch.randn(batch, frames, JOINTS, 2, requires_grad=True)
        half = dtype in (torch.bfloat16, torch.float16)
        with torch.autocast("cpu", dtype=dtype) if half else contextlib.nullcontext():
            y = m(x)
        y.float().sum().backward()
        m.zero_grad(set_to_none=True)

    def infer(self, dtype, batch: int, frames: int, lift: bool):
        import torch

        import fastlift

        f = fastlift.fuse(self._reference(), dtype=dtype, impl="triton")
        x = torch.randn(batch, frames, JOINTS, 2)
        with torch.no_grad():
            f.lift(x) if lift else f(x)

    def stream(self, dtype, max_streams: int, counts):
        import torch

        from fastlift.streaming import StreamingLifter

        eng = StreamingLifter(self._reference(), max_streams=max_streams, dtype=dtype, device="cpu",
                              backend="triton", check_finite=False)
        for n in counts:
            slots = [eng.open() for _ in range(n)]
            eng.push(slots, torch.randn(n, JOINTS, 2))
            eng.reset()


def _scenarios(quick: bool, precisions) -> list:
    """``(name, precision, callable(workloads, dtype))`` in run order."""
    buckets = [1 << i for i in range(9)]  # every CUDA-graph bucket of a 256-stream engine
    full = [
        ("train1f-b1024-drop", lambda w, dt: w.train(dt, True, 1024, 243, 0.25), True),
        ("train1f-b64-nodrop", lambda w, dt: w.train(dt, True, 64, 243, 0.0), False),
        ("train-dilated-b64-drop", lambda w, dt: w.train(dt, False, 64, 273, 0.25), False),
        ("train1f-eval-b64", lambda w, dt: w.train(dt, True, 64, 243, 0.25, eval_mode=True), False),
        ("infer-lift-T1000", lambda w, dt: w.infer(dt, 1, 1000, lift=True), True),
        ("infer-forward-B2-T1500", lambda w, dt: w.infer(dt, 2, 1500, lift=False), False),
        ("stream-N1..256", lambda w, dt: w.stream(dt, 256, buckets), False),
        ("stream-N1,256", lambda w, dt: w.stream(dt, 256, [1, 256]), None),  # quick only
    ]
    out = []
    for prec in precisions:
        for name, fn, in_quick in full:
            if (quick and in_quick is not False) or (not quick and in_quick is not None):
                out.append((f"{name}-{prec}", prec, fn))
    return out


@contextlib.contextmanager
def _precision(prec: str):
    """Torch settings of one precision label: fp32 = TF32 off (IEEE), tf32 = TF32 on (torch's
    default for convolutions); bf16/fp16 are the compute dtypes."""
    import torch

    from fastlift.kernels import _common

    fp32_mode = {"fp32": "ieee", "tf32": "tf32"}.get(prec, "tf32")
    with _common.fp32_precision(fp32_mode):
        yield {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]


def merge_reports(parts: list[dict]) -> dict:
    """One report from several (e.g. one per precision or per worker): specialisations concatenated
    in (arch, precision, kernel) order, counts recomputed; complete only if every part is."""
    report = dict(parts[0])
    report["specializations"] = [r for part in parts for r in part["specializations"]]
    report["scenario_s"] = {k: v for part in parts for k, v in part["scenario_s"].items()}
    report["archs"] = sorted({a for part in parts for a in part["archs"]})
    report["targets"] = {k: v for part in parts for k, v in part["targets"].items()}
    precs = [p for part in parts for p in part["precisions"]]
    report["precisions"] = [p for p in PRECISIONS if p in precs] + [p for p in dict.fromkeys(precs) if p not in PRECISIONS]
    order = {p: i for i, p in enumerate(report["precisions"])}
    report["specializations"].sort(key=lambda r: (r["arch"], order.get(r["precision"], 9), r["kernel"]))
    report["complete"] = all(part.get("complete", True) for part in parts)
    _count(report)
    return report


def _count(report: dict) -> None:
    recs = report["specializations"]
    report["num_specializations"] = len(recs)
    report["num_failed"] = sum(1 for r in recs if not r["ok"])
    report["num_over_shared"] = sum(1 for r in recs if r["ok"] and r["over_shared"])


def _worker(archs, quick, precisions, overrides, verbose, kernels):
    log = (lambda s: print(s, flush=True)) if verbose else None
    return check(archs, quick, precisions, overrides, log=log, jobs=1, kernels=kernels)


def check(archs, quick: bool, precisions=PRECISIONS, overrides=None, log=None, jobs: int = 1, kernels=None,
          progress=None) -> dict:
    """Run the check; returns the report (``specializations`` list + summary). See the module docstring.

    ``jobs > 1`` splits the precisions over that many worker processes (compilation is CPU-bound
    and single-threaded per specialisation). ``progress(report)`` (single process only) receives the
    partial report (``complete`` False) after every scenario, so a long run that is stopped still
    leaves its results.
    """
    if jobs > 1 and len(precisions) > 1:
        import concurrent.futures
        import multiprocessing

        t_start = time.time()
        groups = [list(precisions[i::jobs]) for i in range(min(jobs, len(precisions)))]
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(len(groups), mp_context=ctx) as pool:
            calls = [(archs, quick, g, overrides, log is not None, kernels) for g in groups]
            parts = list(pool.map(_worker, *zip(*calls)))
        report = merge_reports(parts)
        report["jobs"] = len(groups)
        report["elapsed_s"] = round(time.time() - t_start, 1)
        return report

    from fastlift.kernels.aot import Compiler
    from fastlift.kernels.launch import compile_only
    from fastlift.kernels.target import cuda_target

    overrides = overrides or {}
    t_start = time.time()
    work = _Workloads()
    records: list = []
    scenario_s: dict = {}
    for arch in archs:
        target = cuda_target(arch)
        scenarios = _scenarios(quick, precisions)
        select = None
        if quick:
            # Pass 1 records every specialisation without compiling; pass 2 compiles the most
            # demanding one of each kernel x precision.
            with Compiler(target, overrides, select=set(), kernels=kernels) as probe, compile_only(target, probe):
                for name, prec, fn in scenarios:
                    probe.scenario, probe.precision = name, prec
                    with _precision(prec) as dt:
                        probe.dtype = str(dt).replace("torch.", "")
                        fn(work, dt)
            best: dict = {}
            for key, rec in probe.records.items():
                group = (rec["precision"], rec["kernel"])
                if group not in best or rec["score"] > probe.records[best[group]]["score"]:
                    best[group] = key
            select = set(best.values())
        with Compiler(target, overrides, select=select, log=log, kernels=kernels) as comp, compile_only(target, comp):
            for name, prec, fn in scenarios:
                comp.scenario, comp.precision = name, prec
                t0 = time.time()
                with _precision(prec) as dt:
                    comp.dtype = str(dt).replace("torch.", "")
                    fn(work, dt)
                scenario_s[f"sm_{arch}/{name}"] = round(time.time() - t0, 1)
                if progress is not None:
                    done = [{k: v for k, v in r.items() if k != "score"} for r in comp.records.values()
                            if r["ok"] is not None]
                    progress(_report(archs, quick, precisions, overrides, kernels, records + done, scenario_s,
                                     t_start, False))
        for rec in comp.records.values():
            if rec["ok"] is None:
                continue  # recorded in quick mode but not selected
            rec.pop("score", None)
            records.append(rec)
    return _report(archs, quick, precisions, overrides, kernels, records, scenario_s, t_start, True)


def _report(archs, quick, precisions, overrides, kernels, records, scenario_s, t_start, complete) -> dict:
    import torch
    import triton

    from fastlift.kernels.target import cuda_target

    report = {
        "tool": "fastlift kernels check",
        "quick": quick,
        "archs": list(archs),
        "targets": {str(a): cuda_target(a).__dict__ for a in archs},
        "precisions": list(precisions),
        "overrides": overrides,
        "kernels": sorted(kernels) if kernels else "all",
        "versions": {"triton": triton.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": platform.machine() + " " + (platform.processor() or ""),
        "jobs": 1,
        "elapsed_s": round(time.time() - t_start, 1),
        "scenario_s": scenario_s,
        "complete": complete,
        "specializations": records,
    }
    _count(report)
    return report


def summarize(report: dict) -> list[dict]:
    """One row per (arch, kernel, precision): counts and worst cases."""
    rows: dict = {}
    for r in report["specializations"]:
        key = (r["arch"], r["kernel"], r["precision"])
        row = rows.setdefault(key, dict(arch=r["arch"], kernel=r["kernel"], precision=r["precision"], specs=0, ok=0,
                                        max_shared=0, max_registers=0, max_spill=0, spilling=0, lowering=set(),
                                        max_programs=0, min_programs=None, over_shared=0))
        row["specs"] += 1
        programs = 1
        for g in r["grid"]:
            programs *= int(g)
        row["max_programs"] = max(row["max_programs"], programs)
        row["min_programs"] = programs if row["min_programs"] is None else min(row["min_programs"], programs)
        if not r["ok"]:
            continue
        row["ok"] += 1
        row["max_shared"] = max(row["max_shared"], r["shared_bytes"])
        row["max_registers"] = max(row["max_registers"], r["registers"])
        row["max_spill"] = max(row["max_spill"], r["spill_bytes"])
        row["spilling"] += r["spill_bytes"] > 0
        row["over_shared"] += r["over_shared"]
        row["lowering"].add(r["dot_lowering"])
    out = []
    for row in rows.values():
        row["lowering"] = "/".join(sorted(row["lowering"])) or "-"
        out.append(row)
    return sorted(out, key=lambda r: (r["arch"], r["kernel"], PRECISIONS.index(r["precision"])
                                      if r["precision"] in PRECISIONS else 9))


def format_table(report: dict) -> str:
    head = (f"{'arch':6s} {'kernel':12s} {'prec':5s} {'specs':>5s} {'ok':>4s} {'smem KB':>8s} {'regs':>5s} "
            f"{'spill B':>8s} {'#spill':>6s} {'dot':>11s} {'programs':>12s}")
    lines = [head, "-" * len(head)]
    for r in summarize(report):
        lines.append(f"sm_{r['arch']:<3d} {r['kernel']:12s} {r['precision']:5s} {r['specs']:5d} {r['ok']:4d} "
                     f"{r['max_shared'] / 1024:8.1f} {r['max_registers']:5d} {r['max_spill']:8d} {r['spilling']:6d} "
                     f"{r['lowering']:>11s} {str(r['min_programs']) + '-' + str(r['max_programs']):>12s}")
    bad = [r for r in report["specializations"] if not r["ok"] or r["over_shared"]]
    for r in bad:
        why = r["error"] if not r["ok"] else f"shared memory {r['shared_bytes']} B > {r['shared_limit']} B"
        lines.append(f"FAILED sm_{r['arch']} {r['kernel']} {r['precision']} {r['constexprs']} {r['options']}: {why}")
    lines.append(f"{report['num_specializations']} specialisations, {report['num_failed']} failed to compile, "
                 f"{report['num_over_shared']} over the shared-memory limit ({report['elapsed_s']} s)")
    return "\n".join(lines)


def markdown_summary(reports) -> str:
    """README table of one or more full reports: per kernel and precision, for each target, the
    number of specialisations, the largest shared memory, the spills and the dot lowering."""
    rows: dict = {}
    for report in reports:
        for r in summarize(report):
            rows.setdefault((r["kernel"], r["precision"]), {})[r["arch"]] = r
    archs = sorted({a for per in rows.values() for a in per})
    cols = [f"sm_{a}: specs / max smem / spilling (max B) / dot" for a in archs]
    head = "| kernel | precision | " + " | ".join(cols) + " |"
    lines = [head, "|---|---|" + "---|" * len(archs)]
    order = {k: i for i, k in enumerate(KERNELS)}
    for (kernel, prec), per in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 9),
                                                                    PRECISIONS.index(kv[0][1]))):
        cells = []
        for a in archs:
            r = per.get(a)
            cells.append("–" if r is None else f"{r['specs']} / {r['max_shared'] / 1024:.0f} KB / "
                                               f"{r['spilling']} ({r['max_spill']}) / {r['lowering']}")
        lines.append(f"| {kernel} | {prec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TUNE_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_TUNE_DOC = ("Warm up the 243-frame model (training step and/or whole-sequence inference) on a CUDA GPU, time the "
             "pruned tile space of every launch site of the forward, dgrad and wgrad kernels "
             "(fastlift.kernels.tuning) and write the winners to a JSON file. Point $FASTLIFT_TILE_CACHE at it to "
             "use them; without it every launch uses the deterministic heuristic.")


def tune_cmd(args) -> int:
    import torch

    import fastlift
    from fastlift import cli_common
    from fastlift.kernels import _common, tuning

    prec = cli_common.check_precision(args.precision, TUNE_PRECISIONS)
    for flag, v in (("--batch", args.batch), ("--frames", args.frames), ("--channels", args.channels)):
        if v < 1:
            raise ValueError(f"{flag}: expected a positive integer, got {v}")
    out = cli_common.check_output_file(args.out, "--out", overwrite=args.overwrite)
    dev = cli_common.check_device(args.device)
    if dev.type != "cuda":
        raise ValueError(f"--device: tiles are tuned by timing kernels on a CUDA GPU, got {dev}; elsewhere every "
                         "launch uses the deterministic heuristic (nothing to tune)")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec, torch.float32)
    t0 = time.time()
    sites = []
    with _common.fp32_precision({"fp32": "ieee", "tf32": "tf32"}.get(prec, "auto")):
        if args.mode in ("train", "both"):
            torch.manual_seed(0)
            m = fastlift.TemporalModelOptimized1f(JOINTS, 2, JOINTS, WIDTHS, channels=args.channels, dropout=0.25,
                                                  impl="triton").to(dev).train()
            x = torch.randn(args.batch, m.receptive_field(), JOINTS, 2, device=dev)
            with torch.autocast("cuda", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext():
                sites += tuning.tune_model(m, x)
        if args.mode in ("infer", "both"):
            from fastlift import reference

            torch.manual_seed(0)
            ref = reference.TemporalModel(JOINTS, 2, JOINTS, WIDTHS, channels=args.channels, dropout=0.0).eval()
            f = fastlift.fuse(ref, dtype=dtype, device=dev, impl="triton")
            xi = torch.randn(1, args.frames, JOINTS, 2, device=dev)

            def lift():
                with torch.no_grad():
                    f.lift(xi)

            sites += tuning.tune(lift)
    tuning.save(str(out))
    for s in sites:
        ok = [(c, sec) for c, st, sec, _ in s.results if st == "ok"]
        pruned = sum(1 for _, st, _, _ in s.results if st.startswith("pruned"))
        if not ok:
            continue
        best = min(ok, key=lambda cs: cs[1])
        base = next((sec for c, sec in ok if c == s.space[0]), None)
        gain = f"{base / best[1]:.2f}x vs heuristic" if base and best[1] > 0 else "heuristic pruned?"
        print(f"{s.kernel:12s} {dict(s.key[1])} {s.key[2]}: {best[0]} ({gain}; {len(ok)} timed, {pruned} pruned)")
    print(f"{len(tuning.cached())} tuned sites on {torch.cuda.get_device_name(dev)} in {time.time() - t0:.0f} s: {out}")
    return 0


def _can_compile(command: str, why: str) -> bool:
    """Whether ``fastlift kernels <command>`` can compile real kernels here: False (after one line
    saying why it is skipped) when Triton lacks its NVIDIA back end; an error when the interpreter
    is switched on (``why`` says what needs real compiles)."""
    from fastlift.kernels import aot

    missing = aot.nvidia_backend_missing()
    if missing:
        print(f"fastlift kernels {command}: skipped: {missing}")
        return False
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise ValueError(f"TRITON_INTERPRET: expected it unset ({why}), got {os.environ['TRITON_INTERPRET']!r}")
    return True


def run(args) -> int:
    if getattr(args, "kernels_command", None) == "tune":
        return tune_cmd(args)
    if getattr(args, "kernels_command", None) == "warmup":
        return run_warmup(args)
    if getattr(args, "kernels_command", None) != "check":
        raise ValueError("kernels: expected a subcommand: check, warmup or tune")
    archs = args.arch or [90]
    from fastlift.kernels.target import KNOWN_CUDA

    for a in archs:
        if a not in KNOWN_CUDA:
            raise ValueError(f"--arch: expected one of {sorted(KNOWN_CUDA)}, got {a}")
    archs = list(dict.fromkeys(archs))
    precisions = list(dict.fromkeys(args.precision or PRECISIONS))
    overrides = _parse_overrides(args.override)
    if args.json and os.path.exists(args.json) and not args.overwrite:
        raise ValueError(f"--json: {args.json} exists; pass --overwrite to replace it")
    for name in overrides:
        if name not in KERNELS:
            raise ValueError(f"--override: expected a kernel in {KERNELS}, got {name!r}")
    if not _can_compile("check", "the check compiles real kernels"):
        return 0
    log = (lambda s: print(s, flush=True)) if args.verbose else None
    if args.jobs < 0:
        raise ValueError(f"--jobs: expected a non-negative integer, got {args.jobs}")
    jobs = args.jobs or min(len(precisions), os.cpu_count() or 1)
    from fastlift._files import atomic_write_text

    def write(report):
        atomic_write_text(args.json, json.dumps(report, indent=1, default=str) + "\n")

    progress = write if args.json and jobs == 1 else None
    report = check(archs, args.quick, precisions, overrides, log=log, jobs=jobs, kernels=args.kernel,
                   progress=progress)
    print(format_table(report))
    if args.json:
        write(report)
        print(f"results: {args.json}")
    return 1 if report["num_failed"] or report["num_over_shared"] else 0


# ------------------------------------------------------------------------------------ warmup (precompile)
WARMUP_DOC = """Precompile, in parallel, every Triton specialisation the check's workloads launch (the benchmark's
and the GPU tier's shapes of the 243f model) into Triton's on-disk cache, so that the first launches
of the GPU tier and the benchmark load kernels instead of compiling them (1-2 s each, hundreds of
them from a cold cache).

The workloads run in compile-only mode as in ``fastlift kernels check``; each distinct
specialisation is compiled with Triton's own ``warmup`` path for the target -- the local CUDA GPU's
own properties when there is one, so tiles, grids and Triton's cache keys are those the real
launches will use. A record-only pass counts the specialisations first (no compile); with ``--plan``
nothing more happens (the plan: counts, estimated time from the per-specialisation compile time of
the committed compile report, whether it fits ``--budget-s``). Workers stop starting compiles when
the budget is spent; what is left compiles on first use as before."""


def _add_warmup_arguments(sub) -> None:
    w = sub.add_parser("warmup", help="precompile every specialisation into Triton's cache, in parallel",
                       description=WARMUP_DOC.split("\n\n")[0])
    w.add_argument("--arch", type=int, metavar="CC",
                   help="compute capability to compile for (default: the local CUDA GPU, else 90)")
    w.add_argument("--quick", action="store_true", help="the quick check's smaller workload set")
    w.add_argument("--precision", action="append", choices=PRECISIONS,
                   help="precisions, repeatable (default: all of fp32, tf32, bf16, fp16)")
    w.add_argument("--kernel", action="append", choices=KERNELS, metavar="NAME", help="only these kernels, repeatable")
    w.add_argument("--jobs", "-j", type=int, default=0, metavar="N", help="worker processes (default: CPU count)")
    w.add_argument("--budget-s", type=float, default=0.0, metavar="S",
                   help="start no compile after S seconds (0: no limit)")
    w.add_argument("--plan", action="store_true", help="count and estimate only; compile nothing")
    w.add_argument("--json", "-o", "--out", dest="json", metavar="PATH", help="write the plan/result as JSON to PATH")
    w.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def plan_warmup(n_specs: int, jobs: int, per_spec_s: float, record_s: float, budget_s: float = 0.0) -> dict:
    """How a warm-up of ``n_specs`` specialisations splits over ``jobs`` workers and how long it takes.

    Every worker re-runs the workloads in record mode (``record_s``, measured by the counting pass)
    and compiles about ``ceil(n_specs / jobs)`` specialisations of ``per_spec_s`` each (workers split
    them by key hash, see :class:`WarmShare`). With a budget
    (> 0), ``fit_specs`` is how many compile before it is spent (the others compile on first use).
    """
    if n_specs < 0 or jobs < 1 or per_spec_s <= 0 or record_s < 0 or budget_s < 0:
        raise ValueError(f"plan_warmup: expected n_specs >= 0, jobs >= 1, per_spec_s > 0, record_s >= 0, "
                         f"budget_s >= 0, got {n_specs}, {jobs}, {per_spec_s}, {record_s}, {budget_s}")
    workers = max(1, min(jobs, n_specs))
    per_worker = -(-n_specs // workers)
    estimated = record_s + per_worker * per_spec_s
    if budget_s and estimated > budget_s:
        fit = min(n_specs, workers * max(0, int((budget_s - record_s) // per_spec_s)))
    else:
        fit = n_specs
    return dict(specs=n_specs, workers=workers, specs_per_worker=per_worker, per_spec_s=round(per_spec_s, 3),
                record_s=round(record_s, 1), estimated_s=round(estimated, 1), budget_s=budget_s,
                fits=not budget_s or estimated <= budget_s, fit_specs=fit)


def per_spec_seconds(arch: int, default: float = 1.5) -> tuple[float, str]:
    """Mean compile time of one specialisation in the committed compile report for ``arch``
    (``bench/results/compile-sm<arch>.json``; it includes the resource analysis, so it is an upper
    bound), else ``default``; returns (seconds, source)."""
    from pathlib import Path

    import fastlift.bench as bench

    path = Path(bench.__file__).resolve().parent / "results" / f"compile-sm{arch}.json"
    try:
        recs = json.loads(path.read_text())["specializations"]
        times = [r["compile_s"] for r in recs if r.get("compile_s")]
        if times:
            return sum(times) / len(times), str(path.name)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return default, "default"


def _warm_target(arch):
    from fastlift.kernels.target import cuda_target, device_target

    if arch is None:
        import torch

        if torch.cuda.is_available() and torch.version.hip is None:
            return device_target(torch.device("cuda"))
        return cuda_target(90)
    return cuda_target(arch)


def _record_pass(target, quick, precisions, kernels) -> list:
    """Record (compile nothing) every specialisation of the workloads: keys in first-launch order."""
    from fastlift.kernels.aot import Compiler
    from fastlift.kernels.launch import compile_only

    work = _Workloads()
    with Compiler(target, select=set(), kernels=kernels) as probe, compile_only(target, probe):
        for name, prec, fn in _scenarios(quick, precisions):
            probe.scenario, probe.precision = name, prec
            with _precision(prec) as dt:
                probe.dtype = str(dt).replace("torch.", "")
                fn(work, dt)
    return list(probe.records)


def _warm_worker(target, quick, precisions, kernels, share, deadline) -> dict:
    """One worker: run the workloads, compiling only the keys in ``share`` (a :class:`WarmShare`)
    with Triton's warmup path (no analysis)."""
    from fastlift.kernels.aot import Compiler
    from fastlift.kernels.launch import compile_only

    class Warm(Compiler):
        def _compile(self, kernel, grid, args, kw, rec):
            if deadline and time.time() > deadline:
                rec["ok"], rec["error"] = None, "budget spent"
                return
            t0 = time.time()
            try:
                kernel.run(*args, grid=grid, warmup=True, **kw)
                rec["ok"] = True
            except Exception as e:  # reported per specialisation
                rec["ok"], rec["error"] = False, f"{type(e).__name__}: {e}"[-500:]
            rec["compile_s"] = round(time.time() - t0, 2)

    work = _Workloads()
    t0 = time.time()
    with Warm(target, select=share, kernels=kernels) as comp, compile_only(target, comp):
        for name, prec, fn in _scenarios(quick, precisions):
            comp.scenario, comp.precision = name, prec
            with _precision(prec) as dt:
                comp.dtype = str(dt).replace("torch.", "")
                fn(work, dt)
    recs = [r for k, r in comp.records.items() if k in share]
    return dict(compiled=sum(1 for r in recs if r["ok"] is True), failed=[f"{r['kernel']} {r['precision']}: "
                                                                         f"{r['error']}" for r in recs if r["ok"] is False],
                skipped=sum(1 for r in recs if r["ok"] is None), compile_s=round(sum(r.get("compile_s", 0) for r in recs), 1),
                seconds=round(time.time() - t0, 1))


class WarmShare:
    """The share of worker ``index`` of ``workers``: the record keys whose CRC-32 falls to it (a
    container for :class:`~fastlift.kernels.aot.Compiler`'s ``select``). Workers partition the
    specialisations without a list of them, so no counting pass has to run first."""

    def __init__(self, index: int, workers: int):
        self.index, self.workers = index, workers

    def __contains__(self, key) -> bool:
        import zlib

        # Without the precision label (key[0]): a specialisation several precisions launch (e.g. the
        # fp32 BN kernels) goes to one worker, whose second compile of it is a cache hit.
        return zlib.crc32(repr(key[1:]).encode()) % self.workers == self.index


def warmup(target, quick: bool, precisions, kernels=None, jobs: int = 1, budget_s: float = 0.0, plan_only=False,
           log=print) -> dict:
    """Count, plan and (unless ``plan_only``) precompile; returns the report (see :data:`WARMUP_DOC`).

    The workers start first and partition the specialisations by key hash (:class:`WarmShare`); the
    counting pass for the plan runs meanwhile in this process, so it costs no wall time on a
    machine with a spare core."""
    t_start = time.time()
    deadline = t_start + budget_s if budget_s else 0.0
    workers = max(1, jobs)
    # Worker i runs the precisions starting from the i-th: when the budget cuts the warm-up short,
    # every precision has had its first workloads compiled (workers compile in workload order).
    orders = [list(precisions[i % len(precisions):]) + list(precisions[:i % len(precisions)]) for i in range(workers)]
    pool = futs = None
    if not plan_only and workers > 1:
        import concurrent.futures
        import multiprocessing

        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        futs = [pool.submit(_warm_worker, target, quick, orders[i], kernels, WarmShare(i, workers), deadline)
                for i in range(workers)]
    try:
        keys = _record_pass(target, quick, precisions, kernels)
        record_s = time.time() - t_start
        per_spec, source = per_spec_seconds(target.arch)
        counts: dict = {}
        for k in keys:
            counts[f"{k[0]}/{k[1]}"] = counts.get(f"{k[0]}/{k[1]}", 0) + 1
        plan = plan_warmup(len(keys), workers, per_spec, record_s, budget_s)
        report = dict(tool="fastlift kernels warmup", target=target.__dict__, quick=quick, precisions=list(precisions),
                      kernels=sorted(kernels) if kernels else "all", per_spec_source=source, counts=counts, plan=plan,
                      plan_only=plan_only)
        log(f"warmup: {len(keys)} specialisations for {target.name or 'sm_%d' % target.arch} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); {workers} workers, "
            f"estimated {plan['estimated_s']} s ({plan['per_spec_s']} s per specialisation from {source}, "
            f"{plan['record_s']} s per workload pass)" + (f", budget {budget_s:g} s: " + (
                "fits" if plan["fits"] else f"about {plan['fit_specs']} fit") if budget_s else ""))
        if plan_only:
            report["elapsed_s"] = round(time.time() - t_start, 1)
            return report
        if futs is None:
            results = [_warm_worker(target, quick, precisions, kernels, WarmShare(0, 1), deadline)]
        else:
            results = [f.result() for f in futs]
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    report["compiled"] = sum(r["compiled"] for r in results)
    report["skipped"] = sum(r["skipped"] for r in results)
    report["failed"] = [f for r in results for f in r["failed"]]
    report["workers"] = results
    report["elapsed_s"] = round(time.time() - t_start, 1)
    log(f"warmup: compiled {report['compiled']}, skipped {report['skipped']} (budget), failed {len(report['failed'])}"
        f" in {report['elapsed_s']} s")
    for f in report["failed"][:20]:
        log(f"FAILED {f}")
    return report


def run_warmup(args) -> int:
    precisions = list(dict.fromkeys(args.precision or PRECISIONS))
    if args.arch is not None:
        from fastlift.kernels.target import KNOWN_CUDA

        if args.arch not in KNOWN_CUDA:
            raise ValueError(f"--arch: expected one of {sorted(KNOWN_CUDA)}, got {args.arch}")
    if args.jobs < 0:
        raise ValueError(f"--jobs: expected a non-negative integer, got {args.jobs}")
    if args.budget_s < 0:
        raise ValueError(f"--budget-s: expected a non-negative number of seconds, got {args.budget_s}")
    if args.json and os.path.exists(args.json) and not args.overwrite:
        raise ValueError(f"--json: {args.json} exists; pass --overwrite to replace it")
    if not _can_compile("warmup", "warmup compiles real kernels"):
        return 0
    jobs = args.jobs or (os.cpu_count() or 1)
    report = warmup(_warm_target(args.arch), args.quick, precisions, args.kernel, jobs, args.budget_s, args.plan,
                    log=lambda s: print(s, flush=True))
    if args.json:
        from fastlift._files import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1, default=str) + "\n")
        print(f"results: {args.json}")
    return 1 if report.get("failed") else 0


if __name__ == "__main__":  # pragma: no cover
    from fastlift.cli import main

    sys.exit(main(["kernels", *sys.argv[1:]]))
