"""``fastlift demo``: the main job on the embedded synthetic data, end to end.

1. **data** — generate (or reuse) the synthetic Human3.6M-style motion-capture set;
2. **train** — a reduced lifter with VideoPose3D's recipe (``fastlift train`` flags), sized to
   finish in a few minutes on 2 CPU cores (on a GPU the fused kernels run);
3. **evaluate** — whole-sequence inference with test-time flipping on the test subjects
   (S9, S11): MPJPE / P-MPJPE / N-MPJPE / MPJVE per action, against the mean-pose baseline;
4. **stream** — replay test sequences as concurrent live streams through
   :class:`~fastlift.StreamingLifter`, check the streamed poses equal whole-sequence inference,
   report per-step latency and frames/s;
5. **throughput** — whole-sequence inference of the paper's 243-frame, 1024-channel
   architecture (BN folded) on a long sequence on this device, next to the reference model;
6. **report** — ``report.md`` + ``report.json`` with all numbers, the training curve and an
   animation of a test sequence (input 2D / prediction / ground truth): MP4 when ffmpeg is
   available (on PATH or from ``imageio-ffmpeg``), GIF otherwise.

Everything is written under ``--out`` (default ``fastlift_out/demo``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fastlift._files import atomic_write_text


def add_arguments(p) -> None:
    from fastlift.cli_common import add_device_argument, add_out_argument, add_overwrite_argument

    add_out_argument(p, help_text="output folder (default fastlift_out/demo)", metavar="DIR")
    p.set_defaults(out="fastlift_out/demo")
    add_overwrite_argument(p)
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="synthetic data folder (default: $FASTLIFT_DATA or ~/.cache/fastlift/synthetic-v1, generated "
                        "on first use)")
    p.add_argument("-e", "--epochs", type=int, default=None, metavar="N",
                   help="training epochs (default 4, 1 with --quick)")
    p.add_argument("-arc", "--architecture", default="3,3,3", metavar="LAYERS",
                   help="filter widths of the trained model (default 3,3,3)")
    p.add_argument("-ch", "--channels", type=int, default=None, metavar="N",
                   help="channels of the trained model (default 128, 64 with --quick)")
    p.add_argument("-b", "--batch-size", type=int, default=256, metavar="N",
                   help="training batch size in predicted frames (default 256)")
    p.add_argument("--streams", type=int, default=8, metavar="N",
                   help="concurrent streams in the streaming step (default 8)")
    p.add_argument("--throughput-frames", type=int, default=3000, metavar="N",
                   help="sequence length for the 243-frame throughput measurement (default 3000)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of initialisation and shuffling (default 0)")
    add_device_argument(p)
    p.add_argument("--threads", default="auto", metavar="N",
                   help="CPU threads for torch: N, or auto (default: torch's default, or 1 when the CPU is already "
                        "busy with other work, where OpenMP threads oversubscribe the cores and every step stalls)")
    p.add_argument("--quick", action="store_true", help="smallest useful run (1 epoch, 64 channels, no animation)")
    p.add_argument("--no-render", action="store_true", help="skip the animation (MP4, or GIF without ffmpeg)")


def _choose_threads(spec: str) -> tuple[int, str]:
    """``--threads`` -> (threads, why). auto: 1 when the 1-minute load is at least half the cores."""
    import os

    import torch

    if spec != "auto":
        try:
            n = int(spec)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--threads: expected a positive integer or auto, got {spec!r}")
        return n, "--threads"
    try:
        load = os.getloadavg()[0]
    except OSError:
        return torch.get_num_threads(), "torch default"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load >= 0.5 * cores and torch.get_num_threads() > 1:
        return 1, f"busy CPU (1-min load {load:.1f} on {cores} cores): 1 thread"
    return torch.get_num_threads(), f"torch default (1-min load {load:.1f} on {cores} cores)"


def check_args(args) -> tuple[Path, int, int]:
    """Check every flag and the output folder before any work; returns (out, epochs, channels)."""
    from fastlift.cli_common import CliError, check_device, check_output_dir
    from fastlift.train.args import parse_architecture

    epochs = args.epochs if args.epochs is not None else (1 if args.quick else 4)
    channels = args.channels if args.channels is not None else (64 if args.quick else 128)
    for flag, value in (("-e/--epochs", epochs), ("-ch/--channels", channels), ("--streams", args.streams),
                        ("-b/--batch-size", args.batch_size)):
        if value < 1:
            raise CliError(f"{flag}: expected a positive integer, got {value}")
    if args.throughput_frames < 243:
        raise CliError(f"--throughput-frames: expected at least 243 frames (the receptive field), got "
                       f"{args.throughput_frames}")
    if args.seed < 0:
        raise CliError(f"--seed: expected a non-negative integer, got {args.seed}")
    parse_architecture(args.architecture)
    check_device(args.device)
    out = check_output_dir(args.out, "-o/--out")
    earlier = [p.name for p in (out / "report.json", out / "report.md", out / "checkpoint") if p.exists()]
    if earlier and not args.overwrite:
        raise CliError(f"-o/--out: {str(out)!r} already holds an earlier demo run ({', '.join(earlier)}); pass "
                       f"--overwrite to replace it, or choose another -o/--out folder")
    return out, epochs, channels


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def run(args) -> int:
    import torch

    from fastlift.data.synthetic import ensure_synthetic
    from fastlift.train import args as targs
    from fastlift.train import runner

    t_start = time.perf_counter()
    out, epochs, channels = check_args(args)
    threads, threads_why = _choose_threads(args.threads)
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"command": "fastlift demo", "seed": args.seed, "torch_threads": threads,
                    "threads_reason": threads_why}
    print(f"torch threads: {threads} ({threads_why})")

    _section("1/6 data")
    t0 = time.perf_counter()
    data_dir = ensure_synthetic(args.data_dir, seed=0, progress=True)
    report["data"] = {"dir": str(data_dir), "seconds": round(time.perf_counter() - t0, 2)}
    print(f"synthetic motion capture in {data_dir} ({report['data']['seconds']} s)")

    _section("2/6 train")
    ckpt_dir = out / "checkpoint"
    flags = ["-d", "synthetic", "--data-dir", str(data_dir), "-arc", args.architecture, "-ch", str(channels),
             "-e", str(epochs), "-b", str(args.batch_size), "-c", str(ckpt_dir), "--seed", str(args.seed),
             "--export-training-curves", "--checkpoint-frequency", str(epochs),
             "--output-json", str(out / "evaluation.json")] + (["--overwrite"] if args.overwrite else [])
    if args.device:
        flags += ["--device", args.device]
    t0 = time.perf_counter()
    targs_ns = targs.parse_args(flags)
    result = runner.main(targs_ns, "train")
    train_s = time.perf_counter() - t0
    trainer = result["trainer"]
    device = torch.device(targs_ns.device)
    model = trainer.model_pos  # the dilated evaluation model, synced from the 1f training model
    model.eval()
    evaluation = result["report"]
    report["train"] = {"epochs": epochs, "architecture": args.architecture, "channels": channels,
                       "receptive_field": model.receptive_field(), "seconds": round(train_s, 1),
                       "device": str(device), "impl": targs_ns.impl}

    _section("3/6 evaluate")
    summary = _evaluation_summary(evaluation)
    report["evaluate"] = summary
    print(json.dumps(summary, indent=2))

    _section("4/6 stream")
    report["stream"] = _stream_check(model, trainer, args.streams, device)
    print(json.dumps(report["stream"], indent=2))

    _section("5/6 throughput (243 frames, 1024 channels)")
    report["throughput"] = _throughput(device, args.throughput_frames)
    print(json.dumps(report["throughput"], indent=2))

    _section("6/6 report")
    gif = None
    if not (args.quick or args.no_render):
        gif = _render(targs_ns, ckpt_dir, epochs, out)
    report["artifacts"] = {
        "checkpoint": str(ckpt_dir / f"epoch_{epochs}.bin"),
        "evaluation_json": str(out / "evaluation.json"),
        "training_curve": str(ckpt_dir / "loss_3d.png") if (ckpt_dir / "loss_3d.png").is_file() else None,
        "animation": gif,
    }
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "report.md", _markdown(report))
    print(f"Wrote {out / 'report.md'} and {out / 'report.json'} ({report['total_seconds']} s in total)")
    return 0


def _evaluation_summary(ev: dict) -> dict:
    """The headline numbers of a :func:`fastlift.train.runner.main` evaluation report (mm)."""
    def pick(d, *keys):
        for k in keys:
            if isinstance(d, dict) and k in d:
                return d[k]
        return None

    overall = pick(ev, "action_mean", "overall", "mean") or {}
    summary = {k: round(float(v), 2) for k, v in overall.items() if isinstance(v, (int, float))}
    base = (ev.get("mean_pose_baseline") or {}).get("mpjpe")
    if base is not None:
        summary["mean_pose_baseline_mpjpe"] = round(float(base), 2)
    actions = ev.get("actions") or {}
    summary["per_action_mpjpe"] = {a: round(float(v.get("mpjpe")), 2) for a, v in actions.items()
                                   if isinstance(v, dict) and v.get("mpjpe") is not None}
    return summary


def _stream_check(model, trainer, n_streams: int, device) -> dict:
    """Stream test sequences concurrently, compare with whole-sequence inference, time the steps."""
    import torch

    from fastlift.metrics import mpjpe
    from fastlift.reference import lift_sequence
    from fastlift.streaming import StreamingLifter

    test = trainer.exp.test
    seqs = [torch.as_tensor(np.asarray(s), dtype=torch.float32) for s in test.poses_2d]
    targets = [torch.as_tensor(np.asarray(s), dtype=torch.float32) for s in test.poses_3d]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))[:n_streams]
    eng = StreamingLifter(model, max_streams=n_streams, dtype=torch.float32, device=device)
    slots = [eng.open() for _ in order]
    length = min(len(seqs[i]) for i in order)
    got = {s: {} for s in slots}
    lat = []
    slot_t = torch.tensor(slots, dtype=torch.int64)
    for t in range(length):
        frames = torch.stack([seqs[i][t] for i in order]).to(device)
        t0 = time.perf_counter()
        res = eng.push(slot_t, frames)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        lat.append(time.perf_counter() - t0)
        for s, f, p in zip(res.slots.tolist(), res.frame_index.tolist(), res.poses.float().cpu()):
            got[s][f] = p
    for s in slots:
        res = eng.close(s)
        for f, p in zip(res.frame_index.tolist(), res.poses.float().cpu()):
            got[s][f] = p
    max_diff, errs, errs_whole = 0.0, [], []
    for s, i in zip(slots, order):
        streamed = torch.stack([got[s][f] for f in range(length)])
        whole = lift_sequence(model, seqs[i][:length].to(device)).float().cpu()
        max_diff = max(max_diff, float((streamed - whole).abs().max()))
        tgt = targets[i][:length].clone()
        tgt[:, 0] = 0
        for pred, acc in ((streamed.clone(), errs), (whole.clone(), errs_whole)):
            pred[:, 0] = 0
            acc.append(float(mpjpe(pred, tgt)) * 1000)
    lat_ms = np.array(lat) * 1000
    return {
        "streams": len(slots), "frames_per_stream": length, "delay_frames": eng.delay,
        "step_latency_ms": {"p50": round(float(np.percentile(lat_ms, 50)), 3),
                            "p90": round(float(np.percentile(lat_ms, 90)), 3),
                            "p99": round(float(np.percentile(lat_ms, 99)), 3)},
        "frames_per_second": round(len(slots) * length / float(np.sum(lat)), 1),
        "max_abs_diff_vs_whole_sequence": max_diff,
        "streamed_mpjpe_mm": round(float(np.mean(errs)), 2),
        "whole_sequence_mpjpe_same_frames_mm": round(float(np.mean(errs_whole)), 2),
        "sequences": ["{}/{}/camera {}".format(*test.labels[i]) for i in order],
    }


def _throughput(device, frames: int) -> dict:
    """Whole-sequence frames/s of the 243-frame, 1024-channel architecture (weights random: this
    measures speed, not accuracy), fastlift's BN-folded module vs the reference, same input."""
    import torch

    from fastlift.model import fuse
    from fastlift.reference import TemporalModel, flops_per_frame, lift_sequence

    torch.manual_seed(0)
    ref = TemporalModel(17, 2, 17, [3, 3, 3, 3, 3]).to(device).eval()
    fused = fuse(ref, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    x = torch.randn(frames, 17, 2, device=device)

    def timed(fn, repeats=3):
        fn()
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            y = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        return best, y

    t_ref, y_ref = timed(lambda: lift_sequence(ref, x))
    t_fl, y_fl = timed(lambda: fused.lift(x))
    rel = float((y_fl.float() - y_ref).abs().max() / y_ref.abs().max())
    flops = flops_per_frame(17, 2, 17, [3, 3, 3, 3, 3])
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "frames": frames, "dtype": str(fused.dtype).replace("torch.", ""),
        "fastlift_frames_per_s": round(frames / t_fl, 1), "reference_fp32_frames_per_s": round(frames / t_ref, 1),
        "speedup": round(t_ref / t_fl, 2), "fastlift_gflops": round(frames * flops / t_fl / 1e9, 2),
        "max_rel_diff_vs_reference": rel, "impl": "triton" if fused.uses_kernels(x) else "folded torch (CPU)",
    }


def _render(targs_ns, ckpt_dir: Path, epochs: int, out: Path):
    from fastlift.train import args as targs
    from fastlift.train import runner

    from fastlift.train.render import ffmpeg_exe

    # MP4 where an encoder is available (smaller, smoother), GIF otherwise.
    gif = out / ("walking_S9.mp4" if ffmpeg_exe() else "walking_S9.gif")
    flags = ["-d", "synthetic", "--data-dir", str(targs_ns.data_dir), "-c", str(ckpt_dir), "--evaluate",
             f"epoch_{epochs}.bin", "--viz-subject", "S9", "--viz-action", "Walking 1", "--viz-camera", "0",
             "--viz-output", str(gif), "--viz-limit", "60", "--viz-downsample", "2", "--device", str(targs_ns.device),
             "--overwrite"]  # the demo folder was checked (and --overwrite given if it held a run) up front
    try:
        runner.main(targs.parse_args(flags), "render")
    except ImportError as exc:  # matplotlib/pillow missing: the report still gets written
        print(f"skipping the animation: {exc}")
        return None
    return str(gif)


#: What each evaluation key of the report means (all in millimetres).
METRICS = {
    "mpjpe": "MPJPE (protocol 1): mean Euclidean distance between predicted and true joints after aligning "
             "the root (pelvis) joints",
    "p_mpjpe": "P-MPJPE (protocol 2): the same after a rigid alignment of each predicted pose to the truth "
               "(rotation, translation and scale; Procrustes)",
    "n_mpjpe": "N-MPJPE (protocol 3): the same after scale-only alignment",
    "mpjve": "MPJVE: mean per-joint error of the velocities (first differences between frames), mm per frame",
    "mean_pose_baseline_mpjpe": "MPJPE of a trivial predictor that outputs the training set's mean pose for every "
                                "frame: a trained model must be well below it",
}


def _markdown(r: dict) -> str:
    ev, st, th, tr = r["evaluate"], r["stream"], r["throughput"], r["train"]
    lines = [
        "# fastlift demo report", "",
        f"Synthetic Human3.6M-style data in `{r['data']['dir']}`; total run time {r['total_seconds']} s "
        f"(torch threads: {r.get('torch_threads')}, {r.get('threads_reason')}).", "",
        "## Training", "",
        f"{tr['epochs']} epoch{'s' if tr['epochs'] != 1 else ''} of a {tr['receptive_field']}-frame model (filter widths {tr['architecture']}, "
        f"{tr['channels']} channels) on {tr['device']} with impl={tr['impl']}: {tr['seconds']} s.", "",
        "## Evaluation (test subjects S9, S11; mm)", "",
        "All test sequences, whole-sequence inference with test-time flip augmentation; the numbers are the "
        "mean over actions.", "",
        "| metric | value (mm) | meaning |", "| --- | --- | --- |",
    ]
    for k, v in ev.items():
        if k in METRICS:
            lines.append(f"| {k} | {v} | {METRICS[k]} |")
    if ev.get("per_action_mpjpe"):
        lines += ["", "| action | MPJPE (mm) |", "| --- | --- |"]
        lines += [f"| {a} | {v} |" for a, v in ev["per_action_mpjpe"].items()]
    lines += [
        "", "## Streaming", "",
        f"{st['streams']} concurrent streams x {st['frames_per_stream']} frames (the {st['streams']} longest test "
        f"sequences, cut to the shortest of them), one frame per stream per step, output delay "
        f"{st['delay_frames']} frames: p50 {st['step_latency_ms']['p50']} ms / p99 {st['step_latency_ms']['p99']} ms "
        f"per step, {st['frames_per_second']} frames/s.", "",
        f"The streamed poses equal whole-sequence inference of the same frames (largest difference "
        f"{st['max_abs_diff_vs_whole_sequence']:.2e} m). Their MPJPE, {st['streamed_mpjpe_mm']} mm (whole-sequence "
        f"on the same frames: {st.get('whole_sequence_mpjpe_same_frames_mm')} mm), differs from the evaluation's "
        f"{ev.get('mpjpe')} mm because it covers only these {st['streams']} sequences and has no test-time flip "
        f"augmentation (a live stream has no mirrored copy to average with).",
        "", "## Throughput, 243-frame 1024-channel architecture", "",
        f"Random weights (this measures speed, not accuracy), a {th['frames']}-frame sequence on {th['device']} "
        f"({th['impl']}, {th['dtype']}): fastlift {th['fastlift_frames_per_s']} frames/s, the reference "
        f"implementation (eager PyTorch, fp32) {th['reference_fp32_frames_per_s']} frames/s on the same input in the "
        f"same run: x{th['speedup']} (reference time / fastlift time: above 1 means fastlift is faster; on CPU "
        f"both run the same convolution library, so about 1 is expected; on a GPU the fused kernels run). Largest relative difference of "
        f"the poses: {th['max_rel_diff_vs_reference']:.1e}.",
        "", "## Files", "",
    ]
    for k, v in r["artifacts"].items():
        if v:
            lines.append(f"- {k}: `{v}`")
    return "\n".join(lines) + "\n"
