"""Device-resident training windows: a batch is one gather by index, flips included.

:class:`WindowSampler` replaces the reference's per-example CPU batch generator. At construction
it copies every training video to the device once, already padded, in two banks:

* the 2D inputs, each sequence edge-padded exactly as the reference pads a chunk's input window
  (``pad + causal_shift`` frames on the left, ``pad - causal_shift`` on the right, plus the
  half-chunk centring overhang), and a second, horizontally flipped bank (x negated, left/right
  keypoints swapped);
* the 3D targets with the root joint zeroed (the pose target), the root trajectory (camera-space
  position of joint 0, the trajectory target), and their flipped banks (x negated, left/right
  joints swapped);
* the cameras' normalised intrinsics and their flipped version (``cx`` and ``p1`` negated).

A training example is a *chunk*: ``chunk_length`` consecutive output frames (``-s/--stride``;
1 for the single-frame model) of one sequence. The reference cuts each sequence of ``T``
frames into ``ceil(T / L)`` chunks centred on the sequence (the last chunk's overhang is split
between both ends and filled by edge replication). Its input window is ``L + 2 * pad`` frames.
Because each padded sequence is laid out so that chunk ``k``'s window starts ``k * L`` rows after
the sequence's first padded row, a batch is ``index_select`` of ``batch_size`` contiguous
windows from an ``as_strided`` view of the bank: one memory-bound gather, no per-example work,
no host synchronisation.

Epoch semantics (the reference's statistics): with augmentation every chunk appears exactly
twice per epoch, once as is and once flipped (the reference duplicates its chunk list with a
flip flag; it does not flip a random half), and the epoch's order is a uniform permutation drawn
from a seeded :class:`torch.Generator` on the sampler's device (the reference permutes with
``numpy.random.RandomState``; the order differs, the distribution is the same). The number of
batches per epoch is ``ceil(items / batch_size)``, the last one possibly smaller, as in the
reference.

The unlabelled stream of semi-supervised training is a sampler built with ``poses_3d=None`` and
``endless=True``: :meth:`WindowSampler.next_batch` always returns a full batch, continuing into
a fresh permutation when one is used up (the reference's endless generator yields a short batch
at the end of each of its passes; wrapping keeps the batch shape constant).

Data parallelism (``rank`` / ``world_size``): every rank builds the same sampler with the same
seed, so every rank draws the same global permutation and walks the same sequence of global
batches; :meth:`WindowSampler.epoch` and :meth:`WindowSampler.next_batch` then return only this
rank's contiguous share ``[rank*n // W, (rank+1)*n // W)`` of each global batch of ``n`` items.
The shares are disjoint and cover the batch, so every window is seen exactly once per epoch
across ranks, and the sampler state (generator + position) is global: a checkpoint resumes on any
number of ranks. ``batch_size`` stays the *global* batch. When ``world_size > 1`` and the last
batch of an epoch would leave some rank fewer than 2 examples (BatchNorm needs 2 values per
channel), that tail is merged into the previous batch (the epoch then has one batch fewer).

Returned batches are views into buffers the sampler reuses (like the reference generator's
arrays): a batch is valid until the next call. Pass ``reuse_buffers=False`` to get fresh tensors.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch

from fastlift.camera import flip_camera_intrinsics

__all__ = ["Batch", "WindowSampler", "chunk_layout"]


class Batch(NamedTuple):
    """One training batch (all tensors on the sampler's device).

    Attributes:
        inputs_2d: ``(B, L + 2*pad, J_in, F)`` 2D input windows (normalised screen coordinates).
        poses_3d: ``(B, L, J_out, 3)`` camera-space 3D targets with joint 0 zeroed (metres), or None.
        trajectory: ``(B, L, 1, 3)`` camera-space root positions (metres), or None.
        cameras: ``(B, 9)`` normalised intrinsics (flipped where the example is), or None.
        sequence: ``(B,)`` int64 index of each example's sequence.
        start: ``(B,)`` int64 first output frame of each example within its sequence (negative or
            beyond the end where the chunk overhangs; those frames are edge replicas).
        flipped: ``(B,)`` bool, whether the example is the mirrored version.
    """

    inputs_2d: torch.Tensor
    poses_3d: Optional[torch.Tensor]
    trajectory: Optional[torch.Tensor]
    cameras: Optional[torch.Tensor]
    sequence: torch.Tensor
    start: torch.Tensor
    flipped: torch.Tensor


def chunk_layout(lengths: Sequence[int], chunk_length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n_chunks, offset)`` per sequence, as the reference chunks them.

    A sequence of ``T`` frames has ``n = ceil(T / L)`` chunks; chunk ``k`` covers output frames
    ``[k*L - offset, (k+1)*L - offset)`` with ``offset = (n*L - T) // 2``.
    """
    t = np.asarray(lengths, dtype=np.int64)
    n = (t + chunk_length - 1) // chunk_length
    return n, (n * chunk_length - t) // 2


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _flip_rows(x: np.ndarray, left: Sequence[int], right: Sequence[int]) -> np.ndarray:
    """Mirror ``(N, J, D)`` points: negate x, swap the paired joints."""
    out = x.copy()
    out[..., 0] *= -1
    lr, rl = list(left) + list(right), list(right) + list(left)
    out[:, lr] = out[:, rl]
    return out


class WindowSampler:
    """Seeded, device-resident sampler of training windows (see the module docstring).

    Args:
        poses_2d: per-sequence ``(T_i, J_in, F)`` arrays (numpy or tensors), normalised keypoints.
        poses_3d: per-sequence ``(T_i, J_out, 3)`` camera-space poses (joint 0 = trajectory,
            others root-relative; metres) or None for the unlabelled stream.
        cameras: per-sequence ``(9,)`` normalised intrinsics, or None.
        chunk_length: output frames per example ``L`` (``-s/--stride``; 1 for the 1f model).
        pad: ``(receptive_field - 1) // 2``.
        causal_shift: ``pad`` for causal models, else 0.
        batch_size: examples (chunks) per batch; the reference uses ``-b // -s``.
        augment: add the flipped copy of every chunk to each epoch.
        kps_left / kps_right / joints_left / joints_right: flip symmetry (required if augment).
        shuffle: permute each epoch (False: sequence order, for checks).
        seed: seed of the sampler's own generator (the same on every rank).
        rank / world_size: this process's share of each global batch (see the module docstring).
        endless: for :meth:`next_batch` (unlabelled stream): always full batches.
        device / dtype: where and how the banks are stored (float32 default).
        reuse_buffers: write each batch into the same buffers (default) instead of new tensors.
    """

    def __init__(self, poses_2d, poses_3d=None, cameras=None, *, chunk_length: int = 1, pad: int = 0,
                 causal_shift: int = 0, batch_size: int = 1024, augment: bool = False, kps_left=None,
                 kps_right=None, joints_left=None, joints_right=None, shuffle: bool = True, seed: int = 0,
                 endless: bool = False, device="cpu", dtype: torch.dtype = torch.float32,
                 reuse_buffers: bool = True, rank: int = 0, world_size: int = 1):
        if poses_2d is None or len(poses_2d) == 0:
            raise ValueError("poses_2d: expected at least one sequence, got none")
        self.chunk_length = _check_int("chunk_length", chunk_length, 1)
        self.pad = _check_int("pad", pad, 0)
        self.causal_shift = _check_int("causal_shift", causal_shift, 0)
        if self.causal_shift not in (0, self.pad):
            raise ValueError(f"causal_shift: expected 0 or pad={self.pad}, got {causal_shift}")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        _check_int("seed", seed, 0)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size={self.world_size}, got {rank}")
        self.augment = bool(augment)
        self.shuffle = bool(shuffle)
        self.endless = bool(endless)
        self.reuse_buffers = bool(reuse_buffers)
        self.device = torch.device(device)
        self.dtype = dtype
        n_seq = len(poses_2d)
        if poses_3d is not None and len(poses_3d) != n_seq:
            raise ValueError(f"poses_3d: expected {n_seq} sequences (one per 2D sequence), got {len(poses_3d)}")
        if cameras is not None and len(cameras) != n_seq:
            raise ValueError(f"cameras: expected {n_seq} camera vectors (one per sequence), got {len(cameras)}")
        if self.augment:
            for name, v in (("kps_left", kps_left), ("kps_right", kps_right)):
                if v is None:
                    raise ValueError(f"{name}: flip augmentation needs the left/right keypoint indices, got None")
            if poses_3d is not None and (joints_left is None or joints_right is None):
                raise ValueError("joints_left/joints_right: flip augmentation of 3D targets needs the left/right joint "
                                 "indices, got None")

        p2 = [np.asarray(p, dtype=np.float32) if not isinstance(p, torch.Tensor) else p.detach().cpu().float().numpy()
              for p in poses_2d]
        shape2 = p2[0].shape[1:]
        lengths = []
        for i, p in enumerate(p2):
            if p.ndim != 3 or p.shape[1:] != shape2:
                raise ValueError(f"poses_2d[{i}]: expected shape (T, {shape2[0]}, {shape2[1]}) like poses_2d[0], got "
                                 f"{p.shape}")
            if p.shape[0] < 1:
                raise ValueError(f"poses_2d[{i}]: the sequence has no frames")
            lengths.append(p.shape[0])
        self.num_joints_in, self.in_features = int(shape2[0]), int(shape2[1])
        L, pad, cs = self.chunk_length, self.pad, self.causal_shift
        n_chunks, offset = chunk_layout(lengths, L)
        lengths = np.asarray(lengths, dtype=np.int64)
        self.lengths = lengths
        self.num_chunks = int(n_chunks.sum())
        self.window = L + 2 * pad

        # 2D bank: sequence i occupies n_chunks[i]*L + 2*pad rows; chunk k's window starts k*L rows in.
        left2 = offset + pad + cs
        rows2 = n_chunks * L + 2 * pad
        raw_base = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        idx2 = np.concatenate([np.clip(np.arange(rows2[i]) - left2[i], 0, lengths[i] - 1) + raw_base[i]
                               for i in range(n_seq)])
        raw2 = np.concatenate(p2)[idx2]
        base2 = np.concatenate([[0], np.cumsum(rows2)[:-1]])
        self._n2 = int(rows2.sum())
        banks2 = [raw2]
        if self.augment:
            banks2.append(_flip_rows(raw2, kps_left, kps_right))
        self._x2d = torch.from_numpy(np.ascontiguousarray(np.concatenate(banks2))).to(self.device, dtype)
        jf = self.num_joints_in * self.in_features
        # Row r of this view is the flattened window starting at bank row r.
        self._win2d = self._x2d.reshape(-1).as_strided((self._x2d.shape[0] - self.window + 1, self.window * jf),
                                                       (jf, 1))

        seq_of_chunk = np.repeat(np.arange(n_seq), n_chunks)
        k_of_chunk = np.arange(self.num_chunks) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
        self._chunk_seq = torch.from_numpy(seq_of_chunk).to(self.device)
        self._chunk_start = torch.from_numpy(k_of_chunk * L - np.repeat(offset, n_chunks)).to(self.device)
        self._start2d = torch.from_numpy(np.repeat(base2, n_chunks) + k_of_chunk * L).to(self.device)

        self.has_3d = poses_3d is not None
        if self.has_3d:
            p3 = [np.asarray(p, dtype=np.float32) if not isinstance(p, torch.Tensor)
                  else p.detach().cpu().float().numpy() for p in poses_3d]
            shape3 = p3[0].shape[1:]
            for i, p in enumerate(p3):
                if p.ndim != 3 or p.shape[1:] != shape3 or shape3[1] != 3:
                    raise ValueError(f"poses_3d[{i}]: expected shape (T, J, 3) like poses_3d[0], got {p.shape}")
                if p.shape[0] != lengths[i]:
                    raise ValueError(f"poses_3d[{i}]: {p.shape[0]} frames, but poses_2d[{i}] has {lengths[i]}")
            self.num_joints_out = int(shape3[0])
            rows3 = n_chunks * L
            idx3 = np.concatenate([np.clip(np.arange(rows3[i]) - offset[i], 0, lengths[i] - 1) + raw_base[i]
                                   for i in range(n_seq)])
            raw3 = np.concatenate(p3)[idx3]
            traj = raw3[:, :1].copy()
            pose = raw3.copy()
            pose[:, 0] = 0  # the pose target is root-relative; the root itself is the trajectory target
            self._n3 = int(rows3.sum())
            pose_banks, traj_banks = [pose], [traj]
            if self.augment:
                pose_banks.append(_flip_rows(pose, joints_left, joints_right))
                traj_banks.append(_flip_rows(traj, [], []))
            j3 = self.num_joints_out * 3
            self._pose = torch.from_numpy(np.concatenate(pose_banks)).to(self.device, dtype)
            self._traj = torch.from_numpy(np.concatenate(traj_banks)).to(self.device, dtype)
            self._win_pose = self._pose.reshape(-1).as_strided((self._pose.shape[0] - L + 1, L * j3), (j3, 1))
            self._win_traj = self._traj.reshape(-1).as_strided((self._traj.shape[0] - L + 1, L * 3), (3, 1))
            base3 = np.concatenate([[0], np.cumsum(rows3)[:-1]])
            self._start3d = torch.from_numpy(np.repeat(base3, n_chunks) + k_of_chunk * L).to(self.device)

        self.has_cameras = cameras is not None
        if self.has_cameras:
            cams = np.stack([np.asarray(c, dtype=np.float32).reshape(-1) for c in cameras])
            if cams.shape[1] != 9:
                raise ValueError(f"cameras: expected 9 normalised intrinsics per sequence, got {cams.shape[1]}")
            banks = [cams] + ([np.asarray(flip_camera_intrinsics(cams), dtype=np.float32)] if self.augment else [])
            self._cams = torch.from_numpy(np.concatenate(banks)).to(self.device, dtype)

        self.num_items = self.num_chunks * (2 if self.augment else 1)
        self.num_batches = math.ceil(self.num_items / self.batch_size)
        tail = self.num_items - (self.num_batches - 1) * self.batch_size
        # Merge a tail that would give some rank fewer than 2 examples into the previous batch.
        self._merge_tail = self.world_size > 1 and self.num_batches > 1 and tail < 2 * self.world_size
        if self._merge_tail:
            self.num_batches -= 1
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self._perm: Optional[torch.Tensor] = None
        self._perm_state: Optional[torch.Tensor] = None
        self._position = 0
        self._buffers: dict = {}

    # ------------------------------------------------------------------------------ sizes
    @property
    def frames_per_epoch(self) -> int:
        """Output frames in one epoch (items x chunk length; flipped copies included)."""
        return self.num_items * self.chunk_length

    def __len__(self) -> int:
        return self.num_batches

    # ------------------------------------------------------------------------------ order
    def _draw_perm(self) -> None:
        self._perm_state = self.generator.get_state()
        if self.shuffle:
            self._perm = torch.randperm(self.num_items, generator=self.generator, device=self.device)
        else:
            self._perm = torch.arange(self.num_items, device=self.device)
        self._position = 0

    def epoch(self) -> Iterator[Batch]:
        """One pass over all items in a fresh order: ``num_batches`` batches."""
        self._draw_perm()
        for b in range(self.num_batches):
            n = self.global_batch_items(b)
            items = self._perm[self._position:self._position + n]
            self._position += n
            yield self.gather(self._share(items))

    def global_batch_items(self, b: int) -> int:
        """Items in global batch ``b`` of an epoch (all ranks together)."""
        if b + 1 == self.num_batches:
            return self.num_items - b * self.batch_size
        return self.batch_size

    def share_bounds(self, n: int) -> tuple[int, int]:
        """This rank's ``[start, stop)`` within a global batch of ``n`` items."""
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size

    def _share(self, items: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return items
        lo, hi = self.share_bounds(int(items.shape[0]))
        return items[lo:hi]

    def next_batch(self) -> Batch:
        """The next full batch of an endless stream (continues into a new permutation)."""
        parts, need = [], self.batch_size
        while need > 0:
            if self._perm is None or self._position >= self.num_items:
                self._draw_perm()
            n = min(need, self.num_items - self._position)
            parts.append(self._perm[self._position:self._position + n])
            self._position += n
            need -= n
        return self.gather(self._share(parts[0] if len(parts) == 1 else torch.cat(parts)))

    # ------------------------------------------------------------------------------ gather
    def _buffer(self, name: str, n: int, shape: tuple) -> Optional[torch.Tensor]:
        if not self.reuse_buffers:
            return torch.empty((n,) + shape, device=self.device, dtype=self.dtype)
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < n:
            buf = torch.empty((max(n, self.batch_size),) + shape, device=self.device, dtype=self.dtype)
            self._buffers[name] = buf
        return buf[:n]

    def gather(self, items: torch.Tensor) -> Batch:
        """Batch of the given item indices (``0 <= item < num_items``; items ``>= num_chunks`` are
        the flipped copies). ``items``: int64 tensor on the sampler's device."""
        n = int(items.shape[0])
        if n == 0:
            raise ValueError("items: expected at least one item index, got an empty tensor")
        flipped = items >= self.num_chunks
        chunk = items - flipped.long() * self.num_chunks
        x = self._buffer("x2d", n, (self.window, self.num_joints_in, self.in_features))
        torch.index_select(self._win2d, 0, self._start2d[chunk] + flipped.long() * self._n2, out=x.view(n, -1))
        pose = traj = cams = None
        if self.has_3d:
            s3 = self._start3d[chunk] + flipped.long() * self._n3
            pose = self._buffer("pose", n, (self.chunk_length, self.num_joints_out, 3))
            torch.index_select(self._win_pose, 0, s3, out=pose.view(n, -1))
            traj = self._buffer("traj", n, (self.chunk_length, 1, 3))
            torch.index_select(self._win_traj, 0, s3, out=traj.view(n, -1))
        if self.has_cameras:
            cams = self._buffer("cams", n, (9,))
            n_seq = self._cams.shape[0] // (2 if self.augment else 1)
            torch.index_select(self._cams, 0, self._chunk_seq[chunk] + flipped.long() * n_seq, out=cams)
        return Batch(x, pose, traj, cams, self._chunk_seq[chunk], self._chunk_start[chunk], flipped)

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Generator state, the state it had when the current permutation was drawn, and the
        position in that permutation (tensors and ints only: safe to save and load)."""
        return {"generator": self.generator.get_state(),
                "perm_state": self._perm_state,
                "position": int(self._position),
                "num_items": int(self.num_items)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`: the same batches follow as if the run had not stopped."""
        for key in ("generator", "perm_state", "position", "num_items"):
            if key not in state:
                raise ValueError(f"sampler state: missing {key!r} (keys: {sorted(state)})")
        if int(state["num_items"]) != self.num_items:
            raise ValueError(f"sampler state: saved for {state['num_items']} items, this sampler has {self.num_items} "
                             f"(different data, --subset, --stride or augmentation?)")
        if state["perm_state"] is not None:
            self.generator.set_state(state["perm_state"])
            self._draw_perm()
        else:
            self._perm, self._perm_state = None, None
        self._position = int(state["position"])
        self.generator.set_state(state["generator"])
