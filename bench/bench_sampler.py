"""Batch construction: fastlift's device-resident sampler vs a per-example numpy loop.

The baseline, :class:`NumpyWindowBatches`, builds a batch the way VideoPose3D's CPU generator
does: for each example, slice its receptive-field window out of the sequence, edge-pad it with
``np.pad`` where it overhangs, flip it (negate x, swap left/right keypoints/joints) if it is a
mirrored example, write it into a float64 batch buffer, then convert the batch to float32 torch
tensors. :class:`fastlift.train.sampler.WindowSampler` does the same with one ``index_select``
per tensor from pre-padded, pre-flipped banks. Both are checked to give identical windows before
timing.

:func:`run_sampler_benchmark` (CPU or any device) returns a JSON-ready dict with the per-batch
time of both (median over interleaved rounds) and their ratio. :func:`run_epoch_breakdown`
(needs CUDA; returns ``{"skipped": reason}`` elsewhere unless ``allow_cpu``) times training steps of
the reference recipe (numpy generator + eager fp32 reference model) and of fastlift's (device
sampler + fused model, fp32 or bf16) phase by phase — data, forward, backward, optimizer — and
extrapolates to a full epoch.

Script: ``python -m fastlift.bench.bench_sampler [--batch 1024] [--arc 3,3,3,3,3] [--json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch

__all__ = ["NumpyWindowBatches", "load_training_split", "run_sampler_benchmark", "run_epoch_breakdown",
           "machine_info", "main"]


def machine_info(device) -> dict:
    """CPU model, core count, torch threads, load average and (CUDA) GPU name: the record of
    :func:`fastlift.bench.machine.host_info` in this benchmark's layout (no Python version; load
    average to two decimals)."""
    from fastlift.bench.machine import host_info

    info = host_info(device)
    del info["python"]
    if "load_average_1m" in info:
        info["load_average_1m"] = round(info["load_average_1m"], 2)
    return info


class NumpyWindowBatches:
    """Per-example numpy batch builder with the reference generator's semantics (the baseline).

    Items are ``(sequence, first output frame, flip)``; each sequence of ``T`` frames gives
    ``ceil(T / L)`` chunks centred on it, each chunk once as is and once flipped when ``augment``.
    :meth:`batch` returns float32 tensors ``(B, L + 2*pad, J, 2)`` and ``(B, L, J_out, 3)`` (root
    zeroed).
    """

    def __init__(self, poses_2d, poses_3d, *, chunk_length=1, pad=0, causal_shift=0, batch_size=1024, augment=True,
                 kps_left=(), kps_right=(), joints_left=(), joints_right=(), seed=1234):
        self.p2, self.p3 = poses_2d, poses_3d
        self.L, self.pad, self.cs, self.batch_size = chunk_length, pad, causal_shift, batch_size
        self.kl, self.kr = list(kps_left), list(kps_right)
        self.jl, self.jr = list(joints_left), list(joints_right)
        items = []
        for i, p in enumerate(poses_2d):
            n = (p.shape[0] + chunk_length - 1) // chunk_length
            off = (n * chunk_length - p.shape[0]) // 2
            for k in range(n):
                items.append((i, k * chunk_length - off, False))
                if augment:
                    items.append((i, k * chunk_length - off, True))
        self.items = items
        self.order = np.random.RandomState(seed).permutation(len(items))
        self.num_batches = math.ceil(len(items) / batch_size)
        j2, j3 = poses_2d[0].shape[1], poses_3d[0].shape[1]
        self.buf2 = np.empty((batch_size, chunk_length + 2 * pad, j2, poses_2d[0].shape[2]))
        self.buf3 = np.empty((batch_size, chunk_length, j3, 3))

    @staticmethod
    def _window(seq: np.ndarray, start: int, end: int) -> np.ndarray:
        lo, hi = max(start, 0), min(end, seq.shape[0])
        if lo - start or end - hi:
            return np.pad(seq[lo:hi], ((lo - start, end - hi), (0, 0), (0, 0)), "edge")
        return seq[lo:hi]

    def item(self, i: int, start: int, flip: bool):
        """(window 2D, target 3D) of one item as float64 arrays (3D root not zeroed)."""
        w = self._window(self.p2[i], start - self.pad - self.cs, start + self.L + self.pad - self.cs).astype(np.float64)
        y = self._window(self.p3[i], start, start + self.L).astype(np.float64)
        if flip:
            w[:, :, 0] *= -1
            w[:, self.kl + self.kr] = w[:, self.kr + self.kl]
            y[:, :, 0] *= -1
            y[:, self.jl + self.jr] = y[:, self.jr + self.jl]
        return w, y

    def batch(self, b: int):
        idx = self.order[b * self.batch_size:(b + 1) * self.batch_size]
        for k, j in enumerate(idx):
            i, start, flip = self.items[j]
            s2 = start - self.pad - self.cs
            self.buf2[k] = self._window(self.p2[i], s2, s2 + self.L + 2 * self.pad)
            if flip:
                self.buf2[k, :, :, 0] *= -1
                self.buf2[k, :, self.kl + self.kr] = self.buf2[k, :, self.kr + self.kl]
            self.buf3[k] = self._window(self.p3[i], start, start + self.L)
            if flip:
                self.buf3[k, :, :, 0] *= -1
                self.buf3[k, :, self.jl + self.jr] = self.buf3[k, :, self.jr + self.jl]
        n = len(idx)
        x = torch.from_numpy(self.buf2[:n].astype("float32"))
        y = torch.from_numpy(self.buf3[:n].astype("float32"))
        y[:, :, 0] = 0
        return x, y


def load_training_split(data_dir=None, keypoints: str = "det"):
    """The synthetic data's training split (S1, S5-S8, those present): (poses_2d, poses_3d, flip symmetry)."""
    from fastlift import data
    from fastlift.data.synthetic import ensure_synthetic

    if data_dir is not None and data.dataset_path(data_dir, "synthetic").is_file() \
            and data.keypoints_path(data_dir, "synthetic", keypoints).is_file():
        root = data_dir  # an existing synthetic set (e.g. a smaller one generated for a smoke test)
    else:
        root = ensure_synthetic(data_dir)
    ds, kp = data.load("synthetic", keypoints, data_dir=root)
    tr = data.fetch(ds, kp, [s for s in data.H36M_TRAIN_SUBJECTS if s in kp])
    sym = {"kps_left": kp.keypoints_left, "kps_right": kp.keypoints_right,
           "joints_left": list(ds.skeleton().joints_left), "joints_right": list(ds.skeleton().joints_right)}
    return tr.poses_2d, tr.poses_3d, sym


def _median_ms(times) -> float:
    return statistics.median(times) * 1000


def run_sampler_benchmark(batch: int = 1024, arc=(3, 3, 3, 3, 3), rounds: int = 7, batches_per_round: int = 3,
                          device="cpu", data_dir=None, seed: int = 0, threads: int | None = None) -> dict:
    """Per-batch time of the numpy loop vs :class:`WindowSampler` on the synthetic training split.

    Rounds alternate the two builders (``batches_per_round`` batches each) so background load hits
    both alike; the reported figures are medians over all timed batches. ``threads`` sets torch's
    intra-op threads for the run (restored afterwards); the gather is memory-bound, and on a busy
    machine one thread avoids the oversubscription that slows a multi-threaded copy.
    """
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run_sampler_benchmark(batch, arc, rounds, batches_per_round, device, data_dir, seed)
    finally:
        torch.set_num_threads(old_threads)


def _run_sampler_benchmark(batch, arc, rounds, batches_per_round, device, data_dir, seed) -> dict:
    from fastlift.train.sampler import WindowSampler

    rf = int(np.prod(arc))
    pad = (rf - 1) // 2
    p2, p3, sym = load_training_split(data_dir)
    device = torch.device(device)
    host = NumpyWindowBatches(p2, p3, pad=pad, batch_size=batch, augment=True, **sym)
    sampler = WindowSampler(p2, p3, pad=pad, batch_size=batch, augment=True, seed=seed, device=device, **sym)

    # Same windows: a sampler batch against the numpy builder's per-item windows.
    b = next(sampler.epoch())
    worst = 0.0
    for k in range(0, b.inputs_2d.shape[0], max(1, b.inputs_2d.shape[0] // 64)):
        w, y = host.item(int(b.sequence[k]), int(b.start[k]), bool(b.flipped[k]))
        y[:, 0] = 0
        worst = max(worst, float(np.abs(b.inputs_2d[k].cpu().numpy() - w).max()),
                    float(np.abs(b.poses_3d[k].cpu().numpy() - y).max()))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t_np, t_dev = [], []
    it = sampler.epoch()
    host.batch(0)  # warm-up (first-touch page faults of the buffers)
    next(it)
    nb = 1
    for r in range(rounds):
        for j in range(batches_per_round):
            t0 = time.perf_counter()
            host.batch((r * batches_per_round + j + 1) % (host.num_batches - 1))
            t_np.append(time.perf_counter() - t0)
        for j in range(batches_per_round):
            if nb >= sampler.num_batches - 1:
                it = sampler.epoch()
                nb = 0
            sync()
            t0 = time.perf_counter()
            bt = next(it)
            sync()
            t_dev.append(time.perf_counter() - t0)
            nb += 1
            del bt
    out = {
        "benchmark": "batch construction (1f model windows, flip augmentation)",
        "batch": batch, "receptive_field": rf, "window_frames": rf, "joints": int(p2[0].shape[1]),
        "sequences": len(p2), "frames": int(sum(p.shape[0] for p in p2)),
        "numpy_loop_ms_per_batch": _median_ms(t_np),
        "window_sampler_ms_per_batch": _median_ms(t_dev),
        "speedup": _median_ms(t_np) / _median_ms(t_dev),
        "max_abs_window_difference": worst,
        "timed_batches_each": len(t_np),
        "machine": machine_info(device),
    }
    return out


# ----------------------------------------------------------------------------------------- epoch breakdown
def run_epoch_breakdown(device=None, batch: int = 1024, arc=(3, 3, 3, 3, 3), channels: int = 1024, steps: int = 20,
                        warmup: int = 3, precision: str = "fp32", data_dir=None, allow_cpu: bool = False,
                        seed: int = 0) -> dict:
    """Training-step phase times (ms) of the reference recipe vs fastlift's, and epoch estimates.

    * reference: :class:`NumpyWindowBatches` on the host + copy to the device, eager fp32
      :class:`fastlift.reference.TemporalModelOptimized1f`, Adam(amsgrad);
    * fastlift: :class:`WindowSampler` on the device, :class:`fastlift.TemporalModelOptimized1f`
      (``impl="auto"``: the fused kernels on CUDA), fp32 or bf16 autocast, same optimizer.

    Each phase is bracketed by device synchronisation (so phases add up to slightly more than an
    unsynchronised step); ``step_ms`` is measured separately without the intermediate syncs. Epoch
    estimates multiply by the number of batches of one epoch of the synthetic training split with
    flips. Without CUDA returns ``{"skipped": ...}`` unless ``allow_cpu`` (then it runs on the CPU,
    useful only as a smoke test with tiny sizes).
    """
    from fastlift import reference as R
    from fastlift.model import TemporalModelOptimized1f
    from fastlift.train.sampler import WindowSampler

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda" and not allow_cpu:
        return {"skipped": f"needs a CUDA device (got {device}); pass allow_cpu=True for a CPU smoke run"}
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
    rf = int(np.prod(arc))
    pad = (rf - 1) // 2
    p2, p3, sym = load_training_split(data_dir)
    j_in, j_out = int(p2[0].shape[1]), int(p3[0].shape[1])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def loss_fn(pred, y):
        return torch.mean(torch.linalg.vector_norm(pred.float() - y, dim=-1))

    def measure(model, get_batch, autocast):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
        model.train()
        phases = {"data": [], "forward": [], "backward": [], "optimizer": []}
        steps_ms = []
        for s in range(warmup + steps):
            sync()
            t0 = time.perf_counter()
            x, y = get_batch()
            sync()
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                pred = model(x)
            loss = loss_fn(pred, y)
            sync()
            t2 = time.perf_counter()
            loss.backward()
            sync()
            t3 = time.perf_counter()
            opt.step()
            sync()
            t4 = time.perf_counter()
            if s >= warmup:
                for k, dt in zip(list(phases), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    phases[k].append(dt * 1000)
        for s in range(steps):  # whole steps, no intermediate syncs
            sync()
            t0 = time.perf_counter()
            x, y = get_batch()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                pred = model(x)
            loss_fn(pred, y).backward()
            opt.step()
            sync()
            steps_ms.append((time.perf_counter() - t0) * 1000)
        out = {f"{k}_ms": statistics.median(v) for k, v in phases.items()}
        out["step_ms"] = statistics.median(steps_ms)
        return out

    host = NumpyWindowBatches(p2, p3, pad=pad, batch_size=batch, augment=True, **sym)
    counter = {"b": 0}

    def host_batch():
        x, y = host.batch(counter["b"] % (host.num_batches - 1))
        counter["b"] += 1
        return x.to(device), y.to(device)

    torch.manual_seed(seed)
    ref_model = R.TemporalModelOptimized1f(j_in, 2, j_out, list(arc), dropout=0.25, channels=channels).to(device)
    reference = measure(ref_model, host_batch, False)

    sampler = WindowSampler(p2, p3, pad=pad, batch_size=batch, augment=True, seed=seed, device=device, **sym)
    state = {"it": sampler.epoch(), "n": 0}

    def dev_batch():
        if state["n"] >= sampler.num_batches - 1:
            state["it"], state["n"] = sampler.epoch(), 0
        state["n"] += 1
        b = next(state["it"])
        return b.inputs_2d, b.poses_3d

    torch.manual_seed(seed)
    fl_model = TemporalModelOptimized1f(j_in, 2, j_out, list(arc), dropout=0.25, channels=channels).to(device)
    fastlift = measure(fl_model, dev_batch, precision == "bf16")
    batches = sampler.num_batches
    res = {
        "benchmark": "training epoch breakdown (1f model, batch of receptive-field windows)",
        "batch": batch, "receptive_field": rf, "channels": channels, "precision_fastlift": precision,
        "batches_per_epoch": batches, "frames_per_epoch": sampler.frames_per_epoch,
        "reference": reference, "fastlift": fastlift,
        "reference_epoch_s": reference["step_ms"] * batches / 1000,
        "fastlift_epoch_s": fastlift["step_ms"] * batches / 1000,
        "speedup": reference["step_ms"] / fastlift["step_ms"],
        "machine": machine_info(device),
    }
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastlift.bench.bench_sampler", description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--arc", default="3,3,3,3,3", help="filter widths (default 3,3,3,3,3 = 243 frames)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--device", default="cpu", help="device of the window sampler (default cpu)")
    p.add_argument("--threads", type=int, help="torch intra-op threads for the sampler run (default: torch's)")
    p.add_argument("--epoch-breakdown", action="store_true", help="also time training steps (needs CUDA)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--json", help="write the results to this file")
    a = p.parse_args(argv)
    arc = tuple(int(v) for v in a.arc.split(","))
    res = {"sampler": run_sampler_benchmark(a.batch, arc, a.rounds, device=a.device, threads=a.threads)}
    s = res["sampler"]
    print(f"batch {s['batch']} x {s['window_frames']} frames: numpy loop {s['numpy_loop_ms_per_batch']:.1f} ms, "
          f"window sampler {s['window_sampler_ms_per_batch']:.2f} ms -> {s['speedup']:.1f}x "
          f"({s['machine']['cpu']}, {s['machine']['torch_threads']} threads, load {s['machine'].get('load_average_1m')})")
    if a.epoch_breakdown:
        res["epoch"] = run_epoch_breakdown(batch=a.batch, arc=arc, precision=a.precision)
        print(json.dumps(res["epoch"], indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
