"""Scenario ``stream``: one new frame for each of ``N`` live streams per step.

Per stream count ``N`` (a case):

* ``fastlift-stream-<precision>`` — :class:`fastlift.StreamingLifter` advancing ``N`` streams by
  one frame per ``push`` (steady state, every stream past the model's delay). CPU: the engine's
  torch backend; CUDA: the fused Triton step kernel replayed from the engine's CUDA graphs (the
  production path: graphs captured by ``warmup``, ``check_finite`` on). Latency percentiles are
  host-visible ``push`` latencies (``perf_counter`` around ``push`` + device synchronisation).
* ``reference-window-fp32`` — the sliding-window recompute baseline: the reference strided 1f
  model on ``N`` receptive-field windows per step (what a live system does without state).
* ``reference-whole-fp32`` — the reference over one long offline sequence: the amortised limit
  (same FLOPs per frame as streaming, but offline).
* ``compile-reference-window-fp32`` and, on CUDA, ``reference-window-autocast-bf16`` — the window
  baseline under ``torch.compile`` / autocast bf16, measured by the suite's harness on windows of
  the same shape.

The engine and the first two reference baselines are measured by
:func:`fastlift.bench.bench_stream.run_benchmark` (interleaved rounds, median over rounds); this
module adds a correctness gate before each of its runs: the same engine configuration (``N`` or
``plan.stream_gate_streams`` streams, dtype, backend, CUDA graphs) streams a short sequence per
stream and its poses must match :func:`fastlift.reference.lift_sequence` in fp32 within the
precision's tolerance, else the configuration is recorded as a mismatch and not timed.
"""
from __future__ import annotations

import math

import torch

from fastlift import reference as R
from fastlift.bench.harness import (TOLERANCES, BenchContext, Variant, add_speedups, make_reference, math_mode,
                                    measure_case, new_result, random_walk, rel_err, sync, derived)

__all__ = ["run", "gate_check", "engine_precisions"]

SCENARIO = "stream"
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def engine_precisions(ctx: BenchContext) -> list[str]:
    """Engine dtypes measured: on CPU fp32 and (when requested) bf16; on CUDA the requested
    precisions the engine supports (TF32 is not a separate engine dtype)."""
    if not ctx.is_cuda:
        return ["fp32"] + (["bf16"] if "bf16" in ctx.precisions else [])
    # fp32 first: its run also measures the reference window/whole baselines
    return [p for p in ("fp32", "bf16", "fp16") if p in ctx.precisions] or ["fp32"]


@torch.no_grad()
def gate_check(ctx: BenchContext, model: torch.nn.Module, streams: int, precision: str, extra_frames: int = 8) -> float:
    """Stream ``pad + extra_frames`` frames into ``streams`` concurrent streams (one batched push per
    frame, the configuration that will be timed) and return the worst relative error of the emitted
    poses of three streams (first, middle, last) against whole-sequence reference inference."""
    from fastlift.streaming import StreamingLifter

    dev = ctx.device
    eng = StreamingLifter(model, streams, dtype=_TORCH_DTYPES[precision], device=dev)
    eng.warmup(streams)
    slots = torch.tensor([eng.open() for _ in range(streams)], dtype=torch.int64)
    frames = eng.delay + extra_frames
    seqs = random_walk(streams, frames, seed=ctx.seed + 7 * streams + 1, device=dev)
    watch = sorted({0, streams // 2, streams - 1})
    got = {s: {} for s in watch}
    for t in range(frames):
        out = eng.push(slots, seqs[:, t].contiguous())
        sl = out.slots.tolist()
        fi = out.frame_index.tolist()
        for row, (s, f) in enumerate(zip(sl, fi)):
            if s in got:
                got[s][f] = out.poses[row]
    sync(dev)
    worst = 0.0
    with math_mode("fp32"):
        for s in watch:
            ref = R.lift_sequence(model, seqs[s])
            if not got[s]:
                return math.inf
            idx = sorted(got[s])
            if idx != list(range(len(idx))):
                return math.inf
            y = torch.stack([got[s][f] for f in idx]).float()
            worst = max(worst, rel_err(y, ref[: len(idx)]))
    del eng
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return worst


def _stream_records(ctx, case, params, prec, n, rb, gate_err, arch) -> list[dict]:
    r = rb["results"][0]
    common = dict(scenario=SCENARIO, case=case, params=dict(params), run_id=ctx.run_id)
    fpf = arch["flops_per_frame"]
    step_s = n / r["stream_fps"]
    rounds = rb["config"]["rounds"]
    recs = []
    stream = new_result(**common, variant=f"fastlift-stream-{prec}", family="fastlift", precision=prec, baseline=False,
                        label=f"fastlift StreamingLifter ({r['backend']} backend) {prec}", status="ok",
                        check_metric="max_abs_rel (gate: streams vs lift_sequence fp32)", check_error=gate_err,
                        check_tolerance=TOLERANCES[prec], check_against="reference-fp32",
                        time_s={"median": step_s, "p25": None, "p75": None, "iqr": None, "min": None, "max": None,
                                "rounds": rounds, "inner": rb["config"]["steps"], "samples": [],
                                "source": "bench_stream.run_benchmark: median over rounds of the mean push time"},
                        frames_per_call=n, flops_per_call=float(n) * fpf, latency_us=dict(r["stream_step_us"]),
                        extra={"backend": r["backend"], "cuda_graphs": ctx.is_cuda and r["backend"] == "triton",
                               "bench_stream_max_abs_diff_vs_whole": r["max_abs_diff_stream_vs_whole"],
                               "frames_checked_by_bench_stream": r["frames_checked"],
                               "check_finite": rb["config"]["check_finite"]},
                        **derived(ctx, prec, step_s, n, float(n) * fpf))
    recs.append(stream)
    if prec == "fp32":
        win_s = n / r["window_fps"]
        recs.append(new_result(**common, variant="reference-window-fp32", family="reference", precision="fp32",
                               baseline=True, label="reference 1f window recompute, eager fp32", status="ok",
                               check_metric="max_abs_diff vs whole sequence (bench_stream)",
                               check_error=r["max_abs_diff_window_vs_whole"], check_against="reference-fp32",
                               time_s={"median": win_s, "rounds": rounds, "samples": [],
                                       "source": "bench_stream.run_benchmark"},
                               frames_per_call=n, flops_per_call=float(n) * arch["window_recompute_flops_per_frame"],
                               **derived(ctx, "fp32", win_s, n, float(n) * arch["window_recompute_flops_per_frame"])))
        wf = rb["config"]["whole_frames"]
        whole_s = wf / r["whole_fps"]
        recs.append(new_result(**common, variant="reference-whole-fp32", family="reference", precision="fp32",
                               baseline=True, label=f"reference whole sequence ({wf} frames, offline limit) fp32",
                               status="ok", check_metric="oracle", check_against="reference-fp32",
                               time_s={"median": whole_s, "rounds": rounds, "samples": [],
                                       "source": "bench_stream.run_benchmark"},
                               frames_per_call=wf, flops_per_call=float(wf) * fpf,
                               **derived(ctx, "fp32", whole_s, wf, float(wf) * fpf)))
    for rec in recs:
        for k in ("p25", "p75", "iqr", "min", "max", "inner"):
            rec["time_s"].setdefault(k, None)
    return recs


def _window_variants(ctx: BenchContext, ref1f: torch.nn.Module, windows: torch.Tensor, arc) -> list[Variant]:
    dev = ctx.device
    variants = []
    if ctx.compile:
        def compiled():
            cm = ctx.compiled(("stream-window", tuple(arc)), ref1f)

            def fn():
                with torch.no_grad():
                    return cm(windows)
            return fn

        variants.append(Variant("compile-reference-window-fp32", "compile", "fp32", compiled, baseline=True,
                                label="torch.compile(reference 1f) window recompute fp32"))
    if ctx.is_cuda:
        def autocast():
            def fn():
                with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
                    return ref1f(windows)
            return fn

        variants.append(Variant("reference-window-autocast-bf16", "reference", "bf16", autocast, baseline=True,
                                label="reference 1f window recompute, autocast bf16"))
    return variants


def _engine_records(ctx: BenchContext, model, n: int, prec: str, case: str, params: dict, arch: dict,
                    budget) -> list[dict]:
    """Gate, then ``bench_stream.run_benchmark`` for ``n`` streams in ``prec``: the engine record
    (and, for fp32, the reference window/whole baselines it measures alongside)."""
    from fastlift.bench.bench_stream import run_benchmark

    plan = ctx.plan
    arc = list(plan.stream_arc)
    base = dict(scenario=SCENARIO, case=case, params=dict(params), variant=f"fastlift-stream-{prec}",
                family="fastlift", precision=prec, baseline=False, label=f"fastlift StreamingLifter {prec}",
                frames_per_call=n, flops_per_call=float(n) * arch["flops_per_frame"])
    if budget.expired():
        return [new_result(**base, status="skipped", reason="time budget exhausted")]
    ctx.log(f"stream {case} {prec}: gate check ...")
    gate_n = n if plan.stream_gate_streams is None else min(n, plan.stream_gate_streams)
    try:
        with torch.no_grad():
            err = gate_check(ctx, model, gate_n, prec)
    except Exception as exc:
        return [new_result(**base, status="error", reason=f"gate check failed: {type(exc).__name__}: {str(exc)[:300]}")]
    tol = TOLERANCES[prec]
    if not err <= tol:
        ctx.log(f"  MISMATCH: streaming {prec} differs from the reference by {err:.3g} > {tol:g}; not timed")
        return [new_result(**base, status="mismatch", check_metric="max_abs_rel", check_error=err, check_tolerance=tol,
                           check_against="reference-fp32",
                           reason=f"gate error {err:.3g} exceeds tolerance {tol:g}: no time reported")]
    if budget.expired():
        return [new_result(**base, status="skipped", reason="time budget exhausted after the gate")]
    ctx.log(f"stream {case} {prec}: bench_stream.run_benchmark ...")
    try:
        with math_mode(prec):
            rb = run_benchmark(streams=[n], filter_widths=arc, channels=plan.channels, dtype=_NAMES[prec],
                               device=str(ctx.device), steps=plan.stream_steps, rounds=plan.stream_rounds,
                               whole_frames=plan.stream_whole_frames, window_calls=plan.stream_window_calls,
                               seed=ctx.seed, log=lambda line: ctx.log("  " + line))
    except Exception as exc:
        return [new_result(**base, status="error",
                           reason=f"run_benchmark failed: {type(exc).__name__}: {str(exc)[:300]}")]
    recs = _stream_records(ctx, case, params, prec, n, rb, err, arch)
    diff = recs[0]["extra"]["bench_stream_max_abs_diff_vs_whole"]
    if not math.isfinite(diff):
        recs[0].update(status="mismatch", reason="bench_stream reported a non-finite difference: no time",
                       time_s=None, frames_per_s=None, us_per_step=None, tflops=None, pct_peak=None)
    if prec != "fp32":
        recs = recs[:1]  # its same-dtype reference baselines are not the suite's baselines
        recs[0]["extra"]["bench_stream_same_dtype_reference"] = {
            "window_fps": rb["results"][0]["window_fps"], "whole_fps": rb["results"][0]["whole_fps"]}
    return recs


def run(ctx: BenchContext, budget=None) -> list[dict]:
    """All stream counts for fp32 first (with every baseline), then bf16, then fp16, so a run that
    hits its budget still has complete curves for the precisions measured."""
    budget = budget or ctx.budget
    plan = ctx.plan
    arc = list(plan.stream_arc)
    arch = R.architecture_summary(17, 2, 17, arc, plan.channels)
    rf = arch["receptive_field"]
    model = make_reference(arc, plan.channels, seed=ctx.seed, device=ctx.device)
    ref1f = make_reference(arc, plan.channels, one_f=True, seed=ctx.seed, device=ctx.device)
    ref1f.load_state_dict(model.state_dict())
    cases = {}
    for pi, prec in enumerate(engine_precisions(ctx)):
        for n in (int(v) for v in plan.stream_counts):
            case = f"{rf}f{'' if plan.channels == 1024 else f' C={plan.channels}'} N={n}"
            params = {"arc": arc, "receptive_field": rf, "streams": n, "channels": plan.channels,
                      "flops_per_frame": arch["flops_per_frame"], "mode": "streaming step",
                      "window_flops_per_frame": arch["window_recompute_flops_per_frame"]}
            recs = cases.setdefault(n, [])
            if pi == 0 and _window_variants(ctx, ref1f, None, arc):
                # the window baseline under torch.compile / autocast, on windows of the same shape
                windows = random_walk(n, rf, seed=ctx.seed + 3 * n, device=ctx.device)
                expected = None
                if not budget.expired():
                    with torch.no_grad(), math_mode("fp32"):
                        expected = ref1f(windows)
                recs += measure_case(ctx, SCENARIO, case, params, _window_variants(ctx, ref1f, windows, arc),
                                     expected=expected, frames_per_call=n,
                                     flops_per_call=float(n) * arch["window_recompute_flops_per_frame"], budget=budget)
                del windows, expected
            new = _engine_records(ctx, model, n, prec, case, params, arch, budget)
            recs += new
            add_speedups(recs)
            for rec in new:
                ctx.add(rec)
                if rec["status"] == "ok" and not rec["baseline"]:
                    sp = ", ".join(f"{k} {v:.2f}x" for k, v in rec["speedup_vs"].items())
                    ctx.log(f"  {rec['variant']}: {rec['frames_per_s']:.0f} frames/s, p50 "
                            f"{rec['latency_us']['p50']:.0f} us/step; {sp}")
    out = []
    for recs in cases.values():
        add_speedups(recs)  # records of later passes may add baselines for earlier ones
        out += recs
    return out
