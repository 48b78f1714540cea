"""``fastlift data``: data utilities.

``fastlift data synth --out DIR [--seed S] [--frames N] [--subjects S1 S5 ...] [--actions ...]``
generates the synthetic motion-capture set (:mod:`fastlift.data.synthetic`) and writes
``data_3d_synthetic.npz``, ``data_2d_synthetic_gt.npz`` and ``data_2d_synthetic_det.npz`` (plus
``manifest.json``) into ``DIR``.
"""
from __future__ import annotations

import argparse
import time


def _names(values) -> list[str] | None:
    """``["S1,S5", "S6"]`` -> ``["S1", "S5", "S6"]`` (space- or comma-separated)."""
    if not values:
        return None
    out = []
    for v in values:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("synth", help="generate the synthetic motion-capture data set",
                       description="Generate synthetic Human3.6M-style motion capture (3D + clean and "
                                   "detector-like 2D) in the VideoPose3D file layouts.")
    from fastlift.data.synthetic import DEFAULT_ACTIONS, DEFAULT_FRAMES, FAMILIES, FREEFORM_FAMILIES, SUBJECTS

    from fastlift.cli_common import add_out_argument, add_overwrite_argument

    add_out_argument(p, required=True, metavar="DIR", help_text="output folder (created if missing)")
    add_overwrite_argument(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same data")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, metavar="N",
                   help=f"frames per action at 50 fps (default {DEFAULT_FRAMES})")
    p.add_argument("--subjects", nargs="+", metavar="S", default=None,
                   help=f"subjects, space- or comma-separated (default: {' '.join(SUBJECTS)})")
    p.add_argument("--actions", nargs="+", metavar="A", default=None,
                   help=f"actions '<Family> <n>' with Family in {', '.join(FAMILIES + FREEFORM_FAMILIES)}; comma-separated "
                        f"(default: {', '.join(DEFAULT_ACTIONS)})")
    p.add_argument("--coco-layout", action="store_true",
                   help="also write data_2d_synthetic_detcoco.npz: the det keypoints with pelvis, spine, thorax and "
                        "head top rebuilt from COCO-17 joints, as `fastlift video` feeds its lifter (-k detcoco)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from fastlift.cli_common import CliError, check_output_dir
    from fastlift.data import synthetic

    if args.frames < 1:
        raise ValueError(f"--frames: expected a positive number of frames, got {args.frames}")
    # Checked before the (long) generation: a bad or occupied output folder fails at once.
    out = check_output_dir(args.out, "-o/--out")
    names = (synthetic.FILE_3D, synthetic.FILE_2D_GT, synthetic.FILE_2D_DET, synthetic.MANIFEST)
    taken = [n for n in names if (out / n).exists()]
    if taken and not args.overwrite:
        raise CliError(f"-o/--out: {str(out)!r} already holds {', '.join(taken)}; pass --overwrite to replace them")
    kwargs = {"seed": args.seed, "frames_per_action": args.frames}
    subjects = _names(args.subjects)
    if subjects:
        kwargs["subjects"] = subjects
    if args.actions:
        actions = [a.strip() for v in args.actions for a in v.split(",") if a.strip()]
        kwargs["actions"] = actions
    start = time.perf_counter()
    paths = synthetic.write(args.out, progress=not args.quiet, coco_layout=args.coco_layout, **kwargs)
    elapsed = time.perf_counter() - start
    print(f"wrote synthetic data (seed {args.seed}) in {elapsed:.1f} s:")
    for key in ("3d", "gt", "det", "detcoco", "manifest"):
        if key in paths:
            print(f"  {paths[key]}")
    return 0
