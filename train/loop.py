"""Supervised and semi-supervised training epochs (the VideoPose3D recipe), on the device.

:class:`Trainer` reproduces ``run.py``'s training:

* models: with ``-s 1`` (and neither ``--dense`` nor ``--disable-optimizations``) the strided
  single-frame model :class:`fastlift.TemporalModelOptimized1f` is trained and its weights are
  copied into the dilated :class:`fastlift.TemporalModel` for evaluation (same state_dict keys);
  otherwise the dilated/dense model is trained on chunks of ``-s`` output frames. Both are the
  fused drop-in modules, dispatched by ``--impl``;
* optimiser: Adam with ``amsgrad=True`` over the pose (then trajectory) parameters, learning rate
  ``-lr`` multiplied by ``-lrd`` after every epoch;
* BatchNorm momentum decayed exponentially from 0.1 to 0.001 over ``-e`` epochs:
  ``0.1 * exp(-epoch / epochs * ln(0.1 / 0.001))`` after each epoch (and re-applied on resume, which
  the reference forgets to do);
* supervised loss: MPJPE between the predicted and the ground-truth root-relative poses;
* semi-supervised (``-sun``): a trajectory model (one output joint) trained with MPJPE weighted
  by ``1 / z`` of the ground-truth root depth; each step also draws an unlabelled batch (from an
  endless stream), runs both models on the concatenated labelled + unlabelled inputs (BatchNorm
  sees both), and after ``--warmup`` epochs adds the 2D reprojection loss — MPJPE between the
  unlabelled input keypoints and ``project_to_2d`` (``--linear-projection``: the pinhole
  ``project_to_2d_linear``) of predicted pose + predicted trajectory with each clip's camera
  (``--no-proj`` drops it from the total) — and the bone-length term: mean absolute difference
  between the mean bone lengths of the labelled and the unlabelled predictions
  (``--no-bone-length`` drops it). The unlabelled target is the input frame each output frame is
  predicted for (index ``pad + causal_shift`` of the window; the reference uses ``pad``, which is
  off by ``pad`` frames for causal models);
* ``--precision bf16``: the model forward runs under ``torch.autocast`` with bfloat16 (the fused
  kernels compute in bf16 with fp32 accumulation and fp32 BatchNorm statistics); losses are fp32;
* per epoch (unless ``--no-eval``): the reference's evaluation losses on the test set and, in
  eval mode, on the training set (and the unlabelled set), without test-time augmentation.

Data never leaves the device: batches come from :class:`fastlift.train.sampler.WindowSampler`,
losses are accumulated on the device and read back only for the progress bar every few steps
and once per epoch.

Dropout: the reference path uses ``nn.Dropout`` (torch's generator); the fused kernels draw each
step's mask seed from torch's generator of the input's device. Both therefore follow ``--seed``
and the checkpointed RNG states.

Resume: a checkpoint written after epoch ``N`` holds the model, optimizer, samplers and torch
(CPU and accelerator) / numpy / Python RNG states, so ``--resume epoch_N.bin`` continues to
bit-identical weights on the same device with the same flags.

Quick recipe (CPU, synthetic data, about a minute on 2 cores)::

    fastlift train -arc 3,3,3 -ch 64 -e 4 -b 512 --subset 0.5 -c runs/quick
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from fastlift._optional import nvtx_range
from fastlift.camera import project_to_2d, project_to_2d_linear
from fastlift.model import TemporalModel, TemporalModelOptimized1f
from fastlift.train.args import parse_architecture
from fastlift.train.checkpoint import (FORMAT, load_model_state, reference_random_state, rng_state, save_checkpoint,
                                      set_rng_state)
from fastlift.train.distributed import SINGLE, DistContext, convert_sync_batchnorm, wrap_ddp
from fastlift.train.evaluate import SequenceSet, epoch_losses, write_json
from fastlift.train.sampler import WindowSampler

__all__ = ["Trainer", "bn_momentum", "build_models", "INITIAL_MOMENTUM", "FINAL_MOMENTUM", "derive_seed"]

INITIAL_MOMENTUM = 0.1
FINAL_MOMENTUM = 0.001

# Per-purpose offsets mixed into --seed so that every RNG stream is distinct but reproducible.
_SEED_SAMPLER, _SEED_SEMI = 3, 4
_SEED_RANK = 1000  # + rank: torch's generator (dropout) of data-parallel ranks other than 0


def derive_seed(seed: int, purpose: int) -> int:
    """A distinct non-negative 62-bit seed for ``purpose`` from the run's ``--seed``."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + purpose * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    x ^= x >> 31
    return x & ((1 << 62) - 1)


def bn_momentum(epoch: int, epochs: int) -> float:
    """BatchNorm momentum after ``epoch`` completed epochs of ``epochs`` (0.1 -> 0.001)."""
    return INITIAL_MOMENTUM * math.exp(-epoch / epochs * math.log(INITIAL_MOMENTUM / FINAL_MOMENTUM))


def build_models(args, num_joints_in: int, in_features: int, num_joints_out: int, *, train: bool = True,
                 trajectory: bool = False) -> dict:
    """The models ``run.py`` builds from the flags, on ``args.device``.

    Returns a dict with ``model_pos`` (dilated/dense, for evaluation), and when ``train``
    ``model_pos_train`` (the 1f model when eligible), and when ``trajectory`` ``model_traj``
    (+ ``model_traj_train``) with one output joint.
    """
    widths = parse_architecture(args.architecture)
    kw = dict(filter_widths=widths, causal=bool(args.causal), dropout=args.dropout, channels=args.channels,
              impl=args.impl)
    use_1f = not args.disable_optimizations and not args.dense and args.stride == 1
    dev = torch.device(args.device)

    def pair(j_out):
        out = {}
        if train:
            out["train"] = (TemporalModelOptimized1f(num_joints_in, in_features, j_out, **kw) if use_1f
                            else TemporalModel(num_joints_in, in_features, j_out, dense=bool(args.dense), **kw))
        out["eval"] = TemporalModel(num_joints_in, in_features, j_out, dense=bool(args.dense), **kw)
        return {k: m.to(dev) for k, m in out.items()}

    pos = pair(num_joints_out)
    models = {"model_pos": pos["eval"]}
    if train:
        models["model_pos_train"] = pos["train"]
    if trajectory:
        traj = pair(1)
        models["model_traj"] = traj["eval"]
        if train:
            models["model_traj_train"] = traj["train"]
    return models


def architecture_record(args, exp) -> dict:
    """What a checkpoint needs to rebuild its models without flags."""
    return {"filter_widths": parse_architecture(args.architecture), "channels": int(args.channels),
            "causal": bool(args.causal), "dense": bool(args.dense), "num_joints_in": exp.num_joints_in,
            "in_features": exp.in_features, "num_joints_out": exp.num_joints_out,
            "keypoints_layout": exp.layout_name, "kps_left": list(exp.kps_left), "kps_right": list(exp.kps_right),
            "joints_left": list(exp.joints_left), "joints_right": list(exp.joints_right),
            "parents": list(exp.parents), "dataset": exp.name, "keypoints": exp.keypoints_name}


def _adam(params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam with amsgrad; on CUDA the fused (single-kernel) implementation when torch offers it.

    Its state_dict has the same layout either way, so checkpoints move between devices and between
    fastlift and the reference.
    """
    if device.type == "cuda":
        try:
            return torch.optim.Adam(params, lr=lr, amsgrad=True, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr, amsgrad=True)


class Trainer:
    """One training run (see the module docstring).

    Args:
        args: validated flags (:func:`fastlift.train.args.validate` + ``finalize_architecture``).
        exp: the :class:`fastlift.train.experiment.Experiment` (needs ``train``; ``test`` unless
            ``--no-eval``; ``semi`` for semi-supervised training).
        log: callable taking one line of text (default: print to stdout).
        progress: show progress bars (default: ``args.progress`` or whether stderr is a TTY).
        dist: the :class:`fastlift.train.distributed.DistContext` of a data-parallel run (default:
            one process). Models are wrapped in DDP, each rank trains on its share of every global
            batch, per-epoch numbers are global, and only rank 0 writes files.

    Attributes: ``models`` (dict, see :func:`build_models`), ``optimizer``, ``sampler``,
    ``semi_sampler``, ``epoch`` (completed epochs), ``lr``, ``history`` (per-epoch lists, metres).
    """

    def __init__(self, args, exp, log: Callable[[str], None] = print, progress: Optional[bool] = None,
                 dist: DistContext = SINGLE):
        if exp.train is None:
            raise ValueError("exp: the experiment has no training split (load it with need_train=True)")
        self.args, self.exp, self.log = args, exp, log
        self.dist = dist
        self.device = torch.device(args.device)
        self.semi = exp.semi is not None
        self.show_progress = dist.is_main and bool(progress if progress is not None else
                                                   (args.progress if args.progress is not None else sys.stderr.isatty()))
        self.autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
        seed = int(args.seed)
        torch.manual_seed(seed)
        np.random.seed(seed % (2 ** 32))
        random.seed(seed)
        self.models = build_models(args, exp.num_joints_in, exp.in_features, exp.num_joints_out, train=True,
                                   trajectory=self.semi)
        self.model_pos_train = self.models["model_pos_train"]
        self.model_pos = self.models["model_pos"]
        self.model_traj_train = self.models.get("model_traj_train")
        self.model_traj = self.models.get("model_traj")
        sync_bn = dist.enabled and dist.sync_bn
        if sync_bn:  # the reference path's BatchNorm layers; the kernel path syncs inside wrap_ddp
            convert_sync_batchnorm(self.model_pos_train, self.device)
            if self.semi:
                convert_sync_batchnorm(self.model_traj_train, self.device)
        # What the training step calls: DDP replicas (gradients averaged over ranks) or the models.
        self._pos_step = wrap_ddp(self.model_pos_train, dist, self.device, sync_bn)
        self._traj_step = wrap_ddp(self.model_traj_train, dist, self.device, sync_bn) if self.semi else None
        if dist.rank > 0:  # same initial weights on every rank, independent dropout masks
            torch.manual_seed(derive_seed(seed, _SEED_RANK + dist.rank))
        params = list(self.model_pos_train.parameters())
        if self.semi:
            params += list(self.model_traj_train.parameters())
        self.lr = float(args.learning_rate)
        self.optimizer = _adam(params, self.lr, self.device)

        rf = self.model_pos.receptive_field()
        self.receptive_field = rf
        self.pad = (rf - 1) // 2
        self.causal_shift = self.pad if args.causal else 0
        common = dict(chunk_length=args.stride, pad=self.pad, causal_shift=self.causal_shift,
                      batch_size=args.batch_size // args.stride, augment=args.data_augmentation,
                      kps_left=exp.kps_left, kps_right=exp.kps_right, joints_left=exp.joints_left,
                      joints_right=exp.joints_right, device=self.device, rank=dist.rank,
                      world_size=dist.world_size)
        tr = exp.train
        self.sampler = WindowSampler(tr.poses_2d, tr.poses_3d, tr.cameras if self.semi else None,
                                     seed=derive_seed(seed, _SEED_SAMPLER), **common)
        self.semi_sampler = None
        if self.semi:
            self.semi_sampler = WindowSampler(exp.semi.poses_2d, None, exp.semi.cameras, endless=True,
                                              seed=derive_seed(seed, _SEED_SEMI), **common)
            parents = list(exp.parents)
            if parents[0] != -1 or any(p < 0 for p in parents[1:]):
                raise ValueError(f"skeleton: the bone-length term needs joint 0 as the only root, got parents {parents}")
            self._bone_parent = torch.tensor(parents[1:], dtype=torch.long, device=self.device)
        self.eval_sets = {}
        if not args.no_eval:
            if exp.test is None:
                raise ValueError("exp: per-epoch evaluation needs the test split (or pass --no-eval)")
            mk = lambda split: SequenceSet.from_split(split, self.pad, self.causal_shift, exp, self.device)  # noqa: E731
            self.eval_sets["valid"] = mk(exp.test)
            self.eval_sets["train"] = mk(exp.train)
            if self.semi:
                self.eval_sets["semi"] = mk(exp.semi)
        self.epoch = 0
        self.history: dict[str, list] = {}
        self.checkpoint_dir = Path(args.checkpoint)
        # Per-step supervised losses (metres) are kept only when asked: reading one back costs a
        # device synchronisation per step (tests compare loss curves with it).
        self.record_step_losses = False
        self.step_losses: list[float] = []

    # ------------------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def set_momentum(self) -> float:
        m = bn_momentum(self.epoch, self.args.epochs)
        self.model_pos_train.set_bn_momentum(m)
        if self.semi:
            self.model_traj_train.set_bn_momentum(m)
        return m

    def _bone_penalty(self, pred_lab: torch.Tensor, pred_unlab: torch.Tensor) -> torch.Tensor:
        # Mean (over examples and frames) length of every bone; child j = 1..J-1 hangs on parents[j].
        def mean_lengths(p):
            d = p[:, :, 1:] - p[:, :, self._bone_parent]
            return torch.linalg.vector_norm(d, dim=-1).mean(dim=(0, 1))

        return torch.mean(torch.abs(mean_lengths(pred_lab) - mean_lengths(pred_unlab)))

    # ------------------------------------------------------------------------------ one epoch
    def _step_losses(self, batch, unl, x_cat, skip: bool):
        """Forward pass and losses of one step: ``(loss_3d, total, loss_traj or None, loss_2d or None)``."""
        args = self.args
        n_lab = batch.inputs_2d.shape[0]
        with self._autocast():
            pred = self._pos_step(x_cat)
        pred = pred.float()
        loss_3d = torch.mean(torch.linalg.vector_norm(pred[:n_lab] - batch.poses_3d, dim=-1))
        total, loss_traj, loss_2d = loss_3d, None, None
        if self.semi:
            with self._autocast():
                traj = self._traj_step(x_cat)
            traj = traj.float()
            w = 1.0 / batch.trajectory[..., 2]  # (B, L, 1): weight inversely proportional to depth
            loss_traj = torch.mean(w * torch.linalg.vector_norm(traj[:n_lab] - batch.trajectory, dim=-1))
            total = total + loss_traj
            if not skip:
                pred_semi = pred[n_lab:]
                first = self.pad + self.causal_shift  # input frame of the first output frame
                target = unl.inputs_2d[:, first:first + args.stride, :, :2]
                projection = project_to_2d_linear if args.linear_projection else project_to_2d
                rec = projection(pred_semi + traj[n_lab:], unl.cameras)
                loss_2d = torch.mean(torch.linalg.vector_norm(rec - target, dim=-1))
                if not args.no_proj:
                    total = total + loss_2d
                if args.bone_length_term:
                    total = total + self._bone_penalty(pred[:n_lab], pred_semi)
        return loss_3d, total, loss_traj, loss_2d

    def train_epoch(self) -> dict:
        """Run one training epoch; returns the epoch's training losses (metres / screen units)."""
        args = self.args
        self.model_pos_train.train()
        if self.semi:
            self.model_traj_train.train()
        skip = self.epoch < args.warmup
        L = args.stride
        dev = self.device
        zero = lambda: torch.zeros((), device=dev, dtype=torch.float64)  # noqa: E731
        s3d, straj, s2d = zero(), zero(), zero()
        n_frames, n_semi = 0, 0
        bar = None
        if self.show_progress:
            from fastlift._optional import progress

            bar = progress(total=self.sampler.num_batches, desc=f"epoch {self.epoch + 1}/{args.epochs}",
                           unit="batch", leave=False, dynamic_ncols=True)
        t0 = time.perf_counter()
        batches = self.sampler.epoch()
        for step in range(self.sampler.num_batches):
            with nvtx_range("data"):
                batch = next(batches)
                x = batch.inputs_2d
                n_lab = x.shape[0]
                unl = self.semi_sampler.next_batch() if self.semi else None
                x_cat = torch.cat((x, unl.inputs_2d)) if (self.semi and not skip) else x
            self.optimizer.zero_grad(set_to_none=True)
            with nvtx_range("forward"):
                loss_3d, total, loss_traj, loss_2d = self._step_losses(batch, unl, x_cat, skip)
            if loss_traj is not None:
                straj += loss_traj.detach() * (n_lab * L)
            if loss_2d is not None:
                n_unl = unl.inputs_2d.shape[0]
                s2d += loss_2d.detach() * (n_unl * L)
                n_semi += n_unl * L
            if self.dist.enabled:
                # DDP averages gradients over ranks; weighting this rank's labelled mean losses by
                # W * n_rank / n_global makes the average the gradient of the global-batch mean
                # (the shares differ only in an epoch's last batch).
                w = self.dist.world_size * n_lab / self.sampler.global_batch_items(step) - 1.0
                if w != 0.0:
                    total = total + w * (loss_3d + (loss_traj if loss_traj is not None else 0.0))
            with nvtx_range("backward"):
                total.backward()
            with nvtx_range("optimizer"):
                self.optimizer.step()
            s3d += loss_3d.detach() * (n_lab * L)
            n_frames += n_lab * L
            if self.record_step_losses:
                self.step_losses.append(float(loss_3d.detach()))
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step + 1 == self.sampler.num_batches:
                    el = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{float(s3d) / max(n_frames, 1) * 1000:.1f}mm",
                                    fps=f"{n_frames / max(el, 1e-9):,.0f}")
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        if self.dist.enabled:  # global numbers: sums over ranks, the slowest rank's time
            s3d, straj, s2d, n_frames, n_semi = self.dist.all_reduce_sum([s3d, straj, s2d, n_frames, n_semi], dev)
            elapsed = self.dist.all_reduce_max(elapsed, dev)
        out = {"loss_3d_train": float(s3d) / max(n_frames, 1), "train_time": elapsed,
               "train_frames_per_s": n_frames / max(elapsed, 1e-9)}
        if self.semi:
            out["loss_traj_train"] = float(straj) / max(n_frames, 1)
            out["loss_2d_train_unlabeled"] = float(s2d) / max(n_semi, 1)
        return out

    def sync_eval_models(self) -> None:
        """Copy the training weights into the evaluation models (1f -> dilated)."""
        with torch.no_grad():
            self.model_pos.load_state_dict(self.model_pos_train.state_dict())
            self.model_pos.eval()
            if self.semi:
                self.model_traj.load_state_dict(self.model_traj_train.state_dict())
                self.model_traj.eval()

    def evaluate_epoch(self) -> dict:
        """The reference's end-of-epoch losses (no TTA) on test / train / unlabelled sets."""
        out = {}
        if self.args.no_eval:
            return out
        fpc, ac = self.args.eval_frames, self.autocast_dtype
        mt = self.model_traj if self.semi else None
        d = self.dist
        v = epoch_losses(self.eval_sets["valid"], self.model_pos, mt, fpc, ac, dist=d)
        t = epoch_losses(self.eval_sets["train"], self.model_pos, mt, fpc, ac, dist=d)
        out["loss_3d_valid"], out["loss_3d_train_eval"] = v["loss_3d"], t["loss_3d"]
        if self.semi:
            out["loss_traj_valid"], out["loss_traj_train_eval"] = v["loss_traj"], t["loss_traj"]
            out["loss_2d_valid"], out["loss_2d_train_labeled_eval"] = v["loss_2d"], t["loss_2d"]
            s = epoch_losses(self.eval_sets["semi"], self.model_pos, mt, fpc, ac, dist=d)
            out["loss_2d_train_unlabeled_eval"] = s["loss_2d"]
        return out

    # ------------------------------------------------------------------------------ the run
    def fit(self, on_epoch_end: Optional[Callable[["Trainer"], None]] = None) -> dict:
        """Train from ``self.epoch`` to ``args.epochs``; returns the history."""
        args = self.args
        if self.dist.is_main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.set_momentum()
        while self.epoch < args.epochs:
            start = time.perf_counter()
            rec = {"epoch": self.epoch + 1, "lr": self.lr, "bn_momentum": bn_momentum(self.epoch, args.epochs)}
            rec.update(self.train_epoch())
            self.sync_eval_models()
            with nvtx_range("evaluate"):
                rec.update(self.evaluate_epoch())
            rec["time"] = time.perf_counter() - start
            for k, v in rec.items():
                self.history.setdefault(k, []).append(v)
            self.log(self.format_epoch(rec))
            # Decay the learning rate and BatchNorm momentum for the next epoch.
            self.lr *= args.lr_decay
            for group in self.optimizer.param_groups:
                group["lr"] *= args.lr_decay
            self.epoch += 1
            self.set_momentum()
            if self.epoch % args.checkpoint_frequency == 0 or self.epoch == args.epochs:
                path = self.checkpoint_dir / f"epoch_{self.epoch}.bin"
                state = self.state_dict()  # collective under DDP (every rank's RNG state)
                if self.dist.is_main:
                    save_checkpoint(path, state)
                    self.log(f"Saving checkpoint to {path}")
                self.dist.barrier()  # no rank runs ahead of a checkpoint an elastic restart would resume
            if self.dist.is_main:
                write_json(self.checkpoint_dir / "history.json", self.history)
                if args.export_training_curves and self.epoch >= 2:
                    self.export_curves()
            if on_epoch_end is not None:
                on_epoch_end(self)
        self.sync_eval_models()
        return self.history

    def format_epoch(self, rec: dict) -> str:
        """One log line per epoch, in the reference's format (losses in mm, time in minutes)."""
        mm = lambda k: rec[k] * 1000  # noqa: E731
        s = f"[{rec['epoch']}] time {rec['time'] / 60:.2f} min lr {rec['lr']:f} 3d_train {mm('loss_3d_train'):f}"
        if "loss_3d_valid" in rec:
            s += f" 3d_eval {mm('loss_3d_train_eval'):f}"
            if self.semi:
                s += f" traj_eval {mm('loss_traj_train_eval'):f}"
            s += f" 3d_valid {mm('loss_3d_valid'):f}"
            if self.semi:
                s += (f" traj_valid {mm('loss_traj_valid'):f} 2d_train_sup {rec['loss_2d_train_labeled_eval']:f}"
                      f" 2d_train_unsup {rec['loss_2d_train_unlabeled_eval']:f} 2d_valid {rec['loss_2d_valid']:f}")
        return s + f" ({rec['train_frames_per_s']:,.0f} frames/s)"

    # ------------------------------------------------------------------------------ curves
    def export_curves(self) -> list[Path]:
        """Write loss_3d.png (+ loss_traj.png, loss_2d.png when semi-supervised) into the
        checkpoint directory. The first 3 epochs are left out once there are more than 6 (their
        large losses would flatten the rest of the curve, as in the reference)."""
        from fastlift._optional import require

        matplotlib = require("matplotlib", "--export-training-curves")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        h = self.history
        n = len(h["loss_3d_train"])
        s = 3 if n > 6 else 0
        x = np.arange(s, n) + 1
        paths = []

        from matplotlib.ticker import MaxNLocator

        def plot(name, series, ylabel, scale=1.0):
            fig = plt.figure()
            for key, style, color, label in series:
                if key in h:
                    plt.plot(x, np.asarray(h[key][s:]) * scale, style, color=color, label=label, marker=".")
            plt.legend()
            plt.ylabel(ylabel)
            plt.xlabel("Epoch")
            plt.xlim((s + 1, max(n, s + 2)))
            plt.gca().xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
            path = self.checkpoint_dir / name
            tmp = path.with_name(f".{name}.tmp.png")
            fig.savefig(tmp)
            plt.close(fig)
            tmp.replace(path)
            paths.append(path)

        plot("loss_3d.png", [("loss_3d_train", "--", "C0", "3d train"), ("loss_3d_train_eval", "-", "C0",
                             "3d train (eval)"), ("loss_3d_valid", "-", "C1", "3d valid (eval)")], "MPJPE (mm)", 1000.0)
        if self.semi:
            plot("loss_traj.png", [("loss_traj_train", "--", "C0", "traj. train"), ("loss_traj_train_eval", "-", "C0",
                                   "traj. train (eval)"), ("loss_traj_valid", "-", "C1", "traj. valid (eval)")],
                 "Mean distance (mm)", 1000.0)
            plot("loss_2d.png", [("loss_2d_train_labeled_eval", "-", "C0", "2d train labeled (eval)"),
                                 ("loss_2d_train_unlabeled", "--", "C1", "2d train unlabeled"),
                                 ("loss_2d_train_unlabeled_eval", "-", "C1", "2d train unlabeled (eval)"),
                                 ("loss_2d_valid", "-", "C2", "2d valid (eval)")], "MPJPE (2D)")
        return paths

    # ------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:  # noqa: D401 - layout in fastlift.train.checkpoint
        """The checkpoint (see :mod:`fastlift.train.checkpoint` for the layout)."""
        args = self.args
        d = self.dist
        # Every rank's RNG states (dropout masks differ per rank); collective under DDP.
        rng_ranks = d.all_gather_object(rng_state(self.device)) if d.enabled else None
        return {
            "epoch": self.epoch,
            "lr": self.lr,
            # What VideoPose3D's run.py expects here (it calls .permutation/.shuffle on it when resuming
            # with -r); fastlift's own sampler state is under "fastlift"/"sampler".
            "random_state": reference_random_state(args.seed, self.epoch),
            "optimizer": self.optimizer.state_dict(),
            "model_pos": self.model_pos_train.state_dict(),
            "model_traj": self.model_traj_train.state_dict() if self.semi else None,
            "random_state_semi": reference_random_state(args.seed, self.epoch, semi=True) if self.semi else None,
            "fastlift": {
                "format": FORMAT,
                "sampler": self.sampler.state_dict(),
                "sampler_semi": self.semi_sampler.state_dict() if self.semi else None,
                "architecture": architecture_record(args, self.exp),
                "rng": rng_state(self.device) if rng_ranks is None else rng_ranks[0],
                "distributed": {"world_size": d.world_size, "sync_bn": bool(d.enabled and d.sync_bn),
                                "rng_ranks": rng_ranks},
                "history": self.history,
                "args": {k: v for k, v in vars(args).items() if not k.startswith("_")
                         and isinstance(v, (str, int, float, bool, type(None)))},
            },
        }

    def _restore_rng(self, fl: dict) -> None:
        """RNG states of this rank: its own when the checkpoint was written by as many ranks, rank 0's
        (the single-process state) on rank 0, and a fresh per-rank seed otherwise."""
        saved = (fl.get("distributed") or {}).get("rng_ranks")
        rank = self.dist.rank
        if saved is not None and len(saved) == self.dist.world_size:
            set_rng_state(saved[rank], self.device)
        elif rank == 0:
            set_rng_state(fl["rng"], self.device)
        else:
            set_rng_state(fl["rng"], self.device)
            torch.manual_seed(derive_seed(int(self.args.seed) + self.epoch, _SEED_RANK + rank))

    def load_state_dict(self, ckpt: dict, path: str = "checkpoint") -> None:
        """Resume from a fastlift or reference checkpoint (``--resume``)."""
        for key in ("epoch", "model_pos"):
            if key not in ckpt:
                raise ValueError(f"{path}: not a training checkpoint (missing {key!r}; keys: {sorted(ckpt)})")
        load_model_state(self.model_pos_train, ckpt["model_pos"], "model_pos")
        load_model_state(self.model_pos, ckpt["model_pos"], "model_pos")
        if self.semi:
            if ckpt.get("model_traj") is None:
                raise ValueError(f"{path}: -sun/--subjects-unlabeled is set but the checkpoint has no 'model_traj' "
                                 f"(it was trained without semi-supervision)")
            load_model_state(self.model_traj_train, ckpt["model_traj"], "model_traj")
            load_model_state(self.model_traj, ckpt["model_traj"], "model_traj")
        self.epoch = int(ckpt["epoch"])
        self.lr = float(ckpt.get("lr", self.lr))
        if ckpt.get("optimizer") is not None:
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}: the optimizer state does not match this model ({exc})") from None
        else:
            self.log("WARNING: this checkpoint does not contain an optimizer state. The optimizer will be reinitialized.")
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
        fl = ckpt.get("fastlift")
        if isinstance(fl, dict):
            # fastlift >= this layout keeps its sampler state under "fastlift"; earlier files had it
            # under the reference's keys.
            sampler = fl.get("sampler", ckpt.get("random_state"))
            sampler_semi = fl.get("sampler_semi", ckpt.get("random_state_semi"))
            if isinstance(sampler, dict):
                self.sampler.load_state_dict(sampler)
            if self.semi and isinstance(sampler_semi, dict):
                self.semi_sampler.load_state_dict(sampler_semi)
            self._restore_rng(fl)
            self.history = {k: list(v) for k, v in fl.get("history", {}).items()}
        else:
            self.log("INFO: reference checkpoint: its numpy data-order state does not apply to fastlift's device "
                     "sampler; shuffling continues from --seed")
        self.set_momentum()
