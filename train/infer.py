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
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastlift._files import atomic_savez, object_entry
from fastlift.camera import normalize_screen_coordinates
from fastlift.data.io import read_keypoints
from fastlift.skeleton import H36M_17

__all__ = ["coco_to_h36m", "add_arguments", "run", "lift_file", "COCO_TO_H36M_DIRECT"]

#: H36M-17 joint -> COCO keypoint for the joints that exist in both layouts.
COCO_TO_H36M_DIRECT = {1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 9: 0, 11: 5, 12: 7, 13: 9, 14: 6, 15: 8, 16: 10}
# Top of the head above the nose, as a fraction of the thorax->nose vector: in the Human3.6M
# skeleton the head top is about as far above the nose-level head joint as that joint is above
# the thorax (115 mm vs 121 mm).
_HEAD_TOP_FACTOR = 0.95


def coco_to_h36m(kps) -> np.ndarray:
    """COCO-17 keypoints ``(..., 17, D)`` -> Human3.6M-17 layout ``(..., 17, D)``.

    Limbs, hips, shoulders and the nose (Human3.6M's nose-level head joint 9) are copied; the
    pelvis is the mid-hip, the thorax the mid-shoulder, the spine the midpoint of pelvis and
    thorax, and the head top ``nose + 0.95 * (nose - thorax)`` (an approximation: COCO has no
    head-top keypoint).
    """
    k = np.asarray(kps, dtype=np.float32)
    if k.ndim < 2 or k.shape[-2] != 17:
        raise ValueError(f"keypoints: expected COCO-17 keypoints of shape (..., 17, D), got shape {k.shape}")
    out = np.empty_like(k)
    for h, c in COCO_TO_H36M_DIRECT.items():
        out[..., h, :] = k[..., c, :]
    pelvis = (k[..., 11, :] + k[..., 12, :]) / 2
    thorax = (k[..., 5, :] + k[..., 6, :]) / 2
    out[..., 0, :] = pelvis
    out[..., 7, :] = (pelvis + thorax) / 2
    out[..., 8, :] = thorax
    out[..., 10, :] = k[..., 0, :] + _HEAD_TOP_FACTOR * (k[..., 0, :] - thorax)
    return out


def add_arguments(p) -> None:
    import argparse

    from fastlift.train.args import IMPLS, PRECISIONS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("example: fastlift infer --input data/data_2d_custom_myvideos.npz -c checkpoint --evaluate "
                "epoch_60.bin --output myvideos_3d.npz")
    p.add_argument("--input", required=True, metavar="PATH", help="2D keypoints npz (VideoPose3D layout)")
    p.add_argument("-c", "--checkpoint", default="checkpoint", metavar="PATH", help="checkpoint directory")
    p.add_argument("--evaluate", "--model", dest="evaluate", default=None, metavar="FILENAME",
                   help="checkpoint file (name in -c/--checkpoint, or a path); default: the shipped pretrained "
                        "lifter (fastlift.pretrained: 'symmetric', or 'causal' with --causal)")
    p.add_argument("--output", metavar="PATH", help="output npz (default: <input stem>_3d.npz next to the input)")
    p.add_argument("-arc", "--architecture", default=None, metavar="LAYERS",
                   help="filter widths (default: from the checkpoint's weights)")
    p.add_argument("-ch", "--channels", default=None, type=int, metavar="N",
                   help="channels (default: from the checkpoint's weights)")
    p.add_argument("--causal", action="store_true", default=None, help="the checkpoint is a causal model")
    p.add_argument("--dense", action="store_true", default=None, help="the checkpoint is a dense model")
    p.add_argument("-no-tta", "--no-test-time-augmentation", dest="test_time_augmentation", action="store_false",
                   help="disable test-time flipping")
    p.add_argument("--convert", default="auto", choices=["auto", "none", "coco-to-h36m"],
                   help="keypoint layout conversion (default auto: COCO -> Human3.6M when the checkpoint was trained "
                        "on Human3.6M-layout keypoints)")
    p.add_argument("--resolution", type=int, nargs=2, metavar=("W", "H"),
                   help="video resolution for files without metadata['video_metadata']")
    p.add_argument("--no-trajectory", dest="trajectory", action="store_false",
                   help="do not add the trajectory model's prediction even if the checkpoint has one")
    p.add_argument("--device", default=None, help="torch device (default: the available accelerator, else cpu)")
    p.add_argument("--impl", default="auto", choices=IMPLS, help="model implementation (default auto)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32 or bf16 autocast (default fp32)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle arbitrary Python objects in the checkpoint (only for files you trust)")


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
    from fastlift.train.args import default_device
    from fastlift.train.checkpoint import checkpoint_path, load_checkpoint
    from fastlift.train.evaluate import SequenceSet

    if args.device is None:
        args.device = default_device()
    src = Path(args.input)
    if not src.is_file():
        raise FileNotFoundError(f"--input: no such file: {str(src)!r}")
    kp = read_keypoints(src)
    if args.evaluate is None:
        from fastlift.hub import pretrained_path

        ckpt_file = pretrained_path("causal" if args.causal else "symmetric")
        ckpt = load_checkpoint(ckpt_file)
    else:
        ckpt_file = checkpoint_path(args.checkpoint, args.evaluate)
        ckpt = load_checkpoint(ckpt_file, trust=args.trust_checkpoint)
    if "model_pos" not in ckpt:
        raise ValueError(f"checkpoint: {str(ckpt_file)!r} has no 'model_pos' entry (keys: {sorted(ckpt)})")
    meta = stored_architecture(ckpt)
    model_pos = _build(ckpt, args, "model_pos")
    model_traj = None
    if args.trajectory and ckpt.get("model_traj") is not None:
        model_traj = _build(ckpt, args, "model_traj")

    layout_in = kp.layout_name
    layout_model = meta.get("keypoints_layout")
    convert = args.convert
    if convert == "auto":
        convert = "coco-to-h36m" if (layout_in == "coco" and layout_model == "h36m") else "none"
        if convert == "none" and layout_model is not None and layout_model != layout_in:
            raise ValueError(f"--input: keypoints are in the {layout_in!r} layout but the checkpoint was trained on "
                             f"{layout_model!r} keypoints, and fastlift has no conversion between them")
    if convert == "coco-to-h36m":
        if layout_in != "coco" or kp.num_joints != 17:
            raise ValueError(f"--convert coco-to-h36m: the input must be COCO-17 keypoints, got layout {layout_in!r} "
                             f"with {kp.num_joints} joints")
        kps_left, kps_right = list(H36M_17.joints_left), list(H36M_17.joints_right)
        n_in = 17
    else:
        kps_left, kps_right = kp.keypoints_left, kp.keypoints_right
        n_in = kp.num_joints
    if n_in != model_pos.num_joints_in:
        raise ValueError(f"--input: {n_in} keypoints per frame, the checkpoint's model takes {model_pos.num_joints_in}")
    j_out = model_pos.num_joints_out
    joints_left, joints_right = meta.get("joints_left"), meta.get("joints_right")
    if joints_left is None:
        if j_out != H36M_17.num_joints:
            raise ValueError(f"checkpoint: {j_out} output joints and no recorded flip symmetry; use -no-tta")
        joints_left, joints_right = list(H36M_17.joints_left), list(H36M_17.joints_right)
    video_meta = kp.metadata.get("video_metadata") or {}

    framing = (ckpt.get("fastlift") or {}).get("framing") if isinstance(ckpt.get("fastlift"), dict) else None
    if framing:
        from fastlift.hub import reframe
    pad = (model_pos.receptive_field() - 1) // 2
    dev = torch.device(args.device)
    ac = torch.bfloat16 if args.precision == "bf16" else None
    out3d: dict = {}
    count = frames = 0
    for subject, actions in kp.positions.items():
        if args.resolution is not None:
            w, h = args.resolution
        elif subject in video_meta:
            w, h = int(video_meta[subject]["w"]), int(video_meta[subject]["h"])
        else:
            raise ValueError(f"--input: no resolution for video {subject!r} (metadata has no video_metadata entry); "
                             f"pass --resolution W H")
        out3d[subject] = {}
        for action, cams in actions.items():
            res = []
            for arr in cams:
                if arr is None:
                    res.append(None)
                    continue
                x = np.asarray(normalize_screen_coordinates(np.asarray(arr, dtype=np.float32), w=w, h=h),
                               dtype=np.float32)
                if convert == "coco-to-h36m":
                    x = coco_to_h36m(x)
                if framing:
                    # The shipped lifters record their training data's framing (fastlift.pretrained).
                    x = reframe(x, framing)
                seqset = SequenceSet([x], pad=pad, causal_shift=pad if model_pos.causal else 0, kps_left=kps_left,
                                     kps_right=kps_right, device=dev)
                pred = seqset.predict_tta(model_pos, (joints_left, joints_right), args.test_time_augmentation,
                                          autocast_dtype=ac)
                if model_traj is not None:
                    pred = pred + seqset.predict_tta(model_traj, None, args.test_time_augmentation, autocast_dtype=ac)
                res.append(pred.cpu().numpy().astype(np.float32))
                count += 1
                frames += x.shape[0]
            out3d[subject][action] = res
    dst = Path(args.output) if args.output else src.with_name(src.stem + "_3d.npz")
    metadata = {"num_joints": j_out, "layout_name": "h36m" if j_out == 17 else f"{j_out}-joint",
                "parents": list(meta.get("parents", H36M_17.parents if j_out == 17 else [])),
                "joints_symmetry": [list(joints_left), list(joints_right)], "units": "m",
                "space": "camera", "trajectory": model_traj is not None, "input": str(src),
                "checkpoint": str(ckpt_file), "converted": convert, "test_time_augmentation": args.test_time_augmentation,
                "reframed": bool(framing)}
    atomic_savez(dst, positions_3d=object_entry(out3d), metadata=object_entry(metadata))
    log(f"Lifted {count} sequence(s), {frames} frames ({layout_in} keypoints"
        f"{', converted to h36m' if convert == 'coco-to-h36m' else ''}) -> {dst}")
    return {"output": str(dst), "sequences": count, "frames": frames, "converted": convert}


def run(args) -> int:
    lift_file(args)
    return 0
