"""How fast can a lifter run on this CPU? GEMM-only lower bound vs the reference and fastlift.

Every multiply-add of a BN-folded lifter is one GEMM per layer (``[rows x taps*C] . [taps*C x
C_out]``, rows = output frames of that layer). No implementation that does the reference's
multiply-adds can beat the sum of those GEMMs' times at the best GEMM rate this machine offers,
so ``t_reference / sum(t_gemm)`` is the ceiling of any speed-up over the reference at that
precision. This script measures, interleaved in one process (so load affects all alike):

* each layer's GEMM alone at its exact shape through oneDNN (``mkldnn._linear_pointwise``; bf16
  with a prepacked weight), fp32 and bf16, and the same GEMMs through ``F.linear`` (MKL in fp32);
* the reference model (eager fp32 ``conv1d``) and ``fastlift.fuse`` in fp32 and bf16, whole
  sequence, ``B`` x ``T`` input frames;

and prints rates (GFLOP/s), the ceilings and how close fastlift gets to them. The CPU's
family/model are recorded: the fp32 AVX-512 rate differs ~2x between CPU generations that share
a marketing name ("AMD EPYC").

    python -m fastlift.bench.cpu_ceiling --arch 3,3,3,3,3 --frames 500 --rounds 5 --json out.json [--overwrite]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from fastlift import cli_common
from fastlift._files import atomic_write_text
from fastlift.bench.machine import cpu_ids, cpu_model_name

__all__ = ["layer_shapes", "measure", "main"]


def layer_shapes(folded, frames: int, batch: int = 1) -> list[tuple[int, int, int]]:
    """``(rows, K, N)`` of every layer's GEMM for ``batch`` sequences of ``frames`` input frames."""
    shapes, t = [], frames
    for layer in folded.layers:
        t -= layer.span
        if t < 1:
            raise ValueError(f"frames: {frames} is shorter than the receptive field {folded.receptive_field}")
        shapes.append((batch * t, layer.taps * layer.c_in, layer.c_out))
    return shapes


def _time(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def measure(arch=(3, 3, 3, 3, 3), channels: int = 1024, frames: int = 500, batch: int = 1, rounds: int = 5,
            reps: int = 3, seed: int = 0) -> dict:
    from fastlift import fuse
    from fastlift.fold import fold_lifter
    from fastlift.reference import TemporalModel

    torch.manual_seed(seed)
    model = TemporalModel(17, 2, 17, filter_widths=list(arch), channels=channels).eval()
    for m in model.modules():  # non-trivial BN statistics so folding is not the identity
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    folded = fold_lifter(model)
    shapes = layer_shapes(folded, frames, batch)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    x = torch.randn(batch, frames, 17, 2)

    gemm = {}  # name -> list of callables (one per layer)
    for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        onednn, mkl = [], []
        for (m, k, n), layer in zip(shapes, folded.layers):
            a = torch.randn(m, k).to(dtype)
            w = layer.weight.detach().t().contiguous().to(dtype)
            b = torch.randn(n)
            if dtype == torch.bfloat16:
                wp = torch.ops.mkldnn._reorder_linear_weight(w, m)
            else:
                wp = w
            onednn.append(lambda a=a, wp=wp, b=b: torch.ops.mkldnn._linear_pointwise(a, wp, b, "relu", [], ""))
            if dtype == torch.float32:
                mkl.append(lambda a=a, w=w, b=b: torch.nn.functional.linear(a, w, b))
        gemm[f"gemm-onednn-{tag}"] = onednn
        if mkl:
            gemm[f"gemm-F.linear-{tag}"] = mkl

    from fastlift.cpu_infer import CpuExecutor

    fused32 = fuse(model)
    fused16 = fuse(model, dtype=torch.bfloat16)
    # The oneDNN executor in fp32 (fuse() keeps fp32 on folded conv1d; this row shows why).
    executor32 = CpuExecutor(folded, torch.float32)
    x3 = x.reshape(batch, frames, -1)
    whole = {
        "reference-fp32": lambda: model(x),
        "fastlift-fp32": lambda: fused32(x),  # valid convs: the same rows as the reference
        "fastlift-bf16": lambda: fused16(x),
        "executor-fp32": lambda: executor32(x3),
    }
    times: dict[str, list[float]] = {k: [] for k in list(gemm) + list(whole)}
    with torch.no_grad():
        for _ in range(rounds):
            for name, fns in gemm.items():
                times[name].append(sum(_time(f, reps) for f in fns))
            for name, fn in whole.items():
                times[name].append(_time(fn, reps))
    med = {k: statistics.median(v) for k, v in times.items()}
    t_ref = med["reference-fp32"]
    out = {
        "cpu": cpu_model_name(), "cpu_id": cpu_ids(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "arch": list(arch), "channels": channels, "frames": frames, "batch": batch, "rounds": rounds,
        "gflop": flops / 1e9,
        "median_s": med,
        "gflops": {k: flops / v / 1e9 for k, v in med.items()},
        "speedup_vs_reference": {k: t_ref / v for k, v in med.items()},
        "ceiling": {"fp32": t_ref / med["gemm-onednn-fp32"], "bf16": t_ref / med["gemm-onednn-bf16"]},
        "fraction_of_ceiling": {"fp32": med["gemm-onednn-fp32"] / med["fastlift-fp32"],
                                "bf16": med["gemm-onednn-bf16"] / med["fastlift-bf16"]},
    }
    try:
        out["load_average_1m"] = __import__("os").getloadavg()[0]
    except OSError:
        pass
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastlift.bench.cpu_ceiling", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="3,3,3,3,3", help="filter widths (default 3,3,3,3,3 = 243 frames)")
    p.add_argument("--channels", type=int, default=1024)
    p.add_argument("--frames", type=int, default=500, help="input frames per sequence (default 500)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    cli_common.add_overwrite_argument(p)
    args = p.parse_args(argv)
    try:
        arch = tuple(int(v) for v in args.arch.split(","))
    except ValueError:
        p.error(f"--arch: expected comma-separated integers like 3,3,3, got {args.arch!r}")
    if args.json:
        try:
            cli_common.check_output_file(args.json, "--json", overwrite=args.overwrite, suffixes=(".json",))
        except cli_common.CliError as e:
            p.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(arch, args.channels, args.frames, args.batch, args.rounds)
    print(f"CPU {r['cpu']} family {r['cpu_id'].get('family')} model {r['cpu_id'].get('model')}, "
          f"{r['threads']} threads, load {r.get('load_average_1m', float('nan')):.2f}; "
          f"{'x'.join(map(str, arch))} C={args.channels} B={args.batch} T={args.frames}: {r['gflop']:.1f} GFLOP")
    for k in r["median_s"]:
        print(f"  {k:22s} {r['median_s'][k] * 1e3:9.1f} ms  {r['gflops'][k]:6.0f} GFLOP/s  "
              f"{r['speedup_vs_reference'][k]:5.2f}x reference")
    print(f"  ceiling over the reference: fp32 {r['ceiling']['fp32']:.2f}x, bf16 {r['ceiling']['bf16']:.2f}x; "
          f"fastlift reaches {r['fraction_of_ceiling']['fp32']:.0%} (fp32) and {r['fraction_of_ceiling']['bf16']:.0%} (bf16) of it")
    if args.json:
        atomic_write_text(args.json, json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
