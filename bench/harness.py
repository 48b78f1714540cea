"""Measurement machinery shared by the scenarios: check-then-time, interleaved repeats, budgets.

The rules every scenario follows (see docs/performance.md):

1. **Check before timing.** Each variant's first call produces an output that is compared with
   the reference eager fp32 output on the same inputs (relative max-abs error, per-precision
   tolerance in :data:`TOLERANCES`). A variant that disagrees is recorded with
   ``status="mismatch"`` and *no* time; nothing is computed from it.
2. **Warm-up, then interleaved rounds.** After the check call (which absorbs JIT compilation,
   autotuning, ``torch.compile``) and further warm-up calls, every round times each variant
   once, in turn (the order rotates from round to round), so background load and clock drift
   hit all variants alike. A round times
   ``inner`` back-to-back calls (chosen so that a round lasts about ``target_round_s``).
3. **Synchronised clocks.** CPU: ``time.perf_counter`` around the calls. CUDA: CUDA events
   recorded on the current stream around the calls after a device synchronisation, read after
   synchronising the end event (GPU time, queueing excluded, host launch gaps included).
4. **Median and spread.** Reported per-call time is the median over rounds, with p25/p75 (IQR),
   min and max, and the raw per-round samples.
5. **Budgets.** A :class:`Budget` bounds each scenario; cases that do not fit are recorded as
   ``status="skipped"`` with the reason, never silently dropped.
"""
from __future__ import annotations

import contextlib
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from fastlift._optional import nvtx_range
from fastlift.bench.peaks import peak_tflops

__all__ = [
    "TOLERANCES", "GRAD_TOLERANCES", "DisagreementError", "Budget", "Plan", "BenchContext", "Variant",
    "rel_err", "rel_l2", "math_mode", "phase", "sync", "summarize", "new_result", "measure_case",
    "time_interleaved", "random_walk", "make_reference", "add_speedups", "RESULT_KEYS",
]

#: Max |y - ref| / max |ref| allowed per computing precision (outputs vs reference eager fp32).
#: fp32 differs from the reference only by summation order; TF32 and fp16 keep 10 mantissa bits,
#: bf16 keeps 7, accumulated through up to 10 layers. These are sanity gates that catch a wrong
#: result, not accuracy claims (tests/test_gpu.py holds the tight per-dtype accuracy tests).
TOLERANCES = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 1e-2, "bf16": 5e-2}
#: Relative L2 error of the concatenated parameter gradients of a training step (BatchNorm's
#: backward with batch statistics amplifies rounding: the reference itself under autocast bf16
#: gave 0.104 against its fp32 gradients on the 243f model at batch 16, output error 1.0e-2, on
#: CPU). A wrong implementation is off by O(1).
GRAD_TOLERANCES = {"fp32": 1e-3, "tf32": 5e-2, "fp16": 5e-2, "bf16": 2.5e-1}

RESULT_KEYS = (
    "scenario", "case", "params", "variant", "family", "precision", "baseline", "label", "status", "reason",
    "check_metric", "check_error", "check_tolerance", "check_against", "time_s", "frames_per_call",
    "flops_per_call", "frames_per_s", "us_per_step", "tflops", "peak_tflops", "pct_peak", "latency_us",
    "compile_s", "first_call_s", "speedup_vs", "run_id", "extra",
)
STATUSES = ("ok", "mismatch", "skipped", "error")


class DisagreementError(AssertionError):
    """A variant's output differs from the reference by more than its tolerance."""


# ------------------------------------------------------------------------------------- budget
class Budget:
    """A wall-clock deadline (``seconds=None``: unlimited)."""

    def __init__(self, seconds: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.seconds = seconds
        self.deadline = None if seconds is None else clock() + float(seconds)

    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - self._clock()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def child(self, seconds: float | None) -> "Budget":
        """A budget ending after ``seconds`` or at this budget's deadline, whichever is first."""
        b = Budget(None, self._clock)
        ends = [d for d in (self.deadline, None if seconds is None else self._clock() + seconds) if d is not None]
        b.deadline = min(ends) if ends else None
        b.seconds = None if b.deadline is None else b.deadline - self._clock()
        return b


# ------------------------------------------------------------------------------------- context
@dataclass
class Plan:
    """Sizes of one suite run (``tiny`` for tests, ``quick`` for CI/CPU, ``full``)."""

    name: str
    rounds: int = 5
    min_rounds: int = 3
    warmup: int = 1
    target_round_s: float = 0.0
    sequence_cases: list = field(default_factory=list)   # dicts: arc, batch, frames
    channels: int = 1024
    compile_default: bool = True
    stream_arc: tuple = (3, 3, 3, 3, 3)
    stream_counts: list = field(default_factory=list)
    stream_steps: int = 20
    stream_rounds: int = 3
    stream_whole_frames: int = 1024
    stream_window_calls: Optional[int] = None
    stream_gate_streams: Optional[int] = None            # None: all N streams in the gate
    train_arc: tuple = (3, 3, 3, 3, 3)
    train_batch: int = 1024
    train_channels: Optional[int] = None                 # None: ``channels``
    slice_sequences: int = 32
    slice_frames: int = 2000
    slice_batches: int = 10
    slice_batch: int = 1024
    sampler_bench: bool = True                           # bench_sampler cases (when train/ provides the sampler)
    sampler_batch: int = 1024
    sampler_rounds: int = 3
    breakdown_steps: int = 10
    compile_estimate_s: float = 60.0                     # assumed cost of the first torch.compile (budgeting)
    default_budget_s: Optional[float] = None             # used when --budget-s is not given
    scenario_weights: dict = field(default_factory=lambda: {"sequence": 1.0, "stream": 1.0, "train-step": 1.0})


@dataclass
class BenchContext:
    device: torch.device
    plan: Plan
    precisions: list                      # fastlift precisions to measure
    compile: bool
    budget: Budget
    peaks: Optional[dict] = None
    run_id: int = 0
    seed: int = 0
    log: Callable[[str], None] = lambda line: None
    results: list = field(default_factory=list)
    on_result: Optional[Callable[[dict], None]] = None
    compiled_cache: dict = field(default_factory=dict)
    compile_mode: str = "default"         # torch.compile(mode=...) of the compile baselines
    compile_dynamic: bool = True          # one dynamic-shape compilation per model for all its cases
    compile_estimate_s: float = 60.0      # expected cost of the next compilation (updated as they happen)
    last_compile_fresh: bool = False      # whether the last compiled() call created a new wrapper
    export: bool = False                  # also measure the exported (AOTInductor) whole-sequence package
    export_cache: dict = field(default_factory=dict)  # (arc, precision) -> (loaded package, export seconds)

    def compiled(self, key, model):
        """One ``torch.compile`` wrapper per (scenario, model), reused across that model's cases.

        With ``compile_dynamic`` (default) the wrapper is compiled with ``dynamic=True`` once and
        serves every batch size / length of that model; otherwise each new shape specialises
        (recompiles) — minutes of a 10-minute GPU window for the sequence grid."""
        self.last_compile_fresh = key not in self.compiled_cache
        if key not in self.compiled_cache:
            self.compiled_cache[key] = torch.compile(model, mode=None if self.compile_mode == "default"
                                                     else self.compile_mode,
                                                     dynamic=True if self.compile_dynamic else None)
        return self.compiled_cache[key]

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def add(self, record: dict) -> dict:
        record["run_id"] = self.run_id
        self.results.append(record)
        if self.on_result is not None:
            self.on_result(record)
        return record


@dataclass
class Variant:
    """One implementation measured in a case.

    ``make()`` builds it (models, compilation wrappers) and returns ``fn``; ``fn()`` runs one
    timed call and returns its output. ``check(out)`` returns ``(metric, error, tolerance)``;
    the default compares ``out`` with the case's expected output.
    """

    id: str
    family: str                     # reference | compile | fastlift | export
    precision: str                  # fp32 | tf32 | bf16 | fp16
    make: Callable[[], Callable[[], Any]]
    baseline: bool = False
    label: str = ""
    check: Optional[Callable[[Any], tuple]] = None
    strict_math: bool = True        # run under math_mode(precision) (TF32 only for "tf32")
    info: dict = field(default_factory=dict)  # merged into the record's ``extra`` (filled by make/check)


# ------------------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def phase(name: str, device: torch.device):
    """NVTX range (visible in Nsight Systems) around a benchmark phase; no-op without NVTX."""
    if device.type == "cuda":
        torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            torch.cuda.nvtx.range_pop()
    else:
        with nvtx_range(name):
            yield


@contextlib.contextmanager
def math_mode(precision: str):
    """TF32 matmuls/convolutions on for ``"tf32"``, off otherwise (restored afterwards)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _as_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"expected a tensor output, got {type(out).__name__}")


def rel_err(y, ref) -> float:
    """``max |y - ref| / max |ref|`` in float64 (inf if shapes differ or values are not finite)."""
    y, ref = _as_tensor(y), _as_tensor(ref)
    if tuple(y.shape) != tuple(ref.shape):
        return math.inf
    y64, r64 = y.detach().to(torch.float64), ref.detach().to(device=y.device, dtype=torch.float64)
    if not bool(torch.isfinite(y64).all()):
        return math.inf
    scale = float(r64.abs().max().clamp_min(1e-30))
    return float((y64 - r64).abs().max()) / scale


def rel_l2(y: torch.Tensor, ref: torch.Tensor) -> float:
    """``||y - ref|| / ||ref||`` in float64 (inf for mismatched shapes or non-finite values)."""
    if tuple(y.shape) != tuple(ref.shape):
        return math.inf
    y64, r64 = y.detach().double(), ref.detach().to(device=y.device, dtype=torch.float64)
    if not bool(torch.isfinite(y64).all()):
        return math.inf
    return float((y64 - r64).norm() / r64.norm().clamp_min(1e-30))


def summarize(samples: list[float]) -> dict:
    """Median, quartiles, IQR, min, max of per-call times (seconds)."""
    a = np.asarray(samples, dtype=np.float64)
    p25, med, p75 = (float(v) for v in np.percentile(a, [25, 50, 75]))
    return {"median": med, "p25": p25, "p75": p75, "iqr": p75 - p25, "min": float(a.min()), "max": float(a.max()),
            "rounds": int(a.size), "samples": [float(v) for v in a]}


def new_result(**fields) -> dict:
    """A result record with every schema key present (None where not applicable)."""
    unknown = set(fields) - set(RESULT_KEYS)
    if unknown:
        raise KeyError(f"unknown result fields {sorted(unknown)}")
    rec = {k: None for k in RESULT_KEYS}
    rec.update(speedup_vs={}, extra={}, params={})
    rec.update(fields)
    if rec["status"] not in STATUSES:
        raise ValueError(f"status: expected one of {STATUSES}, got {rec['status']!r}")
    return rec


def random_walk(batch: int, frames: int, joints: int = 17, seed: int = 0, device=None) -> torch.Tensor:
    """``(batch, frames, joints, 2)`` float32 smooth keypoint tracks in roughly [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(batch, frames, joints, 2, generator=g) * 0.01
    x = (torch.rand(batch, 1, joints, 2, generator=g) * 1.6 - 0.8) + steps.cumsum(1)
    return x.to(device) if device is not None else x


def make_reference(arc, channels: int, *, one_f: bool = False, causal: bool = False, dropout: float = 0.25,
                   joints: int = 17, seed: int = 0, device=None, eval_mode: bool = True) -> torch.nn.Module:
    """A reference lifter with random weights and non-trivial BatchNorm statistics/affines (so BN
    folding is exercised as with a trained checkpoint)."""
    from fastlift import reference as R

    torch.manual_seed(seed)
    cls = R.TemporalModelOptimized1f if one_f else R.TemporalModel
    model = cls(joints, 2, joints, list(arc), causal=causal, channels=channels, dropout=dropout)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
    if device is not None:
        model = model.to(device)
    return model.eval() if eval_mode else model.train()


# ------------------------------------------------------------------------------------- timing
def _time_calls(fn: Callable, n: int, device: torch.device) -> float:
    """Seconds per call of ``n`` back-to-back calls (CUDA events on GPU, perf_counter on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def time_interleaved(fns: dict, device: torch.device, rounds: int, inner: dict, phase_prefix: str = "",
                     wrappers: dict | None = None) -> dict:
    """Per-call seconds of each ``fns[name]`` over ``rounds`` interleaved rounds."""
    samples = {name: [] for name in fns}
    wrappers = wrappers or {}
    names = list(fns)
    for r in range(rounds):
        # rotate the order every round so no variant always runs first (cold caches, allocator)
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            fn = fns[name]
            with phase(f"{phase_prefix}{name}/round{r}", device), wrappers.get(name, contextlib.nullcontext)():
                samples[name].append(_time_calls(fn, inner[name], device))
    return samples


def _one_call(fn: Callable, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 400 else text[:400] + " ..."


def add_speedups(records: list[dict]) -> None:
    """``speedup_vs[baseline] = frames/s / baseline frames/s`` for every non-baseline ok record
    against every ok baseline record of the same case."""
    base = [r for r in records if r["baseline"] and r["status"] == "ok" and r["frames_per_s"]]
    for r in records:
        if r["baseline"] or r["status"] != "ok" or not r["frames_per_s"]:
            continue
        r["speedup_vs"] = {b["variant"]: r["frames_per_s"] / b["frames_per_s"] for b in base}


def derived(ctx: BenchContext, precision: str, median_s: float, frames: float, flops: float) -> dict:
    if not flops:  # data-only measurements: no model FLOPs
        return {"frames_per_s": frames / median_s, "us_per_step": median_s * 1e6, "tflops": None,
                "peak_tflops": None, "pct_peak": None}
    tflops = flops / median_s / 1e12
    peak = peak_tflops(ctx.peaks, precision) if ctx.is_cuda else None
    return {"frames_per_s": frames / median_s, "us_per_step": median_s * 1e6, "tflops": tflops,
            "peak_tflops": peak, "pct_peak": (100.0 * tflops / peak) if peak else None}


def measure_case(ctx: BenchContext, scenario: str, case: str, params: dict, variants: list[Variant],
                 expected=None, frames_per_call: float = 1.0, flops_per_call: float = 0.0,
                 budget: Budget | None = None) -> list[dict]:
    """Check every variant against ``expected``, then time the ones that agree (see module doc).

    Returns the case's result records (also added to ``ctx``), speed-ups filled in.
    """
    budget = budget or ctx.budget
    dev = ctx.device
    records: list[dict] = []
    live: list[tuple[Variant, Callable, dict]] = []

    def record(v: Variant, status: str, **kw) -> dict:
        rec = new_result(scenario=scenario, case=case, params=dict(params), variant=v.id, family=v.family,
                         precision=v.precision, baseline=v.baseline, label=v.label or v.id, status=status,
                         frames_per_call=frames_per_call, flops_per_call=flops_per_call, **kw)
        rec["extra"].update(v.info)
        records.append(rec)
        return rec

    def wrapper(v: Variant):
        return (lambda: math_mode(v.precision)) if v.strict_math else contextlib.nullcontext

    # 1. build + check (the first call: includes JIT / torch.compile)
    for v in variants:
        if budget.expired():
            record(v, "skipped", reason="time budget exhausted before this variant")
            continue
        if v.family == "compile" and budget.remaining() < ctx.compile_estimate_s:
            record(v, "skipped", reason=f"time budget: torch.compile is expected to take ~{ctx.compile_estimate_s:.0f} s"
                                        f", {budget.remaining():.0f} s left")
            continue
        try:
            with phase(f"{scenario}/{case}/{v.id}/build+check", dev), wrapper(v)():
                fn = v.make()
                out, first_s = _one_call(fn, dev)
                metric, err, tol = v.check(out) if v.check else ("max_abs_rel", rel_err(out, expected),
                                                                  TOLERANCES[v.precision])
            del out
        except Exception as exc:  # a broken variant must not take the suite down
            ctx.log(f"  {case} {v.id}: error {_short(exc)}")
            record(v, "error", reason=_short(exc), extra={"traceback": traceback.format_exc(limit=6)[-3000:]})
            continue
        common = dict(check_metric=metric, check_error=err, check_tolerance=tol, check_against="reference-fp32",
                      first_call_s=first_s, compile_s=first_s if v.family == "compile" else None)
        if v.family == "compile" and ctx.last_compile_fresh:  # a real compilation: budget the next one by it
            ctx.compile_estimate_s = 1.1 * (first_s + float(v.info.get("check_compile_s", 0.0)))
        if not (err <= tol):  # also catches NaN
            ctx.log(f"  {case} {v.id}: MISMATCH {metric}={err:.3g} > {tol:g}; not timed")
            record(v, "mismatch", reason=f"{metric} {err:.3g} exceeds tolerance {tol:g}: no time reported", **common)
            continue
        live.append((v, fn, common))

    if live:
        # 2. estimate the call time (second call), choose inner repetitions and rounds to fit the budget
        est = {}
        try:
            for v, fn, _ in live:
                with wrapper(v)():
                    _, est[v.id] = _one_call(fn, dev)
        except Exception as exc:
            for v, _, common in live:
                record(v, "error", reason=f"warm-up failed: {_short(exc)}", **common)
            live = []
        plan = ctx.plan
        inner = {v.id: max(1, min(1000, math.ceil(plan.target_round_s / max(est[v.id], 1e-9))))
                 for v, _, _ in live} if live else {}
        per_round = sum(est[v.id] * inner[v.id] for v, _, _ in live)
        rounds = plan.rounds
        remaining = budget.remaining()
        extra_warm = max(0, plan.warmup - 1)
        need = per_round * (rounds + extra_warm)
        if live and need > remaining:
            rounds = max(1, int(remaining / per_round) - extra_warm) if per_round > 0 else rounds
            if per_round * (rounds + extra_warm) > remaining or rounds < 1:
                for v, _, common in live:
                    record(v, "skipped", reason=f"time budget: needs ~{per_round * plan.min_rounds:.1f} s, "
                                                f"{max(0.0, remaining):.1f} s left", **common)
                live = []
        if live:
            fns = {v.id: fn for v, fn, _ in live}
            wrappers = {v.id: wrapper(v) for v, _, _ in live}
            try:
                for _ in range(extra_warm):
                    for v, fn, _ in live:
                        with wrappers[v.id]():
                            fn()
                sync(dev)
                samples = time_interleaved(fns, dev, rounds, inner, f"{scenario}/{case}/", wrappers)
            except Exception as exc:
                for v, _, common in live:
                    record(v, "error", reason=f"timing failed: {_short(exc)}", **common)
                live = []
            for v, _, common in live:
                st = summarize(samples[v.id])
                st["inner"] = inner[v.id]
                rec = record(v, "ok", time_s=st, **common,
                             **derived(ctx, v.precision, st["median"], frames_per_call, flops_per_call))
                if rounds < plan.min_rounds:
                    rec["reason"] = f"only {rounds} round(s) fit the time budget (spread is unreliable)"
    order = {v.id: i for i, v in enumerate(variants)}
    records.sort(key=lambda r: order.get(r["variant"], 0))
    add_speedups(records)
    for r in records:
        ctx.add(r)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return records
