"""Incremental multi-stream inference: one new 2D frame per stream in, ready 3D poses out.

:class:`StreamingLifter` keeps, for every stream slot and every layer whose input has temporal
history (the expand conv and each block's dilated conv), a ring buffer of that layer's recent
input frames. Advancing a stream by one frame then costs exactly one frame of work (the
amortised FLOPs of whole-sequence inference), batched over all streams pushed in the same call.

Exactness: streaming output equals :func:`fastlift.reference.lift_sequence` (whole-sequence
inference with edge replication) frame by frame, for causal and symmetric models:

* before a stream's first frame the whole-sequence path sees that frame replicated, so every
  layer's activations at earlier times are the network's response to a constant input; the
  first push fills each ring with that response (one frame of work, no warm-up frames);
* symmetric models emit the pose of frame ``t - pad`` when frame ``t`` arrives (fixed delay
  ``pad = (receptive_field - 1) // 2``); :meth:`StreamingLifter.close` emits the last ``pad``
  poses by running the tail of the sequence with the last frame replicated, as one batched
  whole-sequence computation over ``pad`` frames instead of ``pad`` single-frame steps;
* causal models emit the pose of frame ``t`` when frame ``t`` arrives; ``close`` emits nothing.

Structure: this module is the engine's plan and state -- the :class:`~fastlift.kernels.plan.LifterPlan`
and its step program, the ring buffers, slot bookkeeping, the delay, input validation and the
tail flush. How one step is computed is a backend's job (:mod:`fastlift.stream_backends`):
``"torch"`` (any device; one batched GEMM per layer over all pushed streams, gathers into
preallocated buffers, no per-stream Python loop; oneDNN's prepacked linear on CPU fp32 when
torch provides it, ``addmm`` otherwise) and ``"triton"`` (the fused step kernel of
:mod:`fastlift.kernels.stream_step`, one launch per layer; on CUDA the whole step is captured in
a CUDA graph per power-of-two stream bucket). Both read and write the same state tensors, so
they are interchangeable semantically.

Not thread-safe: one engine must be driven from one thread at a time.
"""
from __future__ import annotations

import contextlib
import copy
import heapq
from typing import NamedTuple

import numpy as np
import torch

from fastlift.fold import FoldedLifter, fold_lifter
from fastlift.stream_backends import create_backend, resolve_backend
from fastlift.stream_backends.step import StepOp, build_ops

__all__ = ["StreamingLifter", "StreamOutput"]


class StreamOutput(NamedTuple):
    """Poses that became ready in one call.

    Attributes:
        slots: ``int64 (M,)`` CPU tensor, the stream slot of each pose.
        frame_index: ``int64 (M,)`` CPU tensor, the pose's frame number within its stream (from 0).
        poses: ``(M, joints_out, 3)`` tensor on the engine's device, in the engine's dtype.

    Index bookkeeping is host-side knowledge, so ``slots``/``frame_index`` live on the CPU
    (no device round trip); ``poses`` stay on the engine's device.
    """

    slots: torch.Tensor
    frame_index: torch.Tensor
    poses: torch.Tensor


class StreamingLifter:
    """Frame-by-frame inference engine for up to ``max_streams`` concurrent pose streams.

    Args:
        model: a trained lifter: reference or fastlift ``TemporalModel`` (dilated or dense) or
            ``TemporalModelOptimized1f`` (same weights), or an already folded
            :class:`~fastlift.fold.FoldedLifter`. BatchNorm is folded with its running statistics
            (eval semantics) whatever ``model.training`` is. The model is not modified.
        max_streams: number of stream slots (state is allocated for all of them up front:
            ``state_bytes`` ~ ``max_streams * sum(ring_len * channels) * itemsize``, about 1 MB per
            slot for the 243-frame fp32 model).
        dtype: computation/state dtype; default the model's parameter dtype. CPU: float32 or
            float64 or bfloat16 (bf16 weights and rings, fp32 accumulation in oneDNN; warns once
            where the CPU only emulates bf16). CUDA: float16, bfloat16, float32, float64 (float64
            uses the torch backend).
        device: default the model's device.
        backend: ``"auto"`` (triton on CUDA for fp16/bf16/fp32, torch otherwise), ``"torch"`` or
            ``"triton"`` (on CPU only under ``TRITON_INTERPRET=1``; slow, for testing).
        cuda_graphs: capture each stream-count bucket's step in a CUDA graph (default: True when
            the triton backend runs on CUDA). Ignored elsewhere.
        check_finite: reject frames containing NaN/inf (default True). On CUDA this costs one
            device synchronisation per push; disable for minimal latency if inputs are trusted.

    Shapes: ``push`` takes ``frames (N, joints_in, in_features)``; poses are
    ``(M, joints_out, 3)``. Slots are ints in ``[0, max_streams)``.
    """

    def __init__(self, model, max_streams: int, dtype: torch.dtype | None = None, device=None, *,
                 backend: str = "auto", cuda_graphs: bool | None = None, check_finite: bool = True):
        if isinstance(max_streams, bool) or not hasattr(max_streams, "__index__") or int(max_streams) < 1:
            raise ValueError(f"max_streams: expected a positive integer, got {max_streams!r}")
        max_streams = int(max_streams)
        folded = self._fold(model, dtype)
        if device is None:
            device = folded.layers[0].weight.device
        device = torch.device(device)
        if dtype is None:
            dtype = folded.layers[0].weight.dtype
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype: expected a torch.dtype, got {dtype!r}")
        allowed = ((torch.float32, torch.float64, torch.bfloat16) if device.type == "cpu" and not _compile_only_session()
                   else (torch.float16, torch.bfloat16, torch.float32, torch.float64))
        if dtype not in allowed:
            raise ValueError(f"dtype: expected one of {allowed} on {device.type}, got {dtype}")
        from fastlift.precision import check_model_dtype, warn_if_emulated

        check_model_dtype(folded.layers[0].weight.dtype, dtype)
        warn_if_emulated(dtype, device)
        backend = resolve_backend(backend, device, dtype)
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.max_streams = max_streams
        self.check_finite = bool(check_finite)
        self.cuda_graphs = bool(device.type == "cuda" and backend == "triton" and (cuda_graphs is None or cuda_graphs))

        #: The layer geometry and step program (:class:`fastlift.kernels.plan.LifterPlan`).
        self.plan = plan = folded.plan
        self.num_joints_in = plan.joints_in
        self.in_features = plan.in_features
        self.num_joints_out = plan.joints_out
        self.receptive_field = plan.receptive_field
        self.causal = plan.causal
        self.channels = plan.channels
        self.filter_widths = list(plan.filter_widths)
        self.pad = plan.pad
        self._k0 = plan.input_channels

        # State: one ring per layer input with history (the network input, every block input),
        # plus one extra slot (index max_streams) that absorbs the Triton backend's bucket padding rows.
        self._ops: list[StepOp] = build_ops(plan, folded, device, dtype)
        self._rings = [torch.zeros(max_streams + 1, r.length, r.channels, device=device, dtype=dtype)
                       for r in plan.stream_rings]
        self._ring_len = np.array([r.length for r in plan.stream_rings], dtype=np.int64)

        # Host bookkeeping (authoritative): frames pushed per slot and which slots are open.
        self._count = np.zeros(max_streams, dtype=np.int64)
        self._open = np.zeros(max_streams, dtype=bool)
        self._free: list[int] = list(range(max_streams))
        heapq.heapify(self._free)
        with self._device_ctx():
            self._backend = create_backend(backend, self)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _fold(model, dtype) -> FoldedLifter:
        if isinstance(model, FoldedLifter):
            folded = model
            if dtype == torch.float64 and folded.layers[0].weight.dtype != torch.float64:
                folded = folded.to(dtype=torch.float64)
            return folded
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "filter_widths") or not hasattr(model, "expand_conv"):
            raise TypeError(f"model: expected a TemporalModel / TemporalModelOptimized1f (reference or fastlift) or a "
                            f"FoldedLifter, got {type(model).__name__}")
        if dtype == torch.float64 and model.expand_conv.weight.dtype != torch.float64:
            # Fold in fp64 so an fp64 engine is as exact as an fp64 reference model.
            model = copy.deepcopy(model).to(torch.float64)
        return fold_lifter(model)

    def _device_ctx(self):
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    # ------------------------------------------------------------------ properties
    @property
    def _onednn(self) -> bool:
        """Whether the torch backend's oneDNN linear path is in use (False elsewhere)."""
        return bool(getattr(self._backend, "onednn", False))

    @property
    def delay(self) -> int:
        """Frames between a frame's arrival and its pose's emission: ``pad`` (symmetric) or 0 (causal)."""
        return 0 if self.causal else self.pad

    @property
    def active_slots(self) -> torch.Tensor:
        """``int64 (K,)`` CPU tensor of the open slots, ascending."""
        return torch.from_numpy(np.flatnonzero(self._open).astype(np.int64))

    @property
    def num_active(self) -> int:
        return int(self._open.sum())

    @property
    def state_bytes(self) -> int:
        """Bytes of per-slot ring state (all slots, including the padding slot)."""
        return sum(r.numel() * r.element_size() for r in self._rings)

    @property
    def ring_lengths(self) -> list[int]:
        """Ring length (frames) per ring: network input first, then each block's input."""
        return [int(x) for x in self._ring_len]

    def frames_pushed(self, slot: int) -> int:
        """Number of frames pushed to the open stream ``slot`` so far."""
        s = self._check_one_slot(slot, "slot")
        return int(self._count[s])

    def pending(self, slot: int) -> int:
        """Frames of the open stream ``slot`` pushed but not yet emitted (``close`` emits them)."""
        s = self._check_one_slot(slot, "slot")
        return 0 if self.causal else int(min(self._count[s], self.pad))

    # ------------------------------------------------------------------ validation
    def _check_one_slot(self, slot, name: str) -> int:
        if isinstance(slot, torch.Tensor):
            if slot.numel() != 1 or slot.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise TypeError(f"{name}: expected one integer slot, got a tensor of shape {tuple(slot.shape)} and "
                                f"dtype {slot.dtype}")
            slot = int(slot.item())
        elif isinstance(slot, (bool, np.bool_)) or not isinstance(slot, (int, np.integer)):
            raise TypeError(f"{name}: expected an integer slot, got {type(slot).__name__} {slot!r}")
        slot = int(slot)
        if not 0 <= slot < self.max_streams:
            raise ValueError(f"{name}: expected a slot in [0, {self.max_streams}), got {slot}")
        if not self._open[slot]:
            raise ValueError(f"{name}: slot {slot} is not open (never opened, or already closed)")
        return slot

    def _check_slots(self, slots) -> np.ndarray:
        if isinstance(slots, torch.Tensor):
            if slots.dtype != torch.int64:
                raise TypeError(f"slots: expected an int64 (LongTensor) tensor, got dtype {slots.dtype}")
            if slots.dim() != 1:
                raise ValueError(f"slots: expected a 1-D tensor of slot indices, got shape {tuple(slots.shape)}")
            arr = slots.detach().cpu().numpy().astype(np.int64, copy=True)
        elif isinstance(slots, (list, tuple)):
            if not all(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) for s in slots):
                raise TypeError(f"slots: expected integer slot indices, got {slots!r}")
            arr = np.asarray(slots, dtype=np.int64).reshape(-1)
        else:
            raise TypeError(f"slots: expected a 1-D int64 tensor (or a list of ints), got {type(slots).__name__}")
        bad = arr[(arr < 0) | (arr >= self.max_streams)]
        if bad.size:
            raise ValueError(f"slots: expected slot indices in [0, {self.max_streams}), got {bad.tolist()}")
        srt = np.sort(arr)
        dup = srt[1:][srt[1:] == srt[:-1]]
        if dup.size:
            raise ValueError(f"slots: expected distinct slots (one frame per stream per push), got duplicates "
                             f"{np.unique(dup).tolist()}")
        closed = arr[~self._open[arr]]
        if closed.size:
            raise ValueError(f"slots: {closed.tolist()} not open (never opened, or already closed); open streams with open()")
        return arr

    def _check_frames(self, frames, n: int, slots: np.ndarray) -> torch.Tensor:
        expected = f"(N={n}, joints={self.num_joints_in}, features={self.in_features})"
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames: expected a torch.Tensor of shape {expected}, got {type(frames).__name__}")
        if not frames.is_floating_point():
            raise TypeError(f"frames: expected a floating-point tensor, got dtype {frames.dtype}")
        if tuple(frames.shape) != (n, self.num_joints_in, self.in_features):
            raise ValueError(f"frames: expected shape {expected}, got {tuple(frames.shape)}")
        if frames.device != self.device:
            raise ValueError(f"frames: expected a tensor on the engine's device {self.device}, got {frames.device}")
        # A NaN/inf anywhere makes the sum non-finite (cheap check); only then find the rows.
        if self.check_finite and n and not bool(torch.isfinite(frames.sum(dtype=torch.float64))):
            finite = torch.isfinite(frames).reshape(n, -1).all(dim=1)
            if not bool(finite.all()):
                bad = slots[~finite.cpu().numpy()]
                raise ValueError(f"frames: NaN or infinite values for slots {bad.tolist()}; fill missing detections "
                                 f"before pushing")
        return frames.reshape(n, self._k0).to(self.dtype)

    # ------------------------------------------------------------------ stream lifecycle
    def open(self) -> int:
        """Reserve a free slot (the lowest) for a new stream and return it."""
        if not self._free:
            raise RuntimeError(f"open: all max_streams={self.max_streams} slots are in use; close a stream first")
        slot = heapq.heappop(self._free)
        self._open[slot] = True
        self._count[slot] = 0
        return slot

    def close(self, slot) -> StreamOutput:
        """End the stream in ``slot``: return its not-yet-emitted poses and free the slot.

        Symmetric models return the last ``min(frames pushed, pad)`` poses (the sequence's right
        edge replicated, as the whole-sequence path pads); causal models return an empty result.
        The slot's state is zeroed, so nothing leaks to the next stream that takes it.
        """
        s = self._check_one_slot(slot, "slot")
        t = int(self._count[s])
        if self.causal or t == 0:
            out = self._empty()
        else:
            out = self._flush_tail(s, t)
        for ring in self._rings:
            ring[s].zero_()
        self._count[s] = 0
        self._open[s] = False
        heapq.heappush(self._free, s)
        return out

    def reset(self) -> None:
        """Drop every stream (nothing emitted) and zero all state."""
        for ring in self._rings:
            ring.zero_()
        self._count[:] = 0
        self._open[:] = False
        self._free = list(range(self.max_streams))
        heapq.heapify(self._free)

    def _empty(self) -> StreamOutput:
        z = torch.zeros(0, dtype=torch.int64)
        return StreamOutput(z, z.clone(), torch.zeros(0, self.num_joints_out, 3, device=self.device, dtype=self.dtype))

    # ------------------------------------------------------------------ stepping
    def push(self, slots, frames: torch.Tensor) -> StreamOutput:
        """Advance the listed streams by one frame each and return the poses that became ready.

        Args:
            slots: ``int64 (N,)`` distinct open slots (tensor on any device, or a list of ints).
            frames: ``(N, joints_in, in_features)`` floating tensor on the engine's device; row
                ``i`` is the next frame of stream ``slots[i]`` (cast to the engine dtype).

        Returns:
            :class:`StreamOutput` with one row per stream whose pose became ready: causal models
            every listed stream (frame ``t``), symmetric ones those with ``t >= pad`` (frame
            ``t - pad``), where ``t`` is the frame just pushed. Streams not listed are untouched.

        All inputs are validated before any state changes: a failed call changes nothing.
        """
        arr = self._check_slots(slots)
        n = arr.size
        x = self._check_frames(frames, n, arr)
        if n == 0:
            return self._empty()
        t = self._count[arr].copy()
        fresh = t == 0
        if self.backend == "triton":
            with self._device_ctx():  # Triton launches on the current CUDA device: make it the engine's
                out = self._backend.step(arr, t, fresh, x)
        else:
            out = self._backend.step(arr, t, fresh, x)
        self._count[arr] += 1
        if self.causal:
            ready, frame = None, t
        else:
            ready = t >= self.pad
            frame = t - self.pad
            if ready.all():
                ready = None
        if ready is None:
            poses = out.clone()
            sel_slots, sel_frames = arr, frame
        else:
            rows = np.flatnonzero(ready)
            poses = out.index_select(0, torch.from_numpy(rows).to(self.device))
            sel_slots, sel_frames = arr[rows], frame[rows]
        return StreamOutput(torch.from_numpy(sel_slots.copy()), torch.from_numpy(sel_frames.copy()),
                            poses.view(-1, self.num_joints_out, 3))

    def warmup(self, max_n: int | None = None) -> list[int]:
        """Capture the CUDA graphs of every bucket up to ``max_n`` streams now (default all).

        Returns the buckets captured. Without CUDA graphs this is a no-op returning ``[]``.
        """
        if max_n is not None and (isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1):
            raise ValueError(f"max_n: expected a positive integer or None, got {max_n!r}")
        if not self.cuda_graphs:
            return []
        with self._device_ctx():
            return self._backend.warmup(max_n)

    # ------------------------------------------------------------------ tail flush
    def _flush_tail(self, s: int, t: int) -> StreamOutput:
        """Poses of frames ``max(0, t-pad) .. t-1`` of slot ``s`` (``t`` frames pushed).

        Equivalent to pushing the last frame ``pad`` more times, computed as one whole-sequence
        pass over those ``pad`` future steps: each layer's input sequence is its ring history
        (times ``t-span .. t-1``) followed by the previous layer's ``pad`` new outputs.
        """
        p = self.pad
        dev = self.device

        def history(r: int, span: int) -> torch.Tensor:
            length = int(self._ring_len[r])
            pos = torch.from_numpy((np.arange(t - span, t) % length).astype(np.int64)).to(dev)
            return self._rings[r][s].index_select(0, pos)

        def conv(seq: torch.Tensor, op: StepOp) -> torch.Tensor:
            c = op.conv
            # Same [rows x taps*C] . [taps*C x C_out] GEMM as the step, for p output times.
            taps = torch.arange(c.taps, device=dev) * c.dilation
            rows = (torch.arange(p, device=dev)[:, None] + taps[None, :]).reshape(-1)
            return self._backend.linear(op, seq.index_select(0, rows).reshape(p, c.taps * c.c_in))

        with torch.no_grad():
            ring0_span = int(self._ring_len[0]) - 1
            last = self._rings[0][s][(t - 1) % int(self._ring_len[0])]
            seq = torch.cat([history(0, ring0_span), last.expand(p, -1)])
            block_seq = None
            for op in self._ops:
                if op.src[0] == "ring":
                    r = op.src[1]
                    if r != 0:
                        seq = torch.cat([history(r, int(self._ring_len[r]) - 1), seq])
                    block_seq, block_span = seq, int(self._ring_len[r]) - 1
                    seq = conv(seq, op)
                else:
                    y = conv(seq, op)
                    if op.res is not None:
                        lag = op.res[1]
                        y = y + block_seq[block_span - lag: block_span - lag + p]
                    seq = y
        frames = np.arange(t - p, t, dtype=np.int64)
        keep = frames >= 0
        poses = seq[torch.from_numpy(np.flatnonzero(keep)).to(dev)]
        return StreamOutput(torch.full((int(keep.sum()),), s, dtype=torch.int64), torch.from_numpy(frames[keep]),
                            poses.reshape(-1, self.num_joints_out, 3))

    # ------------------------------------------------------------------ convenience
    def stream_sequence(self, frames: torch.Tensor) -> torch.Tensor:
        """Stream one whole sequence ``(T, joints_in, features)`` frame by frame; return ``(T, joints_out, 3)``.

        Opens a slot, pushes every frame, closes it, and orders the emitted poses by frame.
        Mainly a testing/demo helper: it equals ``lift_sequence(model, frames)``.
        """
        if not isinstance(frames, torch.Tensor) or frames.dim() != 3:
            raise ValueError(f"frames: expected a (T, {self.num_joints_in}, {self.in_features}) tensor, got "
                             f"{getattr(frames, 'shape', type(frames).__name__)}")
        slot = self.open()
        outs = []
        try:
            st = torch.tensor([slot], dtype=torch.int64)
            for i in range(frames.shape[0]):
                outs.append(self.push(st, frames[i: i + 1]))
        except Exception:
            self.close(slot)
            raise
        outs.append(self.close(slot))
        idx = torch.cat([o.frame_index for o in outs])
        poses = torch.cat([o.poses for o in outs])
        order = torch.argsort(idx)
        if not torch.equal(idx[order], torch.arange(frames.shape[0])):
            raise RuntimeError("stream_sequence: emitted frame indices are not 0..T-1 (engine bug)")
        return poses[order.to(poses.device)]


def _compile_only_session() -> bool:
    """Whether a kernels compile-only session runs (``fastlift kernels check``): its launches only compile, so
    the Triton backend may be driven with CPU tensors of every kernel dtype."""
    try:
        from fastlift.kernels.launch import compile_only_active
    except ImportError:  # triton missing
        return False
    return compile_only_active()
