"""What ``run.py`` does, as one function: train and/or evaluate and/or render.

``fastlift train`` accepts every ``run.py`` command line: without ``--evaluate`` it trains (or
resumes with ``-r``), then runs the final evaluation (or, with ``--render``, renders the chosen
video); with ``--evaluate FILE`` it loads that checkpoint and evaluates (or renders) it.
``fastlift evaluate`` and ``fastlift render`` are the same with ``--evaluate`` required /
``--render`` implied.

Under torchrun (``WORLD_SIZE > 1``) training and evaluation are data-parallel (see
:mod:`fastlift.train.distributed`): every rank runs this function, rank 0 alone logs and writes
files, and after an elastic restart training resumes from the newest checkpoint in ``-c``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

from fastlift.checkpoint import stored_architecture
from fastlift.train import args as targs
from fastlift.train.checkpoint import checkpoint_path, load_checkpoint, load_model_state
from fastlift.train.distributed import SINGLE, latest_checkpoint, setup
from fastlift.train.evaluate import (SequenceSet, final_evaluation, format_table, mean_pose_baseline, write_json)
from fastlift.train.experiment import frames_of, load_experiment

__all__ = ["main", "evaluate_checkpoint_models"]


def _log(line: str) -> None:
    print(line, flush=True)


def main(args, mode: str = "train", log: Callable[[str], None] = _log) -> dict:
    """Run the flags ``args`` in ``mode`` (``train``, ``evaluate`` or ``render``).

    Returns a dict with what was produced: ``report`` (evaluation numbers), ``history``
    (training), ``trainer`` (training), ``checkpoint`` (loaded file), ``render`` (paths).
    """
    if mode == "render":
        args.render = True
    targs.validate(args, mode)
    dist = setup(args, mode)
    try:
        return _main(args, mode, log, dist)
    finally:
        dist.shutdown()


def _main(args, mode: str, log: Callable[[str], None], dist) -> dict:
    if dist.enabled and args.render:
        raise ValueError("--render: rendering runs in one process; start it without torchrun / --nproc-per-node")
    if not dist.is_main:
        log = _quiet
    if dist.enabled:
        log(f"Distributed: {dist.world_size} processes ({dist.backend}), global batch -b {args.batch_size}, "
            f"BatchNorm {'synced over the global batch' if dist.sync_bn else 'per process'}")
    if dist.restart_count > 0 and not args.evaluate and mode == "train":
        # torchrun restarted the group after a failure: continue from the newest checkpoint (rank 0
        # decides, so every rank resumes from the same file).
        latest = dist.all_gather_object(str(latest_checkpoint(args.checkpoint) or ""))[0]
        if latest:
            log(f"Elastic restart {dist.restart_count}: resuming from {latest}")
            args.resume = latest
        else:
            log(f"Elastic restart {dist.restart_count}: no checkpoint in {args.checkpoint} yet, starting over")
    targs.check_outputs(args, mode)  # before any data or checkpoint is loaded (after an elastic restart picked its -r)
    result: dict = {}
    ckpt = None
    if args.evaluate or args.resume:
        path = checkpoint_path(args.checkpoint, args.evaluate or args.resume)
        log(f"Loading checkpoint {path}")
        ckpt = load_checkpoint(path, map_location="cpu", trust=args.trust_checkpoint)
        if "model_pos" not in ckpt:
            raise ValueError(f"checkpoint: {str(path)!r} has no 'model_pos' entry (keys: {sorted(ckpt)})")
        log(f"This model was trained for {ckpt.get('epoch', '?')} epochs")
        fl = ckpt.get("fastlift")
        ws = ((fl.get("distributed") or {}).get("world_size") if isinstance(fl, dict) else None) or 1
        if ws != dist.world_size:
            log(f"INFO: the checkpoint was written by a run of {ws} process(es); continuing on {dist.world_size} (the "
                f"sampler state is global, so the data order does not change)")
        result["checkpoint"] = str(path)
    targs.finalize_architecture(args, stored_architecture(ckpt))
    training = not args.evaluate
    exp = load_experiment(args, need_train=training, need_test=training or not args.render)
    log(f"Dataset {exp.name!r} ({exp.data_dir}), keypoints {exp.keypoints_name!r} ({exp.layout_name} layout, "
        f"{exp.num_joints_in} joints); device {args.device}, impl {args.impl}, precision {args.precision}")

    if training:
        from fastlift.train.loop import Trainer

        trainer = Trainer(args, exp, log=log, dist=dist)
        if ckpt is not None:
            trainer.load_state_dict(ckpt, result["checkpoint"])
        models = trainer.models
        nparams = sum(p.numel() for p in trainer.model_pos.parameters())
        log(f"INFO: Receptive field: {trainer.receptive_field} frames")
        if args.causal:
            log("INFO: Using causal convolutions")
        log(f"INFO: Trainable parameter count: {nparams}")
        log(f"INFO: Training on {frames_of(exp.train)} frames ({trainer.sampler.frames_per_epoch} output frames per epoch "
            f"with flipped copies, {trainer.sampler.num_batches} batches of {trainer.sampler.batch_size} examples)")
        if exp.test is not None:
            log(f"INFO: Testing on {frames_of(exp.test)} frames")
        if exp.semi is not None:
            log(f"INFO: Semi-supervision on {frames_of(exp.semi)} frames")
        result["history"] = trainer.fit()
        result["trainer"] = trainer
        epoch = trainer.epoch
    else:
        from fastlift.train.loop import build_models

        has_traj = ckpt.get("model_traj") is not None
        models = build_models(args, exp.num_joints_in, exp.in_features, exp.num_joints_out, train=False,
                              trajectory=has_traj)
        load_model_state(models["model_pos"], ckpt["model_pos"], "model_pos")
        if has_traj:
            load_model_state(models["model_traj"], ckpt["model_traj"], "model_traj")
        for m in models.values():
            m.eval()
        epoch = ckpt.get("epoch")

    if args.render:
        from fastlift.train.render import render_from_args

        log("Rendering...")
        result["render"] = render_from_args(args, exp, models, log=log)
        return result

    log("Evaluating...")
    report = evaluate_checkpoint_models(args, exp, models, dist=dist)
    report["epoch"] = epoch
    report["checkpoint"] = result.get("checkpoint")
    if training and exp.train is not None:
        report["mean_pose_baseline"] = {"mpjpe": mean_pose_baseline(exp.train.poses_3d, exp.test.poses_3d)}
        report["history"] = result["history"]
    log(format_table(report))
    out = targs.evaluation_json_path(args)
    if dist.is_main:
        write_json(out, report)
        log(f"Wrote {out}")
    result["report"] = report
    result["report_path"] = str(out)
    return result


def _quiet(line: str) -> None:
    """Log of ranks other than 0: one log per run."""


def evaluate_checkpoint_models(args, exp, models, dist=SINGLE) -> dict:
    """The final evaluation of ``models`` on ``exp.test`` with the flags' TTA/by-subject settings
    (``dist``: data-parallel ranks share the inference; the same report on every rank)."""
    mp = models["model_pos"]
    mp.eval()
    mt = models.get("model_traj")
    if mt is not None:
        mt.eval()
    rf = mp.receptive_field()
    pad = (rf - 1) // 2
    seqset = SequenceSet.from_split(exp.test, pad, pad if args.causal else 0, exp, torch.device(args.device))
    report = final_evaluation(seqset, mp, exp.joints_left, exp.joints_right, tta=args.test_time_augmentation,
                              by_subject=args.by_subject, model_traj=mt, frames_per_call=args.eval_frames,
                              autocast_dtype=torch.bfloat16 if args.precision == "bf16" else None, dist=dist)
    report.update({"dataset": exp.name, "keypoints": exp.keypoints_name, "subjects_test": args.subjects_test,
                   "action_filter": args.actions, "receptive_field": rf, "architecture": args.architecture,
                   "channels": args.channels, "causal": bool(args.causal), "dense": bool(args.dense),
                   "device": str(args.device), "impl": args.impl, "precision": args.precision})
    return report


def run_cli(args, mode: str) -> int:
    """Entry used by the ``cli_*`` modules; returns the exit status."""
    main(args, mode)
    sys.stdout.flush()
    return 0
