"""Whole-sequence evaluation: edge padding, test-time flipping, the MPJPE family, tables, JSON.

The reference evaluates one sequence per forward call. :class:`SequenceSet` instead lays every
test sequence out once on the device, edge-padded as the reference pads it (``pad +
causal_shift`` replicated frames on the left, ``pad - causal_shift`` on the right), back to back
in a single bank (plus a mirrored bank for test-time augmentation). A valid convolution over the
concatenation computes every sequence's outputs at once; outputs whose window straddles two
sequences are simply never read. The bank is cut into overlapping chunks (``receptive_field - 1``
frames of overlap) that are batched into a few large forward calls.

Numbers (all reported in millimetres, metres x 1000, as the reference prints them):

* MPJPE (protocol #1), P-MPJPE (protocol #2, per-frame similarity alignment), N-MPJPE (protocol
  #3, per-frame scale alignment): means over all frames of the per-frame mean joint error,
  after zeroing the root joint of the target (predictions are root-relative by training);
* MPJVE: per sequence, the mean error of the first differences over its ``T - 1`` steps,
  weighted by the sequence's ``T`` frames (as the reference accumulates it).

Test-time augmentation averages the prediction with the un-mirrored prediction of the mirrored
input (x negated, left/right keypoints swapped on input; x negated, left/right joints swapped on
output; no swap for the one-joint trajectory model).

The final table groups sequences by the first word of their action name (``"Walking 1"`` and
``"Walking 2"`` are both ``"Walking"``) and reports each group's frame-weighted errors and the
unweighted mean over groups (the "action-wise average" of the papers), optionally per subject.

Data-parallel evaluation (``dist``, a :class:`fastlift.train.distributed.DistContext` with more
than one rank): the packed sequences are cut into the same forward calls as in one process; rank
``r`` runs the ``r``-th contiguous block of calls and the outputs are gathered in call order, so
every rank holds exactly the single-process prediction and computes the metrics from it with the
same code: the numbers are those of a single-process evaluation.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from fastlift import metrics
from fastlift.camera import project_to_2d

__all__ = ["SequenceSet", "sequence_errors", "summarize", "final_evaluation", "format_table", "write_json",
           "mean_pose_baseline", "action_group"]


def action_group(action: str) -> str:
    """The reference's evaluation group of an action: its first word (``"Walking 1"`` -> ``"Walking"``)."""
    return str(action).split(" ")[0]


def _as_numpy(a) -> np.ndarray:
    return a.detach().cpu().float().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float32)


class SequenceSet:
    """Whole sequences on a device, ready for batched valid-convolution inference.

    Args:
        poses_2d: per-sequence ``(T_i, J_in, F)`` normalised keypoints.
        poses_3d: per-sequence ``(T_i, J_out, 3)`` camera-space poses (joint 0 = trajectory), or None.
        cameras: per-sequence ``(9,)`` intrinsics, or None.
        labels: per-sequence ``(subject, action, camera)`` tuples, or None.
        pad / causal_shift: of the model that will be run (``(RF - 1) // 2`` and 0 or ``pad``).
        kps_left / kps_right: 2D flip symmetry; needed for test-time augmentation (``flip=True``).
        device / dtype: storage of the banks.

    Attributes after construction: ``lengths`` (n_seq,), ``num_frames``, ``seq_id`` ``(N,)`` int64
    (sequence of each frame), ``inputs_2d`` ``(N, J_in, F)`` (the unpadded 2D), ``poses_3d``
    ``(N, J_out, 3)`` with joint 0 zeroed, ``trajectory`` ``(N, 1, 3)``, ``cameras`` ``(N, 9)``
    (per frame), all on ``device``; ``None`` where not given.
    """

    def __init__(self, poses_2d, poses_3d=None, cameras=None, labels=None, *, pad: int, causal_shift: int = 0,
                 kps_left=None, kps_right=None, device="cpu", dtype=torch.float32):
        if not poses_2d:
            raise ValueError("poses_2d: expected at least one sequence, got none")
        if causal_shift not in (0, pad):
            raise ValueError(f"causal_shift: expected 0 or pad={pad}, got {causal_shift}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.pad, self.causal_shift = int(pad), int(causal_shift)
        p2 = [_as_numpy(p) for p in poses_2d]
        self.lengths = np.array([p.shape[0] for p in p2], dtype=np.int64)
        if (self.lengths < 1).any():
            raise ValueError(f"poses_2d: sequence {int(np.argmin(self.lengths))} has no frames")
        self.labels = list(labels) if labels is not None else [("?", f"sequence {i}", 0) for i in range(len(p2))]
        self.num_frames = int(self.lengths.sum())
        left, right = self.pad + self.causal_shift, self.pad - self.causal_shift
        rows = self.lengths + left + right
        raw_base = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        idx = np.concatenate([np.clip(np.arange(rows[i]) - left, 0, self.lengths[i] - 1) + raw_base[i]
                              for i in range(len(p2))])
        raw = np.concatenate(p2)
        padded = raw[idx]
        self._rows = int(rows.sum())
        banks = [padded]
        self.can_flip = kps_left is not None and kps_right is not None
        if self.can_flip:
            flipped = padded.copy()
            flipped[..., 0] *= -1
            lr, rl = list(kps_left) + list(kps_right), list(kps_right) + list(kps_left)
            flipped[:, lr] = flipped[:, rl]
            banks.append(flipped)
        self._bank = torch.from_numpy(np.concatenate(banks)).to(self.device, dtype)
        base = np.concatenate([[0], np.cumsum(rows)[:-1]])
        # Output of the window starting at padded row base_i + t is sequence i's frame t.
        self._starts = torch.from_numpy(np.concatenate([base[i] + np.arange(self.lengths[i])
                                                        for i in range(len(p2))])).to(self.device)
        self.seq_id = torch.from_numpy(np.repeat(np.arange(len(p2)), self.lengths)).to(self.device)
        self.inputs_2d = torch.from_numpy(raw).to(self.device, dtype)
        self.poses_3d = self.trajectory = None
        if poses_3d is not None:
            p3 = [_as_numpy(p) for p in poses_3d]
            for i, p in enumerate(p3):
                if p.shape[0] != self.lengths[i]:
                    raise ValueError(f"poses_3d[{i}]: {p.shape[0]} frames, but poses_2d[{i}] has {self.lengths[i]}")
            full = torch.from_numpy(np.concatenate(p3)).to(self.device, dtype)
            self.trajectory = full[:, :1].clone()
            full[:, 0] = 0
            self.poses_3d = full
        self.cameras = None
        if cameras is not None:
            cams = torch.from_numpy(np.stack([np.asarray(c, dtype=np.float32) for c in cameras])).to(self.device, dtype)
            self.cameras = cams[self.seq_id]

    @classmethod
    def from_split(cls, split, model_pad: int, causal_shift: int, exp, device, dtype=torch.float32) -> "SequenceSet":
        """Build from a :class:`fastlift.data.FetchResult` and an experiment's flip symmetry."""
        return cls(split.poses_2d, split.poses_3d, split.cameras, split.labels, pad=model_pad,
                   causal_shift=causal_shift, kps_left=exp.kps_left, kps_right=exp.kps_right, device=device,
                   dtype=dtype)

    # ------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, model, flip: bool = False, frames_per_call: Optional[int] = None,
                autocast_dtype: Optional[torch.dtype] = None, dist=None) -> torch.Tensor:
        """Run ``model`` (a dilated/dense lifter, in the mode it is in) over every sequence.

        Returns ``(N, J_out, 3)`` float32 predictions, frame ``t`` of sequence ``i`` at row
        ``sum(lengths[:i]) + t``. ``flip=True`` runs the mirrored bank (the output is *not*
        un-mirrored here). ``frames_per_call`` caps the input frames of one forward call.
        ``dist``: share the forward calls among data-parallel ranks (see the module docstring).
        """
        if flip and not self.can_flip:
            raise ValueError("flip: this SequenceSet was built without kps_left/kps_right")
        rf = int(model.receptive_field())
        if rf != 2 * self.pad + 1:
            raise ValueError(f"model: receptive field {rf} does not match this SequenceSet's pad {self.pad} "
                             f"(receptive field {2 * self.pad + 1})")
        if frames_per_call is None:
            frames_per_call = 65536 if self.device.type != "cpu" else 16384
        bank = self._bank[self._rows:] if flip else self._bank[:self._rows]
        n_out = self._rows - rf + 1
        # Chunks of C outputs read C + rf - 1 input rows; C a few receptive fields long keeps the
        # overlap overhead small while K chunks per call fill frames_per_call.
        c = max(1, min(n_out, max(1024, 4 * rf)))
        n_chunks = math.ceil(n_out / c)
        need = n_chunks * c + rf - 1
        jf = bank.shape[1] * bank.shape[2]
        if need > bank.shape[0]:
            bank = torch.cat([bank, bank.new_zeros((need - bank.shape[0],) + tuple(bank.shape[1:]))])
        bank = bank.contiguous()
        view = bank.reshape(-1).as_strided((n_chunks, (c + rf - 1) * jf), (c * jf, 1))
        k = max(1, frames_per_call // (c + rf - 1))
        ctx = (torch.autocast(self.device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
        outs = []
        calls = list(range(0, n_chunks, k))
        sharded = dist is not None and dist.enabled
        if sharded:
            lo, hi = dist.block(len(calls))
            calls = calls[lo:hi]
        with ctx:
            for k0 in calls:
                x = view[k0:k0 + k].reshape(-1, c + rf - 1, bank.shape[1], bank.shape[2])
                y = model(x)
                outs.append(y.reshape(-1, y.shape[-2], 3).float())
        if sharded:
            local = torch.cat(outs) if outs else bank.new_zeros((0, model.num_joints_out, 3), dtype=torch.float32)
            out = dist.gather_rows(local)[:n_out]
        else:
            out = torch.cat(outs)[:n_out]
        return out[self._starts]

    @torch.no_grad()
    def predict_tta(self, model, swap_joints: Sequence[Sequence[int]] | None, tta: bool = True,
                    frames_per_call: Optional[int] = None, autocast_dtype=None, dist=None) -> torch.Tensor:
        """Prediction averaged with the un-mirrored prediction of the mirrored input (``tta``).

        ``swap_joints``: ``(joints_left, joints_right)`` of the output, or None (trajectory model).
        """
        pred = self.predict(model, False, frames_per_call, autocast_dtype, dist)
        if not tta:
            return pred
        pf = self.predict(model, True, frames_per_call, autocast_dtype, dist)
        pf[..., 0] *= -1
        if swap_joints is not None:
            jl, jr = list(swap_joints[0]), list(swap_joints[1])
            pf[:, jl + jr] = pf[:, jr + jl]
        return (pred + pf) / 2


# ----------------------------------------------------------------------------------------- metrics
def sequence_errors(pred: torch.Tensor, target: torch.Tensor, seq_id: torch.Tensor, lengths) -> dict:
    """Per-frame MPJPE / P-MPJPE / N-MPJPE and per-sequence MPJVE, in metres.

    Args:
        pred, target: ``(N, J, 3)`` (target root-relative with joint 0 zeroed, as the reference).
        seq_id: ``(N,)`` sequence of each frame (frames of a sequence contiguous and in order).
        lengths: frames per sequence.

    Returns numpy arrays: ``mpjpe``, ``p_mpjpe``, ``n_mpjpe`` of shape ``(N,)`` and ``mpjve``
    of shape ``(n_seq,)`` (NaN for one-frame sequences, which have no velocity).
    """
    pred = pred.float()
    target = target.float()
    e1 = metrics.mpjpe(pred, target, reduction="none")
    e3 = metrics.n_mpjpe(pred, target, reduction="none")
    e2 = metrics.p_mpjpe(pred.double(), target.double(), reduction="none").float()
    lengths = np.asarray(lengths, dtype=np.int64)
    vel = torch.full((len(lengths),), float("nan"), dtype=torch.float64)
    if pred.shape[0] > 1:
        step = metrics.mpjpe(torch.diff(pred, dim=0), torch.diff(target, dim=0), reduction="none").double()
        same = seq_id[1:] == seq_id[:-1]  # steps inside one sequence
        sums = torch.zeros(len(lengths), dtype=torch.float64, device=pred.device)
        sums.index_add_(0, seq_id[1:][same], step[same])
        counts = torch.as_tensor(lengths - 1, dtype=torch.float64, device=pred.device)
        vel = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan"))).cpu()
    return {"mpjpe": e1.cpu().numpy().astype(np.float64), "p_mpjpe": e2.cpu().numpy().astype(np.float64),
            "n_mpjpe": e3.cpu().numpy().astype(np.float64), "mpjve": vel.numpy()}


def summarize(errors: dict, lengths, frames: Sequence[int] | np.ndarray | None = None,
              sequences: Sequence[int] | None = None) -> dict:
    """Frame-weighted errors (mm) of the given sequences (default: all).

    MPJVE weights each sequence's mean velocity error by its frame count (one-frame sequences,
    which have none, are left out of the velocity average).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    seqs = np.arange(len(lengths)) if sequences is None else np.asarray(sequences, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = np.concatenate([np.arange(starts[s], starts[s] + lengths[s]) for s in seqs]) if len(seqs) else \
        np.zeros(0, np.int64)
    out = {"frames": int(len(rows)), "sequences": int(len(seqs))}
    for key in ("mpjpe", "p_mpjpe", "n_mpjpe"):
        out[key] = float(errors[key][rows].mean() * 1000) if len(rows) else float("nan")
    v = errors["mpjve"][seqs]
    w = lengths[seqs].astype(np.float64)
    ok = np.isfinite(v)
    out["mpjve"] = float((v[ok] * w[ok]).sum() / w[ok].sum() * 1000) if ok.any() else float("nan")
    return out


def _groups(labels, seqs: Sequence[int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for s in seqs:
        out.setdefault(action_group(labels[s][1]), []).append(int(s))
    return out


def _table(errors, lengths, labels, seqs) -> dict:
    actions = {name: summarize(errors, lengths, sequences=idx) for name, idx in _groups(labels, seqs).items()}
    keys = ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve")
    mean = {k: float(np.mean([a[k] for a in actions.values()])) for k in keys}
    return {"actions": actions, "action_mean": mean, "all_frames": summarize(errors, lengths, sequences=seqs)}


def final_evaluation(seqset: SequenceSet, model_pos, joints_left, joints_right, *, tta: bool = True,
                     by_subject: bool = False, model_traj=None, frames_per_call=None, autocast_dtype=None,
                     dist=None) -> dict:
    """The reference's final evaluation on ``seqset`` (which must have 3D poses).

    Returns a JSON-ready dict (millimetres): ``actions`` (per action group: mpjpe, p_mpjpe,
    n_mpjpe, mpjve, frames, sequences), ``action_mean`` (unweighted mean over groups),
    ``all_frames`` (frame-weighted over everything), optionally ``by_subject`` (the same per
    subject) and ``trajectory`` (mean root position error of ``model_traj`` in mm). ``dist``:
    data-parallel ranks share the inference (same numbers on every rank).
    """
    if seqset.poses_3d is None:
        raise ValueError("seqset: evaluation needs 3D ground truth")
    pred = seqset.predict_tta(model_pos, (joints_left, joints_right), tta, frames_per_call, autocast_dtype, dist)
    errors = sequence_errors(pred, seqset.poses_3d, seqset.seq_id, seqset.lengths)
    all_seqs = list(range(len(seqset.lengths)))
    report = {"units": "mm", "test_time_augmentation": bool(tta), "frames": seqset.num_frames}
    report.update(_table(errors, seqset.lengths, seqset.labels, all_seqs))
    if by_subject:
        subjects: dict[str, list[int]] = {}
        for i, lab in enumerate(seqset.labels):
            subjects.setdefault(str(lab[0]), []).append(i)
        report["by_subject"] = {s: _table(errors, seqset.lengths, seqset.labels, idx) for s, idx in subjects.items()}
    if model_traj is not None:
        traj = seqset.predict_tta(model_traj, None, tta, frames_per_call, autocast_dtype, dist)
        report["trajectory"] = {"mean_error": float(metrics.mpjpe(traj, seqset.trajectory.float())) * 1000}
    return report


def mean_pose_baseline(train_poses_3d, test_poses_3d) -> float:
    """MPJPE (mm) of predicting the training set's mean root-relative pose for every test frame."""
    tr = np.concatenate([_as_numpy(p) for p in train_poses_3d]).astype(np.float64)
    te = np.concatenate([_as_numpy(p) for p in test_poses_3d]).astype(np.float64)
    tr[:, 0] = 0
    te[:, 0] = 0
    mean = tr.mean(axis=0, keepdims=True)
    return float(np.linalg.norm(te - mean, axis=-1).mean() * 1000)


# ----------------------------------------------------------------------------------------- quick losses
@torch.no_grad()
def epoch_losses(seqset: SequenceSet, model_pos, model_traj=None, frames_per_call=None, autocast_dtype=None,
                 dist=None) -> dict:
    """The reference's per-epoch evaluation losses on ``seqset`` (metres / screen units, no TTA).

    ``loss_3d``: frame-weighted MPJPE; with ``model_traj``: ``loss_traj`` (trajectory MPJPE) and
    ``loss_2d`` (MPJPE between the input 2D keypoints and the projection, with the distorted
    camera model, of the predicted pose + trajectory).
    """
    out = {}
    pred = seqset.predict(model_pos, False, frames_per_call, autocast_dtype, dist)
    if seqset.poses_3d is not None:
        out["loss_3d"] = float(metrics.mpjpe(pred, seqset.poses_3d.float()))
    if model_traj is not None:
        traj = seqset.predict(model_traj, False, frames_per_call, autocast_dtype, dist)
        if seqset.trajectory is not None:
            out["loss_traj"] = float(metrics.mpjpe(traj, seqset.trajectory.float()))
        if seqset.cameras is not None:
            rec = project_to_2d(pred + traj, seqset.cameras.float())
            out["loss_2d"] = float(metrics.mpjpe(rec, seqset.inputs_2d[..., :2].float()))
    return out


# ----------------------------------------------------------------------------------------- output
def format_table(report: dict, title: str | None = None) -> str:
    """Human-readable per-action table plus the reference's action-wise average lines."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"Test time augmentation: {report.get('test_time_augmentation')}")

    def block(tab):
        hdr = f"{'action':<16}{'frames':>9}{'MPJPE':>10}{'P-MPJPE':>10}{'N-MPJPE':>10}{'MPJVE':>9}"
        rows = [hdr, "-" * len(hdr)]
        for name, a in tab["actions"].items():
            rows.append(f"{name:<16}{a['frames']:>9}{a['mpjpe']:>10.1f}{a['p_mpjpe']:>10.1f}{a['n_mpjpe']:>10.1f}"
                        f"{a['mpjve']:>9.2f}")
        m = tab["action_mean"]
        rows.append("-" * len(hdr))
        rows.append(f"Protocol #1   (MPJPE) action-wise average: {m['mpjpe']:.1f} mm")
        rows.append(f"Protocol #2 (P-MPJPE) action-wise average: {m['p_mpjpe']:.1f} mm")
        rows.append(f"Protocol #3 (N-MPJPE) action-wise average: {m['n_mpjpe']:.1f} mm")
        rows.append(f"Velocity      (MPJVE) action-wise average: {m['mpjve']:.2f} mm")
        return rows

    if "by_subject" in report:
        for subject, tab in report["by_subject"].items():
            lines.append(f"Evaluating on subject {subject}")
            lines += block(tab)
            lines.append("")
        lines.append("All subjects")
    lines += block(report)
    if "trajectory" in report:
        lines.append(f"Trajectory mean error: {report['trajectory']['mean_error']:.1f} mm")
    return "\n".join(lines)


def write_json(path, obj) -> Path:
    """Write ``obj`` as JSON atomically (temp file in the same folder + rename)."""
    from fastlift._files import atomic_write_text

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return None if not math.isfinite(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    return atomic_write_text(path, json.dumps(clean(obj), indent=2) + "\n")
