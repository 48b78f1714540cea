"""Data-parallel throughput: training samples/s with 1 and N torchrun processes (not a test).

Runs ``fastlift train --nproc-per-node P`` (torchrun, DDP) for each ``P`` on the synthetic data
with the same global batch, takes the training throughput the run logs for every epoch after the
first (warm-up), and writes ``bench/results/ddp-<device>.json``::

    python -m fastlift.bench.ddp_scaling --procs 1,2 -e 3 -b 512 -ch 64

Samples are output frames (one 1f example = one frame; flipped copies count). The runs are
sequential, each in fresh processes; on a shared machine say how loaded it was (``--note``).
Scaling efficiency = ``throughput(P) / (P * throughput(1))``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fastlift._files import atomic_write_text
from fastlift.bench.machine import device_slug, host_info

RESULTS = Path(__file__).resolve().parent / "results"


def run_once(procs: int, train_flags: list[str], workdir: Path) -> dict:
    ck = workdir / f"p{procs}"
    cmd = [sys.executable, "-m", "fastlift", "train", "--nproc-per-node", str(procs), "-c", str(ck), "--no-progress",
           "--no-eval", *train_flags]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    hist = json.loads((ck / "history.json").read_text())
    fps = hist["train_frames_per_s"]
    steady = fps[1:] if len(fps) > 1 else fps
    return {"processes": procs, "samples_per_s": sum(steady) / len(steady), "per_epoch_samples_per_s": fps,
            "wall_s": wall, "final_loss_3d_train_mm": hist["loss_3d_train"][-1] * 1000}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastlift.bench.ddp_scaling", description=__doc__.splitlines()[0])
    p.add_argument("--procs", default="1,2", help="comma list of process counts (default 1,2)")
    p.add_argument("-e", "--epochs", type=int, default=3)
    p.add_argument("-b", "--batch-size", type=int, default=512, help="global batch (frames)")
    p.add_argument("-ch", "--channels", type=int, default=64)
    p.add_argument("-arc", "--architecture", default="3,3,3")
    p.add_argument("--subset", type=float, default=0.3)
    p.add_argument("--note", default="", help="free text stored with the result (machine load, ...)")
    p.add_argument("-o", "--out", default=None, help="output JSON (default bench/results/ddp-<device>.json)")
    a = p.parse_args(argv)
    procs = [int(x) for x in a.procs.split(",") if x.strip()]
    if not procs or min(procs) < 1:
        raise SystemExit(f"--procs: expected positive process counts, got {a.procs!r}")
    flags = ["-arc", a.architecture, "-ch", str(a.channels), "-e", str(a.epochs), "-b", str(a.batch_size),
             "--subset", str(a.subset), "--device", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_once(n, flags, Path(tmp)) for n in procs]
    base = next((r for r in runs if r["processes"] == 1), None)
    for r in runs:
        if base is not None:
            r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
            r["efficiency"] = r["speedup"] / r["processes"]
    out = {"benchmark": "ddp_scaling", "mode": "training step (1f model, flip augmentation), torchrun + DDP (gloo)",
           "device": "cpu", "dtype": "fp32", "impl": "auto (reference math on CPU)", "flags": flags,
           "torch_threads_per_process": 1, "host": host_info("cpu"), "note": a.note, "runs": runs,
           "torch": torch.__version__}
    path = Path(a.out) if a.out else RESULTS / f"ddp-{device_slug('cpu')}.json"
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    for r in runs:
        print(f"{r['processes']} process(es): {r['samples_per_s']:,.0f} samples/s"
              + (f"  speedup {r['speedup']:.2f}x  efficiency {r['efficiency'] * 100:.0f} %" if "speedup" in r else ""))
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
