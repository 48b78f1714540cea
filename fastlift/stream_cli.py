"""``fastlift stream``: replay recorded 2D sequences as concurrent real-time streams.

Every sequence of a VideoPose3D-layout 2D file (``positions_2d``: subject -> action -> list of
per-camera ``(T, J, 2)`` arrays, e.g. ``data_2d_custom_*.npz``) becomes a stream of a
:class:`fastlift.StreamingLifter`; ``--streams N`` keeps N of them running at once (cycling
through the file's sequences), optionally paced at the data's frame rate. Prints per-step
latency percentiles and throughput and writes the 3D poses as ``positions_3d``: subject ->
action -> list per camera of ``(T, J_out, 3)`` float32 arrays (the input's nesting).

The file is read by :func:`fastlift.lift_input.read_lift_input`, the reader ``fastlift infer``
uses (checks, resolution from ``--resolution`` or ``metadata['video_metadata']``, COCO ->
Human3.6M conversion for models trained on Human3.6M keypoints), so both commands lift the same
keypoints.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from fastlift._files import atomic_savez, object_entry

EPILOG = """input: read exactly as `fastlift infer` reads it (fastlift.lift_input): keypoints are
normalised to [-1, 1] screen coordinates (x / w * 2 - 1, y / w * 2 - h / w, as in VideoPose3D)
with --resolution W H, else the file's metadata['video_metadata'][video] = {'w': .., 'h': ..};
a video with neither is an error. COCO keypoints are converted to the Human3.6M layout when the
checkpoint was trained on Human3.6M keypoints (--convert auto).

model: --model loads a checkpoint whose 'model_pos' entry (or the file itself) is a state_dict
of a dilated/dense or single-frame lifter (published VideoPose3D checkpoints load as they are);
the architecture is inferred from its shapes (give --dense for dense checkpoints and --causal for
causal ones: neither is visible in the weights; fastlift's own checkpoints record both).
Without --model a randomly initialised model is used and the 3D output is meaningless (useful
for measuring latency and throughput only).

output: an npz with 'positions_3d' = video -> action -> list per camera of (T, J_out, 3) float32
poses (None where the input camera is None), the input's nesting, plus 'metadata' (the same keys
as infer's). Each step pushes one frame to every active stream; latency is the wall time of that
push (synchronised on CUDA), throughput is frames / summed push time."""

#: --precision values of fastlift stream -> torch dtype names (auto: bf16 on CUDA, fp32 elsewhere).
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_BACKENDS = {"auto": "auto", "reference": "torch", "triton": "triton"}


def add_arguments(p) -> None:
    p.epilog = EPILOG
    import argparse

    from fastlift.cli_common import (add_checkpoint_dir_argument, add_device_argument, add_impl_argument,
                                     add_model_argument, add_out_argument, add_overwrite_argument,
                                     add_precision_argument, add_trust_arguments)
    from fastlift.lift_input import add_input_arguments

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_input_arguments(p)
    add_out_argument(p, output_alias=True,
                     help_text="3D output npz (default: <input stem>_stream_3d.npz in the current folder)")
    add_overwrite_argument(p)
    add_model_argument(p, help_extra="; default: a random model (latency/throughput only)")
    add_checkpoint_dir_argument(p, default=None, help_text="checkpoint folder where --model names are looked up "
                                                           "(default: --model is a path)")
    p.add_argument("-arc", "--architecture", help="filter widths, e.g. 3,3,3,3,3 (default: inferred from --model, "
                                                  "else 3,3,3,3,3)")
    p.add_argument("-ch", "--channels", type=int, help="hidden channels of the random model (default 1024)")
    p.add_argument("--causal", action="store_true", help="the model is causal (no look-ahead, no output delay)")
    p.add_argument("--dense", action="store_true", help="the model uses dense (undilated) kernels")
    p.add_argument("--joints-out", type=int, help="output joints of the random model (default: input joints)")
    p.add_argument("--streams", type=int, default=1, help="concurrent streams (default 1)")
    p.add_argument("--realtime", action="store_true", help="pace steps at --fps (default 50 frames/s)")
    p.add_argument("--fps", type=float, help="frame rate for pacing (implies --realtime)")
    p.add_argument("--limit-frames", type=int, help="replay at most this many frames of each sequence")
    add_device_argument(p)
    add_precision_argument(p, PRECISIONS, "fp32", dtype_alias=True,
                           help_text="weights/activations: fp32, bf16, fp16, or auto (bf16 on CUDA, fp32 elsewhere)")
    add_impl_argument(p, backend_alias=True,
                      help_text="streaming implementation: auto (Triton kernel on CUDA, torch elsewhere), triton, "
                                "reference (torch ops); --backend is the old name (torch = reference)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (torch.set_num_threads); on a shared, busy CPU "
                                               "1 avoids OpenMP stalls that cost every layer a scheduler slice")
    p.add_argument("--seed", type=int, default=0, help="seed of the random model (default 0)")
    add_trust_arguments(p)
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")


# ---------------------------------------------------------------------- model
def build_model(args, ckpt=None, ckpt_file=None, joints_in: int = 17, in_features: int = 2):
    """The reference lifter described by ``args`` (``--model`` checkpoint, already loaded as
    ``ckpt``, or a random model), in eval mode; returns ``(model, random)``.

    The checkpoint's input must match the data's ``joints_in`` x ``in_features`` values per frame.
    """
    import torch

    from fastlift.info import parse_widths
    from fastlift.reference import TemporalModel

    widths = parse_widths(args.architecture) if args.architecture else None
    if ckpt is not None:
        from fastlift.checkpoint import lifter_from_checkpoint

        model, arch = lifter_from_checkpoint(ckpt, path=ckpt_file, what="--model", filter_widths=widths,
                                             causal=True if args.causal else None, dense=True if args.dense else None)
        k0 = arch.joints_in * arch.in_features
        if k0 != joints_in * in_features:
            raise ValueError(f"--model: the checkpoint expects {k0} input values per frame, the data has "
                             f"{joints_in} joints x {in_features} = {joints_in * in_features}")
        return model.eval(), False
    torch.manual_seed(args.seed)
    model = TemporalModel(joints_in, in_features, args.joints_out or joints_in, widths or [3, 3, 3, 3, 3],
                          causal=args.causal, channels=args.channels or 1024, dense=args.dense)
    return model.eval(), True


# ---------------------------------------------------------------------- replay
def latency_summary(seconds) -> dict:
    """p50/p90/p99/max/mean of per-step latencies, in microseconds."""
    a = np.asarray(seconds, dtype=np.float64) * 1e6
    if a.size == 0:
        return {"p50_us": 0.0, "p90_us": 0.0, "p99_us": 0.0, "max_us": 0.0, "mean_us": 0.0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50_us": float(p50), "p90_us": float(p90), "p99_us": float(p99), "max_us": float(a.max()),
            "mean_us": float(a.mean())}


def replay(engine, sequences: list[np.ndarray], streams: int, fps: float | None = None, limit: int | None = None):
    """Play ``sequences`` through ``engine`` with ``streams`` concurrent streams.

    Job ``j`` plays sequence ``j mod len(sequences)``; there are ``max(streams, len(sequences))``
    jobs, so every sequence plays at least once and ``streams`` streams are busy at the start.
    Each step pushes one frame to every active stream; a finished stream is closed and its slot
    immediately reused by the next job. With ``fps`` each step starts on a ``1/fps`` clock.

    Returns ``(outputs, stats)``: ``outputs[j]`` is job ``j``'s ``(T, J_out, 3)`` numpy array.
    """
    import torch

    dev = engine.device
    seqs = [torch.from_numpy(s[:limit] if limit else s).to(device=dev, dtype=engine.dtype) for s in sequences]
    n_jobs = max(streams, len(seqs))
    next_job = 0
    active: dict[int, list] = {}  # slot -> [job, next frame]
    results: dict[int, list] = {}
    latencies, late = [], 0
    frames_total = 0

    def collect(out):
        for s, f, p in zip(out.slots.tolist(), out.frame_index.tolist(), out.poses):
            results[slot_job[s]][f] = p

    slot_job: dict[int, int] = {}  # slot -> job it plays (kept until the slot is reused)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    period = 1.0 / fps if fps else None
    t_start = time.perf_counter()
    step = 0
    while next_job < n_jobs or active:
        while next_job < n_jobs and len(active) < streams:
            slot = engine.open()
            job = next_job
            next_job += 1
            active[slot] = [job, 0]
            slot_job[slot] = job
            results[job] = [None] * seqs[job % len(seqs)].shape[0]
        if period is not None:
            delay = t_start + step * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                late += step > 0
        slots = sorted(active)
        frames = torch.stack([seqs[active[s][0] % len(seqs)][active[s][1]] for s in slots])
        slot_t = torch.tensor(slots, dtype=torch.int64)
        t0 = time.perf_counter()
        out = engine.push(slot_t, frames)
        sync()
        latencies.append(time.perf_counter() - t0)
        frames_total += len(slots)
        collect(out)
        for s in slots:
            active[s][1] += 1
            if active[s][1] == seqs[active[s][0] % len(seqs)].shape[0]:
                collect(engine.close(s))
                del active[s]
        step += 1
    wall = time.perf_counter() - t_start
    outputs = {}
    for job, poses in results.items():
        if any(p is None for p in poses):
            raise RuntimeError(f"replay: job {job} is missing poses (engine bug)")
        outputs[job] = torch.stack(poses).float().cpu().numpy()
    busy = float(np.sum(latencies))
    stats = {"steps": step, "frames": frames_total, "jobs": n_jobs, "wall_s": wall, "compute_s": busy,
             "frames_per_s": frames_total / busy if busy > 0 else 0.0, "late_steps": late,
             **latency_summary(latencies)}
    return outputs, stats


def run(args) -> int:
    import torch

    from fastlift.checkpoint import load_checkpoint, stored_architecture
    from fastlift.cli_common import (check_device, check_impl, check_output_file, check_precision,
                                     resolve_model_file)
    from fastlift.data.io import read_keypoints
    from fastlift.lift_input import nest_outputs, output_metadata, read_lift_input
    from fastlift.streaming import StreamingLifter

    if args.streams < 1:
        raise ValueError(f"--streams: expected a positive integer, got {args.streams}")
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps: expected a positive frame rate, got {args.fps}")
    if args.limit_frames is not None and args.limit_frames < 1:
        raise ValueError(f"--limit-frames: expected a positive integer, got {args.limit_frames}")
    if args.resolution is not None and min(args.resolution) < 1:
        raise ValueError(f"--resolution: expected positive W H, got {args.resolution}")
    if args.channels is not None and args.channels < 1:
        raise ValueError(f"-ch/--channels: expected a positive integer, got {args.channels}")
    if args.joints_out is not None and args.joints_out < 1:
        raise ValueError(f"--joints-out: expected a positive integer, got {args.joints_out}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected a positive integer, got {args.threads}")
    if args.architecture:
        from fastlift.info import parse_widths
        from fastlift.reference import validate_filter_widths

        try:
            validate_filter_widths(parse_widths(args.architecture))
        except ValueError as exc:
            raise ValueError(f"-arc/--architecture: {exc}") from None
    check_precision(args.precision, PRECISIONS)
    check_impl(args.impl)
    device = check_device(args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    src = Path(args.input)
    if not src.is_file():
        raise FileNotFoundError(f"--input: no such file: {str(src)!r}")
    ckpt_file = resolve_model_file(args.model, args.checkpoint)
    out_path = check_output_file(args.out if args.out else Path(src.stem + "_stream_3d.npz"), "-o/--out",
                                 inputs=[src, ckpt_file], overwrite=args.overwrite)
    fps = args.fps if args.fps is not None else (50.0 if args.realtime else None)

    kp = read_keypoints(src)
    ckpt = load_checkpoint(ckpt_file, trust=args.trust_checkpoint, what="--model") if ckpt_file else None
    prepared = read_lift_input(kp, model_layout=stored_architecture(ckpt).get("keypoints_layout"),
                               convert=args.convert, resolution=args.resolution)
    present = [(s, a, c, x) for s, a, c, x in prepared.entries if x is not None]
    joints_in, in_features = present[0][3].shape[1], present[0][3].shape[2]
    model, random = build_model(args, ckpt, ckpt_file, joints_in, in_features)
    if random:
        print("fastlift stream: warning: no --model given; using a randomly initialised model, the 3D output is "
              "meaningless (latency/throughput only)", file=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, _DTYPES[precision])
    engine = StreamingLifter(model, args.streams, dtype=dtype, device=device, backend=_BACKENDS[args.impl])

    outputs, stats = replay(engine, [x for _, _, _, x in present], args.streams, fps, args.limit_frames)

    # The first replay of each sequence is the output; later replays (streams > sequences) must agree.
    consistency = 0.0
    for j in range(len(present), stats["jobs"]):
        consistency = max(consistency, float(np.abs(outputs[j] - outputs[j % len(present)]).max()))
    it = iter(range(len(present)))
    per_entry = [None if x is None else outputs[next(it)] for *_, x in prepared.entries]
    note = (f"coordinates normalised by {prepared.resolution}"
            + ("; COCO keypoints converted to the Human3.6M layout" if prepared.convert == "coco-to-h36m" else ""))
    metadata = output_metadata(prepared, joints_out=engine.num_joints_out, checkpoint=str(ckpt_file) if ckpt_file
                               else None, trajectory=False, test_time_augmentation=False, command="stream",
                               random_model=random, receptive_field=engine.receptive_field, causal=engine.causal,
                               note=note)
    atomic_savez(out_path, positions_3d=object_entry(nest_outputs(prepared.entries, per_entry)),
                 metadata=object_entry(metadata))
    args.dtype = _DTYPES[precision]  # the summary's name for it

    summary = {
        "device": str(device), "dtype": args.dtype, "backend": engine.backend, "streams": args.streams,
        "torch_threads": torch.get_num_threads(),
        "sequences": len(present), "receptive_field": engine.receptive_field, "causal": engine.causal,
        "delay_frames": engine.delay, "paced_fps": fps, "replay_max_abs_diff": consistency,
        "output": str(out_path), **stats,
    }
    print(f"fastlift stream: {len(present)} sequences, {stats['jobs']} replays on {args.streams} stream(s); {note}")
    print(f"  model: receptive field {engine.receptive_field}, {'causal' if engine.causal else 'symmetric'}, "
          f"delay {engine.delay} frames, {engine.channels} channels; {device} {args.dtype}, backend {engine.backend}")
    print(f"  steps {stats['steps']}, frames {stats['frames']}, wall {stats['wall_s']:.3f} s, "
          f"compute {stats['compute_s']:.3f} s")
    print(f"  step latency (us): p50 {stats['p50_us']:.1f}  p90 {stats['p90_us']:.1f}  p99 {stats['p99_us']:.1f}  "
          f"max {stats['max_us']:.1f}")
    print(f"  throughput: {stats['frames_per_s']:.1f} frames/s (compute time)"
          + (f"; paced at {fps:g} fps, {stats['late_steps']} late step(s)" if fps else ""))
    if stats["jobs"] > len(present):
        print(f"  replays of the same sequence agree to {consistency:.3g}")
    print(f"  wrote {out_path}")
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0
