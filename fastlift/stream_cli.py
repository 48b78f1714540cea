"""``fastlift stream``: replay recorded 2D sequences as concurrent real-time streams.

Every sequence of a VideoPose3D-layout 2D file (``positions_2d``: subject -> action -> list of
per-camera ``(T, J, 2)`` arrays, e.g. ``data_2d_custom_*.npz``) becomes a stream of a
:class:`fastlift.StreamingLifter`; ``--streams N`` keeps N of them running at once (cycling
through the file's sequences), optionally paced at the data's frame rate. Prints per-step
latency percentiles and throughput and writes the 3D poses as ``positions_3d``: subject ->
action -> list per camera of ``(T, J_out, 3)`` float32 arrays (the input's nesting).

The file is read with :func:`fastlift.data.io.read_keypoints` (``positions_2d`` and
``metadata``, checked); ``metadata['video_metadata']`` (per-video ``w``/``h``), when present,
normalises the coordinates.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from fastlift._files import atomic_savez, object_entry

EPILOG = """coordinates: keypoints are normalised to [-1, 1] screen coordinates (x / w * 2 - 1,
y / w * 2 - h / w, as in VideoPose3D) when the file has metadata['video_metadata'][video]
= {'w': .., 'h': ..} (the custom-video layout) or when --resolution W H is given; otherwise they
are assumed to be normalised already and are used as stored.

model: --model loads a checkpoint whose 'model_pos' entry (or the file itself) is a state_dict
of a dilated/dense or single-frame lifter (published VideoPose3D checkpoints load as they are);
the architecture is inferred from its shapes (give --dense for dense checkpoints and --causal for
causal ones: neither is visible in the weights; fastlift's own checkpoints record both).
Without --model a randomly initialised model is used and the 3D output is meaningless (useful
for measuring latency and throughput only).

output: an npz with 'positions_3d' = subject -> action -> list per camera of (T, J_out, 3) float32
poses (None where the input camera is None), the input's nesting, plus 'metadata'. Each step
pushes one frame to every active stream; latency is the wall time of that push (synchronised on
CUDA), throughput is frames / summed push time."""


def add_arguments(p) -> None:
    p.epilog = EPILOG
    import argparse

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--input", required=True, help="2D keypoints npz (VideoPose3D layout, e.g. data_2d_custom_*.npz)")
    p.add_argument("--output", help="3D output npz (default: <input stem>_stream_3d.npz in the current directory)")
    p.add_argument("--model", help="checkpoint with 'model_pos' (a lifter state_dict); default: random model")
    p.add_argument("-arc", "--architecture", help="filter widths, e.g. 3,3,3,3,3 (default: inferred from --model, "
                                                  "else 3,3,3,3,3)")
    p.add_argument("-ch", "--channels", type=int, help="hidden channels of the random model (default 1024)")
    p.add_argument("--causal", action="store_true", help="the model is causal (no look-ahead, no output delay)")
    p.add_argument("--dense", action="store_true", help="the model uses dense (undilated) kernels")
    p.add_argument("--joints-out", type=int, help="output joints of the random model (default: input joints)")
    p.add_argument("--streams", type=int, default=1, help="concurrent streams (default 1)")
    p.add_argument("--realtime", action="store_true", help="pace steps at --fps (default 50 frames/s)")
    p.add_argument("--fps", type=float, help="frame rate for pacing (implies --realtime)")
    p.add_argument("--resolution", type=int, nargs=2, metavar=("W", "H"),
                   help="normalise pixel coordinates with this video resolution")
    p.add_argument("--limit-frames", type=int, help="replay at most this many frames of each sequence")
    p.add_argument("--device", help="torch device (default: the available accelerator, else cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "triton"])
    p.add_argument("--threads", type=int, help="CPU threads for torch (torch.set_num_threads); on a shared, busy CPU "
                                               "1 avoids OpenMP stalls that cost every layer a scheduler slice")
    p.add_argument("--seed", type=int, default=0, help="seed of the random model (default 0)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle arbitrary objects in --model (only for checkpoints you trust)")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")


# ---------------------------------------------------------------------- input
def normalize_screen(x: np.ndarray, w: int, h: int) -> np.ndarray:
    """Pixels -> VideoPose3D screen coordinates (``[0, w] -> [-1, 1]``, aspect kept), float32."""
    from fastlift.camera import normalize_screen_coordinates

    return np.asarray(normalize_screen_coordinates(np.asarray(x, dtype=np.float32), w=w, h=h), dtype=np.float32)


def read_sequences(path, resolution=None) -> tuple[list[tuple[str, str, int, np.ndarray | None]], str]:
    """Read a 2D file as a flat list of ``(subject, action, camera, (T, J, 2) float32 array or None)``.

    The file is read and checked (layout, shapes, NaN/inf) by :func:`fastlift.data.io.read_keypoints`;
    coordinates are then normalised with ``resolution`` (W, H) if given, else with the file's
    ``video_metadata`` entry for the subject if it has one, else used as stored. Returns the
    list and a note saying which.
    """
    from fastlift.data.io import read_keypoints

    kp = read_keypoints(path)
    video_meta = kp.metadata.get("video_metadata") or {}
    seqs, normalised = [], set()
    for subject, actions in kp.positions.items():
        for action, cams in actions.items():
            for i, arr in enumerate(cams):
                if arr is None:
                    seqs.append((subject, action, i, None))
                    continue
                if resolution is not None:
                    arr = normalize_screen(arr, *resolution)
                    normalised.add("--resolution")
                elif isinstance(video_meta.get(subject), dict) and "w" in video_meta[subject]:
                    arr = normalize_screen(arr, int(video_meta[subject]["w"]), int(video_meta[subject]["h"]))
                    normalised.add("video_metadata")
                seqs.append((subject, action, i, np.ascontiguousarray(arr, dtype=np.float32)))
    if all(x is None for *_, x in seqs):
        raise ValueError(f"--input: {str(path)!r} holds no keypoint arrays (every camera is None)")
    if not normalised:
        note = "coordinates used as stored (assumed already normalised to [-1, 1])"
    else:
        note = "coordinates normalised by " + " and ".join(sorted(normalised))
    return seqs, note


# ---------------------------------------------------------------------- model
def build_model(args, joints_in: int, in_features: int):
    """The reference lifter described by ``args`` (``--model`` checkpoint or a random model), in eval mode.

    A checkpoint is read by :func:`fastlift.checkpoint.load_lifter` (safe loading that accepts the
    published VideoPose3D files, architecture from the weights and the checkpoint's record);
    its input must match the data's ``joints_in`` x ``in_features`` values per frame.
    """
    import torch

    from fastlift.info import parse_widths
    from fastlift.reference import TemporalModel

    widths = parse_widths(args.architecture) if args.architecture else None
    if args.model:
        from fastlift.checkpoint import load_lifter

        model, arch = load_lifter(args.model, trust=args.trust_checkpoint, what="--model", filter_widths=widths,
                                  causal=True if args.causal else None, dense=True if args.dense else None)
        k0 = arch.joints_in * arch.in_features
        if k0 != joints_in * in_features:
            raise ValueError(f"--model: the checkpoint expects {k0} input values per frame, the data has "
                             f"{joints_in} joints x {in_features} = {joints_in * in_features}")
        random = False
    else:
        torch.manual_seed(args.seed)
        model = TemporalModel(joints_in, in_features, args.joints_out or joints_in, widths or [3, 3, 3, 3, 3],
                              causal=args.causal, channels=args.channels or 1024, dense=args.dense)
        random = True
    return model.eval(), random


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
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected a positive integer, got {args.threads}")
    fps = args.fps if args.fps is not None else (50.0 if args.realtime else None)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    entries, note = read_sequences(args.input, args.resolution)
    present = [(s, a, c, x) for s, a, c, x in entries if x is not None]
    joints_in, in_features = present[0][3].shape[1], present[0][3].shape[2]
    model, random = build_model(args, joints_in, in_features)
    if random:
        print("fastlift stream: warning: no --model given; using a randomly initialised model, the 3D output is "
              "meaningless (latency/throughput only)", file=sys.stderr)
    if args.device:
        device = torch.device(args.device)
    else:
        acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        device = acc if acc is not None else torch.device("cpu")
    dtype = getattr(torch, args.dtype)
    engine = StreamingLifter(model, args.streams, dtype=dtype, device=device, backend=args.backend)

    outputs, stats = replay(engine, [x for _, _, _, x in present], args.streams, fps, args.limit_frames)

    # The first replay of each sequence is the output; later replays (streams > sequences) must agree.
    positions_3d: dict = {}
    consistency = 0.0
    for j, (subject, action, cam, _) in enumerate(present):
        positions_3d.setdefault(subject, {}).setdefault(action, {})[cam] = outputs[j]
    for j in range(len(present), stats["jobs"]):
        consistency = max(consistency, float(np.abs(outputs[j] - outputs[j % len(present)]).max()))
    nested = {}
    for subject, action, cam, x in entries:
        cams = nested.setdefault(subject, {}).setdefault(action, [])
        cams.append(None if x is None else positions_3d[subject][action][cam])
    out_path = Path(args.output) if args.output else Path(Path(args.input).stem + "_stream_3d.npz")
    atomic_savez(out_path, positions_3d=object_entry(nested),
                 metadata=object_entry({"num_joints": engine.num_joints_out,
                              "layout_name": "h36m" if engine.num_joints_out == 17 else f"{engine.num_joints_out}-joint",
                              "source": str(args.input), "note": note, "test_time_augmentation": False,
                              "random_model": random, "receptive_field": engine.receptive_field,
                              "causal": engine.causal}))

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
