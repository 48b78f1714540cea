"""``fastlift infer``: lift in-the-wild 2D keypoints (e.g. ``data_2d_custom_<name>.npz``) to 3D.

Input: a 2D file in the VideoPose3D layout (``positions_2d``: video -> action -> list per camera
of ``(T, J, 2)`` pixel coordinates; ``metadata`` with ``layout_name``, ``keypoints_symmetry`` and,
for in-the-wild files, ``video_metadata`` -> ``{'w', 'h'}`` per video). Keypoints are normalised
with each video's resolution (or ``--resolution W H``), lifted with whole-sequence inference
(edge padding, test-time flipping unless ``-no-tta``) and written as an ``.npz`` with
``positions_3d`` (the input's nesting, ``(T, J_out, 3)`` float32 camera-space metres, root-relative
unless the checkpoint has a trajectory model, whose prediction is then added) and ``metadata``
(joint layout, skeleton parents, flip symmetry, whether the trajectory was added, the source
files).

Keypoint layouts: Detectron-style detections are in the COCO layout. A model trained on
Human3.6M-layout keypoints (every fastlift checkpoint records its layout) gets the COCO
keypoints converted with :func:`coco_to_h36m` (``--convert auto``, the default); checkpoints
that record no layout (the reference's) are assumed to take the file's layout as is, as the
reference's in-the-wild pipeline does (its COCO-trained checkpoints take COCO keypoints).

The reading, normalisation and conversion are :mod:`fastlift.lift_input`, shared with
``fastlift stream``. The output goes to ``-o/--out`` (default ``<input stem>_3d.npz`` in the
current folder); an existing file is replaced only with ``--overwrite``, an input never.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastlift._files import atomic_savez, object_entry
from fastlift.data.io import read_keypoints
from fastlift.lift_input import (COCO_TO_H36M_DIRECT, add_input_arguments, coco_to_h36m,  # noqa: F401 (re-exported)
                                 nest_outputs, output_metadata, read_lift_input)
from fastlift.skeleton import H36M_17

__all__ = ["coco_to_h36m", "add_arguments", "run", "lift_file", "COCO_TO_H36M_DIRECT", "default_output"]


def add_arguments(p) -> None:
    import argparse

    from fastlift.cli_common import (add_checkpoint_dir_argument, add_device_argument, add_impl_argument,
                                     add_model_argument, add_out_argument, add_overwrite_argument,
                                     add_precision_argument, add_trust_arguments)
    from fastlift.train.args import PRECISIONS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("example: fastlift infer --input data/data_2d_custom_myvideos.npz -c checkpoint --model "
                "epoch_60.bin -o myvideos_3d.npz")
    add_input_arguments(p)
    add_checkpoint_dir_argument(p)
    add_model_argument(p, run_py_alias=True, dest="evaluate",
                       help_extra=" (--evaluate: run.py's name); default: the shipped pretrained lifter "
                                  "(fastlift.pretrained: 'symmetric', or 'causal' with --causal)")
    add_out_argument(p, output_alias=True, help_text="output npz (default: <input stem>_3d.npz in the current folder)")
    add_overwrite_argument(p)
    p.add_argument("-arc", "--architecture", default=None, metavar="LAYERS",
                   help="filter widths (default: from the checkpoint's weights)")
    p.add_argument("-ch", "--channels", default=None, type=int, metavar="N",
                   help="channels (default: from the checkpoint's weights)")
    p.add_argument("--causal", action="store_true", default=None, help="the checkpoint is a causal model")
    p.add_argument("--dense", action="store_true", default=None, help="the checkpoint is a dense model")
    p.add_argument("-no-tta", "--no-test-time-augmentation", dest="test_time_augmentation", action="store_false",
                   help="disable test-time flipping")
    p.add_argument("--no-trajectory", dest="trajectory", action="store_false",
                   help="do not add the trajectory model's prediction even if the checkpoint has one")
    add_device_argument(p)
    add_impl_argument(p)
    add_precision_argument(p, PRECISIONS, "fp32", help_text="fp32 or bf16 autocast")
    add_trust_arguments(p)


def default_output(input_path, suffix: str) -> Path:
    """``<input stem><suffix>`` in the current folder (where ``infer``/``stream`` write by default)."""
    return Path(Path(input_path).stem + suffix)


def _build(ckpt: dict, args, key: str):
    """The checkpoint's ``key`` lifter (fastlift's fused model, ``--impl``) on ``args.device``, eval mode:
    architecture from the weights and the checkpoint's record, completed/checked by the flags."""
    from fastlift.checkpoint import lifter_from_checkpoint
    from fastlift.train.args import parse_architecture

    widths = parse_architecture(args.architecture) if args.architecture is not None else None
    model, _ = lifter_from_checkpoint(ckpt, key=key, impl=args.impl, filter_widths=widths, channels=args.channels,
                                      causal=args.causal, dense=args.dense)
    return model.to(torch.device(args.device)).eval()


def lift_file(args, log=print) -> dict:
    """Lift every sequence of ``args.input``; returns ``{"output": path, "sequences": n, ...}``."""
    from fastlift.checkpoint import stored_architecture
    from fastlift.cli_common import check_device, check_impl, check_output_file, check_precision
    from fastlift.train.args import PRECISIONS
    from fastlift.train.checkpoint import checkpoint_path, load_checkpoint
    from fastlift.train.evaluate import SequenceSet

    args.device = str(check_device(args.device))
    check_impl(args.impl)
    check_precision(args.precision, PRECISIONS)
    if args.channels is not None and args.channels < 1:
        raise ValueError(f"-ch/--channels: expected a positive integer, got {args.channels}")
    src = Path(args.input)
    if not src.is_file():
        raise FileNotFoundError(f"--input: no such file: {str(src)!r}")
    if args.evaluate:
        ckpt_file = checkpoint_path(args.checkpoint, args.evaluate)
        if not ckpt_file.is_file():
            raise FileNotFoundError(f"--model: no such file {args.evaluate!r}"
                                    + (f" (looked for {str(ckpt_file)!r})" if str(ckpt_file) != args.evaluate else ""))
    else:
        from fastlift.hub import pretrained_path

        ckpt_file = pretrained_path("causal" if args.causal else "symmetric")
    dst = check_output_file(args.out if args.out else default_output(src, "_3d.npz"), "-o/--out",
                            inputs=[src, ckpt_file], overwrite=args.overwrite)
    kp = read_keypoints(src)
    ckpt = load_checkpoint(ckpt_file, trust=args.trust_checkpoint if args.evaluate else False, what="--model")
    if "model_pos" not in ckpt:
        raise ValueError(f"--model: {str(ckpt_file)!r} has no 'model_pos' entry (keys: {sorted(ckpt)})")
    meta = stored_architecture(ckpt)
    model_pos = _build(ckpt, args, "model_pos")
    model_traj = None
    if args.trajectory and ckpt.get("model_traj") is not None:
        model_traj = _build(ckpt, args, "model_traj")

    prepared = read_lift_input(kp, model_layout=meta.get("keypoints_layout"), convert=args.convert,
                               resolution=args.resolution)
    if prepared.num_joints != model_pos.num_joints_in:
        raise ValueError(f"--input: {prepared.num_joints} keypoints per frame, the checkpoint's model takes "
                         f"{model_pos.num_joints_in}")
    j_out = model_pos.num_joints_out
    joints_left, joints_right = meta.get("joints_left"), meta.get("joints_right")
    if joints_left is None:
        if j_out != H36M_17.num_joints:
            raise ValueError(f"--model: {j_out} output joints and no recorded flip symmetry; use -no-tta")
        joints_left, joints_right = list(H36M_17.joints_left), list(H36M_17.joints_right)

    framing = (ckpt.get("fastlift") or {}).get("framing") if isinstance(ckpt.get("fastlift"), dict) else None
    if framing:
        from fastlift.hub import reframe
    pad = (model_pos.receptive_field() - 1) // 2
    dev = torch.device(args.device)
    ac = torch.bfloat16 if args.precision == "bf16" else None
    outputs = []
    count = frames = 0
    for _, _, _, x in prepared.entries:
        if x is None:
            outputs.append(None)
            continue
        if framing:  # the shipped lifters record their training data's framing (fastlift.pretrained)
            x = reframe(x, framing)
        seqset = SequenceSet([x], pad=pad, causal_shift=pad if model_pos.causal else 0, kps_left=prepared.kps_left,
                             kps_right=prepared.kps_right, device=dev)
        pred = seqset.predict_tta(model_pos, (joints_left, joints_right), args.test_time_augmentation,
                                  autocast_dtype=ac)
        if model_traj is not None:
            pred = pred + seqset.predict_tta(model_traj, None, args.test_time_augmentation, autocast_dtype=ac)
        outputs.append(pred.cpu().numpy().astype(np.float32))
        count += 1
        frames += x.shape[0]
    metadata = output_metadata(prepared, joints_out=j_out, parents=meta.get("parents"),
                               joints_symmetry=[list(joints_left), list(joints_right)], trajectory=model_traj is not None,
                               checkpoint=str(ckpt_file), test_time_augmentation=args.test_time_augmentation,
                               command="infer", reframed=bool(framing))
    atomic_savez(dst, positions_3d=object_entry(nest_outputs(prepared.entries, outputs)),
                 metadata=object_entry(metadata))
    log(f"Lifted {count} sequence(s), {frames} frames ({prepared.layout_in} keypoints"
        f"{', converted to h36m' if prepared.convert == 'coco-to-h36m' else ''}) -> {dst}")
    return {"output": str(dst), "sequences": count, "frames": frames, "converted": prepared.convert}


def run(args) -> int:
    lift_file(args)
    return 0
