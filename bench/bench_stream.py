"""Streaming benchmark: StreamingLifter vs the reference's whole-sequence and window-recompute paths.

Three ways to produce one new 3D pose per stream per frame, measured in the same run:

* **streaming** — :class:`fastlift.StreamingLifter` with ``N`` concurrent streams, one frame
  each per step (steady state: every stream past the model's delay);
* **whole sequence** — reference ``TemporalModel`` (eval) over one long sequence: the amortised
  limit (same FLOPs per frame as streaming), but offline;
* **window recompute** — reference ``TemporalModelOptimized1f`` on one receptive-field window per
  stream per frame, batched over the ``N`` streams (what a live system does without state).

Rounds interleave the three measurements so background load hits them alike; each figure is the
median over rounds. The streaming outputs are checked against ``lift_sequence`` (and the window
recompute against the same frames), so "same outputs" is part of every result.

Use as a script (``python -m fastlift.bench.bench_stream --help``) or call :func:`run_benchmark`,
which returns a JSON-serialisable dict.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from fastlift.bench.machine import host_info as machine_info
from fastlift.reference import (TemporalModel, TemporalModelOptimized1f, architecture_summary, edge_pad,
                                lift_sequence, sequence_padding)
from fastlift.streaming import StreamingLifter

__all__ = ["run_benchmark", "machine_info", "main"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _walk(n: int, t: int, joints: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, t, joints, 2)`` smooth random keypoint tracks in roughly [-1, 1]."""
    steps = torch.randn(n, t, joints, 2, generator=gen) * 0.01
    return (torch.rand(n, 1, joints, 2, generator=gen) * 1.6 - 0.8) + steps.cumsum(1)


def run_benchmark(streams=(1, 64), filter_widths=(3, 3, 3, 3, 3), channels: int = 1024, joints_in: int = 17,
                  joints_out: int = 17, causal: bool = False, dtype: str = "float32", device: str = "cpu",
                  steps: int = 20, rounds: int = 3, whole_frames: int = 2048, window_calls: int | None = None,
                  check_finite: bool = True, seed: int = 0, log=None) -> dict:
    """Measure streaming vs whole-sequence vs window recompute for each stream count in ``streams``.

    Args:
        streams: stream counts ``N`` to measure.
        filter_widths, channels, joints_in, joints_out, causal: the architecture (243f by default).
        dtype: ``"float32"``/``"float64"`` (CPU), also ``"float16"``/``"bfloat16"`` on CUDA (the
            reference baselines then run in that dtype too).
        device: torch device string.
        steps: timed streaming steps per round; rounds: interleaved repetitions (median taken).
        whole_frames: output frames of the whole-sequence baseline per round.
        window_calls: 1f calls (each a batch of ``N`` windows) per round; default enough for ~N*4 poses.
        check_finite: passed to the engine (its NaN check costs a device sync per step on CUDA).
        log: optional callable receiving progress lines.

    Returns:
        ``{"config", "machine", "architecture", "results": [per N dict]}`` where each result has
        ``stream_fps``, ``stream_step_us`` (p50/p90/p99/max), ``whole_fps``, ``window_fps``, the
        ratios ``stream_vs_whole`` and ``stream_vs_window``, and ``max_abs_diff`` checks.
    """
    dev = torch.device(device)
    dt = getattr(torch, dtype)
    log = log or (lambda *_: None)
    torch.manual_seed(seed)
    model = TemporalModel(joints_in, 2, joints_out, list(filter_widths), causal=causal, channels=channels)
    # Non-trivial BN statistics so folding is exercised as with a trained checkpoint.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) * 0.5 + 0.75)
    model = model.to(device=dev, dtype=dt).eval()
    model_1f = TemporalModelOptimized1f(joints_in, 2, joints_out, list(filter_widths), causal=causal,
                                        channels=channels).to(device=dev, dtype=dt).eval()
    model_1f.load_state_dict(model.state_dict())
    rf = model.receptive_field()
    pad = (rf - 1) // 2
    delay = 0 if causal else pad
    left, _ = sequence_padding(model)
    arch = architecture_summary(joints_in, 2, joints_out, list(filter_widths), channels, False, causal)

    whole_in = _walk(1, whole_frames + rf - 1, joints_in, gen).to(device=dev, dtype=dt)
    results = []
    for n in streams:
        n = int(n)
        warm = delay + 2
        total = warm + steps * rounds
        seqs = _walk(n, total, joints_in, gen).to(device=dev, dtype=dt)
        eng = StreamingLifter(model, n, dtype=dt, device=dev, check_finite=check_finite)
        eng.warmup(n)
        slots = torch.tensor([eng.open() for _ in range(n)], dtype=torch.int64)
        emitted = {}  # frame -> pose of stream 0
        with torch.inference_mode():
            for t in range(warm):
                out = eng.push(slots, seqs[:, t])
                emitted.update((f, p) for s, f, p in zip(out.slots.tolist(), out.frame_index.tolist(), out.poses) if s == 0)
            _sync(dev)
            # Windows of each stream's most recent frames, laid out as the whole-sequence path pads
            # them (edge replication before frame 0), so each gives that stream's next pose.
            t_last = warm - 1
            hist = edge_pad(seqs[:, : t_last + 1], left, 0)[:, -rf:]
            calls = window_calls or max(1, min(20, (4 * max(n, 8)) // n))
            step_times, whole_t, window_t = [], [], []
            for r in range(rounds):
                # streaming
                lat = []
                for k in range(steps):
                    t = warm + r * steps + k
                    frames = seqs[:, t]
                    t0 = time.perf_counter()
                    out = eng.push(slots, frames)
                    _sync(dev)
                    lat.append(time.perf_counter() - t0)
                    emitted.update((f, p) for s, f, p in zip(out.slots.tolist(), out.frame_index.tolist(), out.poses)
                                   if s == 0)
                step_times.append(lat)
                # window recompute (batched over the N streams)
                _sync(dev)
                t0 = time.perf_counter()
                for _ in range(calls):
                    win_out = model_1f(hist)
                _sync(dev)
                window_t.append((time.perf_counter() - t0) / calls)
                # whole sequence
                t0 = time.perf_counter()
                model(whole_in)
                _sync(dev)
                whole_t.append(time.perf_counter() - t0)
                log(f"  N={n} round {r + 1}/{rounds}: step {statistics.median(lat) * 1e3:.2f} ms, "
                    f"window batch {window_t[-1] * 1e3:.1f} ms, whole {whole_t[-1] * 1e3:.0f} ms")
            pushed = warm + steps * rounds
            ref = lift_sequence(model, seqs[0, :pushed])
            frames_checked = sorted(emitted)
            stream_diff = max(float((emitted[f].float() - ref[f].float()).abs().max()) for f in frames_checked)
            win_frame = t_last - delay
            window_diff = float((win_out[0, 0].float() - lift_sequence(model, seqs[0, : t_last + 1])[win_frame].float())
                                .abs().max())
        all_lat = np.array([x for lat in step_times for x in lat])
        step_med = float(np.median([np.mean(lat) for lat in step_times]))
        whole_fps = whole_frames / statistics.median(whole_t)
        window_fps = n / statistics.median(window_t)
        stream_fps = n / step_med
        res = {
            "streams": n,
            "stream_fps": stream_fps,
            "stream_step_us": {"p50": float(np.percentile(all_lat, 50) * 1e6), "p90": float(np.percentile(all_lat, 90) * 1e6),
                               "p99": float(np.percentile(all_lat, 99) * 1e6), "max": float(all_lat.max() * 1e6),
                               "mean": float(all_lat.mean() * 1e6)},
            "whole_fps": whole_fps,
            "window_fps": window_fps,
            "stream_vs_whole": stream_fps / whole_fps,
            "stream_vs_window": stream_fps / window_fps,
            "stream_gflops": stream_fps * arch["flops_per_frame"] / 1e9,
            "whole_gflops": whole_fps * arch["flops_per_frame"] / 1e9,
            "window_gflops": window_fps * arch["window_recompute_flops_per_frame"] / 1e9,
            "max_abs_diff_stream_vs_whole": stream_diff,
            "max_abs_diff_window_vs_whole": window_diff,
            "frames_checked": len(frames_checked),
            "backend": eng.backend,
        }
        log(f"N={n}: stream {stream_fps:.0f} fps, whole {whole_fps:.0f} fps, window {window_fps:.0f} fps -> "
            f"{res['stream_vs_whole']:.2f}x whole, {res['stream_vs_window']:.1f}x window; diff {stream_diff:.2e}")
        results.append(res)
        del eng
    return {
        "mode": "streaming step (fastlift) vs whole sequence / window recompute (reference eager)",
        "config": {"streams": [int(n) for n in streams], "filter_widths": list(filter_widths), "channels": channels,
                   "joints_in": joints_in, "joints_out": joints_out, "causal": causal, "dtype": dtype,
                   "device": str(dev), "steps": steps, "rounds": rounds, "whole_frames": whole_frames,
                   "check_finite": check_finite},
        "machine": machine_info(dev),
        "architecture": {"receptive_field": rf, "pad": pad, "flops_per_frame": arch["flops_per_frame"],
                         "window_recompute_flops_per_frame": arch["window_recompute_flops_per_frame"],
                         "parameters": arch["parameters"]},
        "results": results,
    }


def format_table(report: dict) -> str:
    rows = ["   N   stream fps  p50 us/step  p99 us/step   whole fps  window fps  vs whole  vs window  max|diff|"]
    for r in report["results"]:
        s = r["stream_step_us"]
        rows.append(f"{r['streams']:4d} {r['stream_fps']:12.1f} {s['p50']:12.0f} {s['p99']:12.0f} {r['whole_fps']:11.1f} "
                    f"{r['window_fps']:11.1f} {r['stream_vs_whole']:9.2f} {r['stream_vs_window']:10.1f} "
                    f"{r['max_abs_diff_stream_vs_whole']:10.2e}")
    m = report["machine"]
    head = (f"{report['mode']}\nmachine: {m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads)"
            + (f", GPU {m['gpu']}" if "gpu" in m else "") + f"; device {m['device']}, dtype {report['config']['dtype']}, "
            f"receptive field {report['architecture']['receptive_field']}, {report['config']['channels']} channels")
    return head + "\n" + "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", default="1,64", help="comma-separated stream counts (GPU curve: 1,2,4,...,4096)")
    p.add_argument("-arc", "--architecture", default="3,3,3,3,3")
    p.add_argument("-ch", "--channels", type=int, default=1024)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--whole-frames", type=int, default=2048)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--no-check-finite", action="store_true", help="skip the engine's per-step NaN check")
    p.add_argument("--json", help="also write the report to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_benchmark(streams=[int(s) for s in args.streams.split(",") if s],
                           filter_widths=[int(w) for w in args.architecture.split(",") if w], channels=args.channels,
                           causal=args.causal, dtype=args.dtype, device=args.device, steps=args.steps,
                           rounds=args.rounds, whole_frames=args.whole_frames, check_finite=not args.no_check_finite,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
