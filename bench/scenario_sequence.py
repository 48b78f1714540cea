"""Scenario ``sequence``: whole-sequence inference (``T`` frames in, ``T`` poses out).

Every case lifts ``batch`` random-walk keypoint sequences of ``frames`` frames with the
reference's edge padding (:func:`fastlift.reference.lift_sequence` semantics) and measures:

* ``reference-fp32`` — the reference ``TemporalModel`` in eval mode, eager, strict fp32 (TF32
  off); this is also the output every other variant is checked against;
* ``reference-tf32`` (CUDA) — the same with TF32 convolutions/matmuls (torch's default for
  cuDNN convolutions);
* ``reference-autocast-bf16`` (CUDA) — the reference under ``torch.autocast(dtype=bfloat16)``;
* ``compile-reference-fp32`` — ``torch.compile(reference)`` (inductor, ``--compile-mode``,
  default mode by default; the first call's time is recorded as ``compile_s``);
* ``fastlift-<precision>`` — :func:`fastlift.fuse` (BN folded) ``.lift``: on CUDA the fused
  Triton kernels in fp32 / tf32 / fp16 / bf16; on CPU ``impl="auto"``, i.e. the folded model in
  pure torch (the Triton CPU interpreter is never benchmarked);
* ``export-aoti-fp32`` / ``export-aoti-bf16`` (``--export``, per precision asked for) — the model
  exported by :func:`fastlift.export.export_package` (the ``fastlift export`` package,
  AOTInductor) and run through AOTInductor's package loader, the C++ runtime ``fastlift_run``
  uses, so deploying without Python is measured against ``fastlift-fp32`` / ``fastlift-bf16`` in
  the same interleaved rounds (``extra.vs_fastlift_fp32`` / ``vs_fastlift_bf16``; export time in
  ``extra.export_s``).

Work per call: ``batch * frames`` output frames, ``batch * frames * flops_per_frame`` model FLOPs
(the paper's amortised count; edge-padding rows are not counted as useful work).
"""
from __future__ import annotations

import warnings

import torch

from fastlift import reference as R
from fastlift.bench.harness import BenchContext, Variant, make_reference, math_mode, measure_case, random_walk

__all__ = ["run", "case_name", "build_variants"]

SCENARIO = "sequence"


def case_name(arc, batch: int, frames: int, channels: int = 1024) -> str:
    rf = 1
    for w in arc:
        rf *= w
    return f"{rf}f{'' if channels == 1024 else f' C={channels}'} B={batch} T={frames}"


def build_variants(ctx: BenchContext, ref: torch.nn.Module, x: torch.Tensor, key) -> list[Variant]:
    import fastlift

    dev = ctx.device
    cuda = ctx.is_cuda
    variants = [Variant("reference-fp32", "reference", "fp32", lambda: (lambda: R.lift_sequence(ref, x)),
                        baseline=True, label="reference eager fp32")]
    if cuda:
        variants.append(Variant("reference-tf32", "reference", "tf32", lambda: (lambda: R.lift_sequence(ref, x)),
                                baseline=True, label="reference eager, TF32 on"))

    def autocast():
        def fn():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                return R.lift_sequence(ref, x)
        return fn

    if cuda or "bf16" in ctx.precisions:
        variants.append(Variant("reference-autocast-bf16", "reference", "bf16", autocast, baseline=True,
                                label="reference eager, autocast bf16"))
    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    for prec in ctx.precisions:
        if not cuda and prec not in ("fp32", "bf16"):
            continue  # reported once by the suite: CPU runs fastlift in fp32 and bf16

        def make(prec=prec):
            impl = "triton" if cuda else "auto"
            with warnings.catch_warnings():  # emulated bf16 is recorded in the report's notes instead
                warnings.simplefilter("ignore", RuntimeWarning)
                fused = fastlift.fuse(ref, dtype=dtypes[prec], impl=impl)
            if not cuda and fused.uses_kernels(x):
                raise RuntimeError("refusing to benchmark the Triton CPU interpreter (TRITON_INTERPRET is set)")
            return lambda: fused.lift(x)

        variants.append(Variant(f"fastlift-{prec}", "fastlift", prec, make,
                                label=f"fastlift fuse({prec}) {'Triton' if cuda else ('oneDNN executor (CPU)' if prec == 'bf16' else 'folded conv1d (CPU)')}"))
    for prec in ("fp32", "bf16") if ctx.export else ():
        if prec in ctx.precisions:
            variants.append(Variant(f"export-aoti-{prec}", "export", prec,
                                    lambda prec=prec: _exported(ctx, ref, key, x, prec),
                                    label=f"fastlift export (AOTInductor package) {prec}"))
    if ctx.compile:  # last: a skipped/slow compilation never costs the other variants
        def compiled():
            cm = ctx.compiled(("sequence",) + key, ref)
            return lambda: R.lift_sequence(cm, x)

        variants.append(Variant("compile-reference-fp32", "compile", "fp32", compiled, baseline=True,
                                label="torch.compile(reference) fp32"))
        if "bf16" in ctx.precisions:
            def compiled_bf16():
                # Its own wrapper: autocast is part of what inductor specialises on.
                cm = ctx.compiled(("sequence-autocast-bf16",) + key, ref)

                def fn():
                    with torch.autocast(dev.type, dtype=torch.bfloat16):
                        return R.lift_sequence(cm, x)
                return fn

            variants.append(Variant("compile-reference-autocast-bf16", "compile", "bf16", compiled_bf16,
                                    baseline=True, label="torch.compile(reference) under autocast bf16"))
    return variants


def _exported(ctx: BenchContext, ref: torch.nn.Module, key, x: torch.Tensor, prec: str = "fp32"):
    """Export ``ref`` in ``prec`` once per model (cached in ``ctx``) and return a call of the loaded package."""
    import tempfile
    import time

    from fastlift import export as E

    key = (*key, prec)
    if key not in ctx.export_cache:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fastlift-bench-export-") as d:  # the loader unpacks it
            path = f"{d}/lifter.pt2"
            E.export_package(ref, path, dtype=E.DTYPES[prec], device=ctx.device, source="bench")
            ctx.export_cache[key] = (E.load_package(path)[0], time.perf_counter() - t0)
    package, seconds = ctx.export_cache[key]
    ctx.log(f"  export-aoti-{prec}: package built in {seconds:.0f} s")
    return lambda: package(x)


def _export_ratio(ctx: BenchContext, recs: list[dict]) -> None:
    """``extra.vs_fastlift_<prec>``: exported package frames/s over ``fuse(..., dtype=prec).lift``
    frames/s (same rounds), for fp32 and bf16."""
    by = {r["variant"]: r for r in recs if r["status"] == "ok"}
    for prec in ("fp32", "bf16"):
        exp, fl = by.get(f"export-aoti-{prec}"), by.get(f"fastlift-{prec}")
        if exp is None or fl is None:
            continue
        exp["extra"][f"vs_fastlift_{prec}"] = exp["frames_per_s"] / fl["frames_per_s"]
        ctx.log(f"  export-aoti-{prec} / fastlift-{prec}: {exp['extra'][f'vs_fastlift_{prec}']:.2f}x")
        if ctx.on_result is not None:  # rewrite the results file with the ratio
            ctx.on_result(exp)


def run(ctx: BenchContext, budget=None, extra_variants=None) -> list[dict]:
    """Measure every sequence case of ``ctx.plan``; ``extra_variants(ref, x) -> [Variant]`` adds
    variants to each case (used by the tests to inject a wrong implementation)."""
    budget = budget or ctx.budget
    out = []
    models = {}
    plan = ctx.plan
    for case in plan.sequence_cases:
        arc, batch, frames = tuple(case["arc"]), int(case["batch"]), int(case["frames"])
        name = case_name(arc, batch, frames, plan.channels)
        arch = R.architecture_summary(17, 2, 17, list(arc), plan.channels)
        params = {"arc": list(arc), "receptive_field": arch["receptive_field"], "batch": batch, "frames": frames,
                  "channels": plan.channels, "flops_per_frame": arch["flops_per_frame"], "mode": "whole sequence"}
        if arc not in models:
            models[arc] = make_reference(arc, plan.channels, seed=ctx.seed, device=ctx.device)
        ref = models[arc]
        x = random_walk(batch, frames, seed=ctx.seed + frames + batch, device=ctx.device)
        expected = None
        if budget.expired():
            ctx.log(f"sequence {name}: skipped (time budget)")
        else:
            ctx.log(f"sequence {name}: reference output ...")
            with math_mode("fp32"):
                expected = R.lift_sequence(ref, x)
        variants = build_variants(ctx, ref, x, (arc,))
        if extra_variants is not None:
            variants += list(extra_variants(ref, x))
        recs = measure_case(ctx, SCENARIO, name, params, variants, expected=expected, frames_per_call=batch * frames,
                            flops_per_call=float(batch) * frames * arch["flops_per_frame"], budget=budget)
        _export_ratio(ctx, recs)
        for r in recs:
            if r["status"] == "ok":
                ctx.log(f"  {r['variant']:<26} {r['frames_per_s']:>12.0f} frames/s  {r['tflops'] * 1e3:9.1f} GFLOP/s"
                        + (f"  compile {r['compile_s']:.1f} s" if r["compile_s"] else ""))
        out += recs
        del x, expected
    return out
