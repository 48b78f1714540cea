"""Accuracy of a trained lifter per precision: whole sequence and streaming, against ground truth
and against the fp32 reference output.

    python -m fastlift.bench.precision_accuracy --model runs/demo/epoch_4.bin -arc 3,3,3 -ch 128 \\
        --data-dir ~/.cache/fastlift/synthetic-v1 [--precision fp32,bf16] [--json out.json]

For each variant (``reference-fp32`` = the trained model in eval mode, ``fastlift-<p>`` =
:func:`fastlift.fuse` in precision ``p``, ``fastlift-stream-<p>`` = :class:`fastlift.StreamingLifter`
in ``p`` streaming every test sequence frame by frame, all sequences as concurrent streams) it
reports, over all test frames (no test-time flipping, so streaming and whole sequence compare
like for like):

* ``mpjpe_mm``: protocol-1 MPJPE against the ground truth (root joint zeroed, as the
  reference's evaluation);
* ``diff_mean_mm`` / ``diff_max_mm``: mean and max per-joint Euclidean distance between the
  variant's output and the fp32 reference output;
* ``mpjpe_delta_mm``: ``mpjpe_mm`` minus the fp32 reference's.

This is the measurement behind the accuracy table in docs/performance.md and behind the
``auto`` precision's choice of bf16 (:mod:`fastlift.precision`).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import torch

__all__ = ["accuracy_table", "stream_all", "main"]


@torch.no_grad()
def stream_all(engine, poses_2d: list) -> torch.Tensor:
    """Stream every ``(T_i, J, F)`` sequence of ``poses_2d`` through ``engine`` (one slot each, all
    advanced together) and return the poses ``(sum T_i, J_out, 3)`` fp32 in sequence order."""
    if engine.max_streams < len(poses_2d):
        raise ValueError(f"engine: needs max_streams >= {len(poses_2d)} (one slot per sequence), got "
                         f"{engine.max_streams}")
    seqs = [torch.as_tensor(np.asarray(p), dtype=torch.float32) for p in poses_2d]
    lengths = [s.shape[0] for s in seqs]
    slots = [engine.open() for _ in seqs]
    out = [torch.empty(n, engine.num_joints_out, 3) for n in lengths]

    def take(res):
        for row, (s, f) in enumerate(zip(res.slots.tolist(), res.frame_index.tolist())):
            out[slots.index(s)][f] = res.poses[row].float()

    for t in range(max(lengths)):
        live = [i for i, n in enumerate(lengths) if n > t]
        take(engine.push(torch.tensor([slots[i] for i in live]), torch.stack([seqs[i][t] for i in live])))
        for i in live:
            if lengths[i] == t + 1:
                take(engine.close(slots[i]))
    return torch.cat(out)


def accuracy_table(model, poses_2d: list, poses_3d: list, precisions=("fp32", "bf16"), stream: bool = True) -> dict:
    """Per-variant accuracy (see module docstring) of ``model`` (a trained dilated lifter) on
    sequences ``poses_2d[i] (T_i, J_in, F)`` with ground truth ``poses_3d[i] (T_i, J_out, 3)``
    (metres; joint 0 is zeroed here). Returns ``{variant: {mpjpe_mm, diff_mean_mm, diff_max_mm,
    mpjpe_delta_mm}}``."""
    import fastlift
    from fastlift import reference as R
    from fastlift.precision import parse_precision, precision_dtype

    model = model.eval()
    gt = torch.cat([torch.as_tensor(np.asarray(p), dtype=torch.float64) for p in poses_3d])
    gt[:, 0] = 0
    x = [torch.as_tensor(np.asarray(p), dtype=torch.float32) for p in poses_2d]

    preds = {"reference-fp32": torch.cat([R.lift_sequence(model, s) for s in x])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # emulated bf16: the numbers are still right
        for p in precisions:
            p = parse_precision(p, "precisions", ("fp32", "bf16"))
            dt = precision_dtype(p)
            fused = fastlift.fuse(model, dtype=dt)
            preds[f"fastlift-{p}"] = torch.cat([fused.lift(s) for s in x])
            if stream:
                eng = fastlift.StreamingLifter(model, len(x), dtype=dt)
                preds[f"fastlift-stream-{p}"] = stream_all(eng, x)
    base = preds["reference-fp32"].double()
    out = {}
    for name, y in preds.items():
        y = y.double()
        mpjpe = float(torch.linalg.vector_norm(y - gt, dim=-1).mean()) * 1000
        diff = torch.linalg.vector_norm(y - base, dim=-1) * 1000
        out[name] = {"mpjpe_mm": mpjpe, "diff_mean_mm": float(diff.mean()), "diff_max_mm": float(diff.max())}
    ref_mpjpe = out["reference-fp32"]["mpjpe_mm"]
    for v in out.values():
        v["mpjpe_delta_mm"] = v["mpjpe_mm"] - ref_mpjpe
    return out


def format_markdown(table: dict) -> str:
    lines = ["| Variant | MPJPE (mm) | Δ MPJPE vs fp32 (mm) | mean diff to fp32 output (mm) | max diff (mm) |",
             "|---|---|---|---|---|"]
    for name, v in table.items():
        lines.append(f"| {name} | {v['mpjpe_mm']:.2f} | {v['mpjpe_delta_mm']:+.3f} | {v['diff_mean_mm']:.4f} | "
                     f"{v['diff_max_mm']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from fastlift import reference as R
    from fastlift.checkpoint import load_checkpoint
    from fastlift.data.synthetic import ensure_synthetic
    from fastlift.train import args as targs
    from fastlift.train.experiment import load_experiment

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint file (fastlift train's epoch_N.bin)")
    p.add_argument("-arc", "--architecture", default="3,3,3")
    p.add_argument("-ch", "--channels", type=int, default=1024)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--data-dir", default=None, help="synthetic data folder (default: the shared cache)")
    p.add_argument("-ste", "--subjects-test", default="S9,S11", help="test subjects (default S9,S11)")
    p.add_argument("--precision", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--json", default=None, help="also write the table as JSON here")
    a = p.parse_args(argv)
    data_dir = a.data_dir or str(ensure_synthetic(None, seed=0, progress=False))
    ns = targs.validate(targs.parse_args(["-d", "synthetic", "--data-dir", data_dir, "-arc", a.architecture,
                                          "-ch", str(a.channels), "-ste", a.subjects_test, "--evaluate", a.model]),
                        "evaluate")
    exp = load_experiment(ns, need_train=False)
    ck = load_checkpoint(a.model)
    widths = [int(w) for w in a.architecture.split(",")]
    model = R.TemporalModel(exp.num_joints_in, exp.in_features, exp.num_joints_out, widths, causal=a.causal,
                            channels=a.channels)
    model.load_state_dict(ck["model_pos"])
    table = accuracy_table(model, exp.test.poses_2d, exp.test.poses_3d, a.precision.split(","), not a.no_stream)
    print(format_markdown(table))
    if a.json:
        from fastlift._files import atomic_write_text

        atomic_write_text(a.json, json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
