"""The benchmark suite: plans (sizes per device and mode), scenario scheduling, budgets, output.

``run_suite(...)`` measures the requested scenarios on one device, writes
``<out>/<slug>[-quick].json``/``.csv``/``.png`` after every result (so a run that is cut off
still leaves what it measured), and returns the report. ``fastlift bench`` is its CLI.
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from pathlib import Path

import torch

from fastlift.bench import report as rep
from fastlift.bench.harness import BenchContext, Budget, Plan
from fastlift.bench.machine import machine_info, resolve_device

__all__ = ["SCENARIOS", "PRECISIONS", "make_plan", "run_suite", "default_out_dir", "parse_precisions"]

SCENARIOS = ("sequence", "stream", "train-step")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
            "fp32": "fp32", "tf32": "tf32", "fp16": "fp16", "bf16": "bf16"}

_243 = (3, 3, 3, 3, 3)
_81 = (3, 3, 3, 3)
_27 = (3, 3, 3)


def default_out_dir() -> Path:
    """``bench/results`` of the source tree (the package folder in an editable install)."""
    return Path(__file__).resolve().parent / "results"


def parse_precisions(text: str | None, device: torch.device) -> list[str]:
    if not text:
        return ["fp32", "tf32", "fp16", "bf16"] if device.type == "cuda" else ["fp32"]
    out = []
    for tok in str(text).replace(" ", "").split(","):
        if not tok:
            continue
        if tok not in _ALIASES:
            raise ValueError(f"--dtype: unknown precision {tok!r}; expected some of {', '.join(PRECISIONS)}")
        if _ALIASES[tok] not in out:
            out.append(_ALIASES[tok])
    if not out:
        raise ValueError("--dtype: no precision given")
    return out


def make_plan(name: str, device: torch.device) -> Plan:
    """Sizes of a run. ``tiny``: seconds, for tests. ``quick``: CI / a laptop CPU in about a
    minute. ``full``: the real sizes (GPU: the issue's grid; CPU: what fits in ~10-15 minutes)."""
    cuda = device.type == "cuda"
    if name == "tiny":
        return Plan("tiny", rounds=3, min_rounds=3, warmup=1, target_round_s=0.0, channels=32,
                    sequence_cases=[dict(arc=(3, 3), batch=1, frames=50), dict(arc=_27, batch=2, frames=40)],
                    compile_default=False, stream_arc=(3, 3), stream_counts=[1, 4], stream_steps=3, stream_rounds=2,
                    stream_whole_frames=32, stream_window_calls=1, stream_gate_streams=4, train_arc=(3, 3),
                    train_batch=8, slice_sequences=4, slice_frames=60, slice_batches=2, slice_batch=8,
                    sampler_bench=False)
    if name == "quick":
        if cuda:
            return Plan("quick", rounds=5, min_rounds=3, warmup=2, target_round_s=0.05,
                        sequence_cases=[dict(arc=_243, batch=1, frames=10000), dict(arc=_243, batch=16, frames=10000)],
                        compile_default=False, stream_counts=[1, 64, 1024], stream_steps=30, stream_rounds=3,
                        stream_whole_frames=4096, train_batch=1024, slice_sequences=32, slice_frames=2000,
                        slice_batches=5, slice_batch=1024)
        # CPU quick: the 243f model for whole sequences; the 27f model for streaming (its delay is
        # 13 frames instead of 121, so reaching the steady state costs 15 steps, not 123) and a
        # 27f model with 256 channels for training (a 1024-channel training step at a useful batch
        # takes seconds on 2 cores).
        return Plan("quick", rounds=3, min_rounds=3, warmup=1, target_round_s=0.0,
                    sequence_cases=[dict(arc=_243, batch=1, frames=500), dict(arc=_27, batch=2, frames=500)],
                    compile_default=False, stream_arc=_27, stream_counts=[1, 8, 64], stream_steps=8, stream_rounds=3,
                    stream_whole_frames=256, stream_window_calls=1, stream_gate_streams=4, train_arc=_27,
                    train_channels=256, train_batch=64, slice_sequences=4, slice_frames=300, slice_batches=2,
                    slice_batch=64, default_budget_s=80.0)
    if name == "full":
        if cuda:
            return Plan("full", rounds=5, min_rounds=3, warmup=2, target_round_s=0.05, compile_estimate_s=45.0,
                        # most telling cases first: a run cut short by its budget keeps them
                        sequence_cases=[dict(arc=_243, batch=1, frames=10000), dict(arc=_243, batch=16, frames=10000),
                                        dict(arc=_243, batch=1, frames=100000), dict(arc=_243, batch=1, frames=1000),
                                        dict(arc=_243, batch=64, frames=1000), dict(arc=_81, batch=1, frames=10000),
                                        dict(arc=_81, batch=16, frames=10000), dict(arc=_27, batch=1, frames=10000),
                                        dict(arc=_27, batch=16, frames=10000)],
                        compile_default=True, stream_counts=[1, 8, 64, 256, 1024, 4096],
                        stream_steps=30, stream_rounds=3, stream_whole_frames=4096, train_batch=1024,
                        slice_sequences=64,
                        slice_frames=3000, slice_batches=10, slice_batch=1024, sampler_rounds=5, breakdown_steps=20,
                        scenario_weights={"sequence": 1.0, "stream": 1.0, "train-step": 1.2})
        return Plan("full", rounds=5, min_rounds=3, warmup=1, target_round_s=0.0,
                    sequence_cases=[dict(arc=_243, batch=1, frames=1000), dict(arc=_243, batch=1, frames=4000),
                                    dict(arc=_243, batch=4, frames=1000), dict(arc=_81, batch=1, frames=4000),
                                    dict(arc=_27, batch=1, frames=4000)],
                    compile_default=True, stream_counts=[1, 8, 64, 256], stream_steps=20, stream_rounds=3,
                    stream_whole_frames=1024, stream_window_calls=2, stream_gate_streams=8, train_batch=32,
                    slice_sequences=16, slice_frames=1000, slice_batches=2, slice_batch=16, sampler_rounds=5)
    raise ValueError(f"plan: expected tiny, quick or full, got {name!r}")


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run_suite(scenarios=SCENARIOS, plan: str | Plan = "quick", device: str | torch.device | None = None,
              precisions: str | list | None = None, compile: bool | None = None, out_dir=None,
              budget_s: float | None = None, seed: int = 0, merge: bool = True, write_png: bool = True,
              log=None, argv=None, extra_variants: dict | None = None, compile_mode: str = "default",
              compile_dynamic: bool = True, threads: int | str | None = "auto", export: bool = False) -> dict:
    """Run ``scenarios`` and write the report files; returns the report (``report["files"]`` lists
    what was written, ``report["notes"]`` what was skipped and why). The torch thread count is
    restored afterwards."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    plan_obj = plan if isinstance(plan, Plan) else make_plan(plan, dev)
    precs = precisions if isinstance(precisions, list) else parse_precisions(precisions, dev)
    scen = list(dict.fromkeys(scenarios))
    for s in scen:
        if s not in SCENARIOS:
            raise ValueError(f"--scenario: expected one of {', '.join(SCENARIOS)} or all, got {s!r}")
    notes = []
    if compile is None:
        compile = plan_obj.compile_default
        if not compile:
            notes.append(f"torch.compile baselines skipped: plan {plan_obj.name!r} leaves them out by default "
                         f"(inductor compiles take tens of seconds per model on a small CPU); pass --compile to "
                         f"include them (compile time is recorded separately)")
    elif not compile:
        notes.append("torch.compile baselines skipped: --no-compile")
    if dev.type == "cpu":
        dropped = [p for p in precs if p not in ("fp32", "bf16")]
        if dropped:
            notes.append(f"CPU: fastlift precisions {dropped} not measured (TF32/fp16 are GPU paths; the CPU runs "
                         f"fp32 and bf16)")
        precs = [p for p in precs if p in ("fp32", "bf16")] or ["fp32"]
        notes.append("CPU: fastlift = fuse(impl='auto') (BN-folded model: fp32 conv1d, bf16 the oneDNN executor "
                     "fastlift.cpu_infer) for inference, the StreamingLifter torch backend for streaming, impl='auto' (the 1f model as "
                     "channels-last GEMMs, fastlift.cpu_train; bf16 under torch.autocast) for training; the Triton "
                     "interpreter is never benchmarked")
        if "bf16" in precs:
            from fastlift.precision import cpu_native

            native = cpu_native(torch.bfloat16)
            notes.append(f"CPU bf16: {'native (avx512_bf16/amx_bf16)' if native else 'EMULATED (no avx512_bf16/amx_bf16): bf16 rows are slower than fp32 here'}")

    if budget_s is None and plan_obj.default_budget_s is not None:
        budget_s = plan_obj.default_budget_s
        notes.append(f"plan {plan_obj.name!r}: default time budget {budget_s:.0f} s (cases that do not fit are "
                     f"recorded as skipped; --budget-s overrides)")
    threads_before = torch.get_num_threads()
    try:
        return _run(scen, plan_obj, dev, precs, compile, notes, out_dir, budget_s, seed, merge, write_png, log, argv,
                    extra_variants, compile_mode, compile_dynamic, threads, export)
    finally:
        torch.set_num_threads(threads_before)


def _run(scen, plan_obj, dev, precs, compile, notes, out_dir, budget_s, seed, merge, write_png, log, argv,
         extra_variants, compile_mode, compile_dynamic, threads, export=False) -> dict:
    from fastlift.bench import scenario_sequence, scenario_stream, scenario_train

    load = _load()
    if dev.type == "cpu":
        from fastlift.bench.machine import cpu_cores

        cores = cpu_cores()
        busy = load is not None and load >= 0.5 * cores
        if threads == "auto":
            if busy and torch.get_num_threads() > 1:
                torch.set_num_threads(1)
                notes.append(f"--threads auto: the CPU was busy (1-min load {load:.2f} on {cores} cores), so torch "
                             f"runs 1 thread: OpenMP threads on an oversubscribed machine made the same training step "
                             f"6-20x slower in our measurements; pass --threads N to override")
        elif threads is not None:
            torch.set_num_threads(int(threads))
        if busy:
            notes.append(f"the CPU was busy when the run started (1-min load {load:.2f} on {cores} cores): CPU timings "
                         f"are slowed and noisy; ratios within a case are interleaved and stay comparable")
    elif threads not in (None, "auto"):
        torch.set_num_threads(int(threads))
    machine = machine_info(dev)
    slug = machine["slug"]
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir()
    paths = rep.result_paths(out_dir, slug, plan_obj.name != "full")
    if plan_obj.name == "tiny":
        paths = {k: v.with_name(v.name.replace("-quick", "-tiny")) for k, v in paths.items()}
    old = rep.load_report(paths["json"]) if merge else None
    run_id = 1 + max([r.get("run_id", 0) for r in (old or {}).get("runs", [])] or [0])
    run_meta = {"run_id": run_id, "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "finished": None, "argv": list(argv) if argv is not None else None, "plan": plan_obj.name,
                "scenarios": scen, "precisions": precs, "compile": bool(compile), "compile_mode": compile_mode,
                "compile_dynamic": compile_dynamic, "export": bool(export),
                "budget_s": budget_s,
                "seed": seed, "machine": machine, "load_start": _load(), "notes": notes,
                "tf32_defaults": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                  "cudnn": torch.backends.cudnn.allow_tf32}}
    budget = Budget(budget_s)
    ctx = BenchContext(device=dev, plan=plan_obj, precisions=precs, compile=bool(compile), budget=budget,
                       peaks=machine["peaks"] if isinstance(machine["peaks"], dict) else None, run_id=run_id, seed=seed,
                       log=log, compile_mode=compile_mode, compile_dynamic=compile_dynamic,
                       compile_estimate_s=plan_obj.compile_estimate_s, export=bool(export))
    report = rep.new_report(slug, machine)
    report["runs"].append(run_meta)
    files = {}

    def flush(png: bool = False):
        full = rep.merge_results(old, report, scen)
        files["json"] = str(rep.write_json(full, paths["json"]))
        files["csv"] = str(rep.write_csv(full, paths["csv"]))
        if png and write_png:
            p, why = rep.write_png(full, paths["png"])
            if p is not None:
                files["png"] = str(p)
            elif why and why not in notes:
                notes.append(why)
        return full

    report["results"] = ctx.results
    ctx.on_result = lambda rec: flush()
    log(f"fastlift bench: {', '.join(scen)} on {machine['device_name']} [{slug}], plan {plan_obj.name}, "
        f"precisions {precs}, compile {'on' if compile else 'off'}"
        + (f", budget {budget_s:.0f} s" if budget_s else ""))
    for n in notes:
        log(f"note: {n}")
    runners = {"sequence": scenario_sequence.run, "stream": scenario_stream.run, "train-step": scenario_train.run}
    weights = plan_obj.scenario_weights
    for i, s in enumerate(scen):
        left = scen[i:]
        share = None
        if budget_s is not None:
            w = sum(weights.get(x, 1.0) for x in left)
            share = max(0.0, budget.remaining()) * weights.get(s, 1.0) / w
        sub = budget.child(share)
        t0 = time.perf_counter()
        log(f"--- scenario {s}" + (f" (budget {share:.0f} s)" if share is not None else ""))
        try:
            if s == "sequence" and extra_variants and "sequence" in extra_variants:
                runners[s](ctx, budget=sub, extra_variants=extra_variants["sequence"])
            else:
                runners[s](ctx, budget=sub)
        except Exception as exc:  # keep what the other scenarios measured
            import traceback

            msg = f"scenario {s} aborted: {type(exc).__name__}: {exc}"
            notes.append(msg)
            log(msg + "\n" + traceback.format_exc(limit=8))
        run_meta.setdefault("scenario_seconds", {})[s] = round(time.perf_counter() - t0, 2)
        flush()
    run_meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    run_meta["load_end"] = _load()
    full = flush(png=True)
    rep.validate_report(full)
    full["files"] = dict(files)
    full["notes"] = notes
    full["this_run"] = run_id
    return full
