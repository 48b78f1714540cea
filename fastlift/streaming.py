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

Backends: ``"torch"`` (any device; one batched GEMM per layer over all pushed streams, gathers
into preallocated buffers, no per-stream Python loop; on CPU in fp32 the GEMMs are oneDNN linears
with prepacked weights and fused bias + ReLU, elsewhere ``addmm`` into preallocated outputs) and ``"triton"`` (the fused step kernel of :mod:`fastlift.kernels.stream_step`, one launch
per layer; on CUDA the whole step is captured in a CUDA graph per power-of-two stream bucket).
Both read and write the same state tensors, so they are interchangeable semantically.

Not thread-safe: one engine must be driven from one thread at a time.
"""
from __future__ import annotations

import contextlib
import copy
import heapq
from typing import NamedTuple

import numpy as np
import torch

from fastlift.fold import FoldedConv, FoldedLifter, fold_lifter

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


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


class _Op:
    """One layer of the step plan (backend-neutral description).

    ``src``/``dst``: ``("ring", r)`` for ring ``r`` or ``("buf", name)`` for a plain row buffer.
    ``res``: ``(ring, lag)`` of the residual tap, or None. ``res_tap``: index of the residual
    among the gathered taps of the block's dilated conv (the torch path reuses that slice).
    ``w``: the layer's ``(taps*C_in, C_out)`` weight in the engine dtype (when ``onednn``, a
    prepacked ``(C_out, taps*C_in)`` oneDNN tensor); ``b``: bias in the engine dtype;
    ``w32_bias``: fp32 bias for the Triton kernel.
    """

    __slots__ = ("conv", "src", "dst", "res", "res_tap", "w", "b", "w32_bias", "onednn")

    def __init__(self, conv: FoldedConv, src, dst, res=None, res_tap=None):
        self.conv, self.src, self.dst, self.res, self.res_tap = conv, src, dst, res, res_tap


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
        allowed = ((torch.float32, torch.float64, torch.bfloat16) if device.type == "cpu"
                   else (torch.float16, torch.bfloat16, torch.float32, torch.float64))
        if dtype not in allowed:
            raise ValueError(f"dtype: expected one of {allowed} on {device.type}, got {dtype}")
        from fastlift.precision import check_model_dtype, warn_if_emulated

        check_model_dtype(folded.layers[0].weight.dtype, dtype)
        warn_if_emulated(dtype, device)
        if backend not in ("auto", "torch", "triton"):
            raise ValueError(f"backend: expected 'auto', 'torch' or 'triton', got {backend!r}")
        if backend == "auto":
            backend = "triton" if (device.type == "cuda" and dtype != torch.float64 and _triton_available()) else "torch"
        if backend == "triton":
            if dtype not in (torch.float16, torch.bfloat16, torch.float32):
                raise ValueError(f"dtype: the triton backend supports float16/bfloat16/float32, got {dtype}")
            if device.type == "cpu":
                from fastlift.kernels import stream_step

                if not stream_step.interpreter_active():
                    raise ValueError("backend: 'triton' on CPU needs TRITON_INTERPRET=1 set before triton is first "
                                     "imported (it runs the kernels in the Triton interpreter); use backend='torch' "
                                     "on CPU")
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.max_streams = max_streams
        self.check_finite = bool(check_finite)
        self.cuda_graphs = bool(device.type == "cuda" and backend == "triton" and (cuda_graphs is None or cuda_graphs))

        self.num_joints_in = folded.num_joints_in
        self.in_features = folded.in_features
        self.num_joints_out = folded.num_joints_out
        self.receptive_field = folded.receptive_field
        self.causal = folded.causal
        self.channels = folded.channels
        self.filter_widths = list(folded.filter_widths)
        self.pad = folded.pad
        self._k0 = self.num_joints_in * self.in_features
        self._c_out = self.num_joints_out * 3
        self._dummy = max_streams  # extra slot for CUDA-graph bucket padding rows

        self._build_plan(folded)

        # Host bookkeeping (authoritative): frames pushed per slot and which slots are open.
        self._count = np.zeros(max_streams, dtype=np.int64)
        self._open = np.zeros(max_streams, dtype=bool)
        self._free: list[int] = list(range(max_streams))
        heapq.heapify(self._free)
        self._scratch_rows = 0
        self._graphs: dict[int, object] = {}
        if backend == "triton":
            with self._device_ctx():
                self._build_kernel_plan()

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

    def _build_plan(self, folded: FoldedLifter) -> None:
        layers = folded.layers
        n_blocks, rem = divmod(len(layers) - 2, 2)
        if len(layers) < 2 or rem or layers[-1].relu or layers[-1].taps != 1 or layers[-1].res_offset is not None:
            raise ValueError(f"model: unsupported folded layer structure ({len(layers)} layers); expected expand, "
                             f"(dilated, 1x1+residual) blocks, shrink")
        dev, dt = self.device, self.dtype
        expand, shrink = layers[0], layers[-1]
        ring_specs = [(expand.c_in, expand.span + 1)]  # (channels, length); ring 0 holds the network input
        ops: list[_Op] = []
        if n_blocks == 0:
            ops.append(_Op(expand, ("ring", 0), ("buf", "g")))
        for i in range(n_blocks):
            dil_conv, pw = layers[1 + 2 * i], layers[2 + 2 * i]
            if pw.taps != 1 or pw.res_offset is None or dil_conv.res_offset is not None:
                raise ValueError(f"model: block {i} is not (dilated conv, 1x1 conv + residual)")
            lag = dil_conv.span - pw.res_offset
            if not (0 <= lag <= dil_conv.span) or lag % dil_conv.dilation:
                raise ValueError(f"model: block {i} residual offset {pw.res_offset} is not one of the dilated conv's taps")
            ring_specs.append((dil_conv.c_in, dil_conv.span + 1))
            r = len(ring_specs) - 1
            if i == 0:
                ops.append(_Op(expand, ("ring", 0), ("ring", r)))
            else:
                ops[-1].dst = ("ring", r)  # the previous block's output is this block's input
            ops.append(_Op(dil_conv, ("ring", r), ("buf", "h")))
            res_tap = dil_conv.taps - 1 - lag // dil_conv.dilation
            ops.append(_Op(pw, ("buf", "h"), ("buf", "g"), res=(r, lag), res_tap=res_tap))
        ops.append(_Op(shrink, ("buf", "g"), ("buf", "out")))
        # CPU fp32/bf16: oneDNN linear with prepacked weights and the bias + ReLU fused into the GEMM
        # (about 30 % faster than addmm on the 243f layers here, and fewer parallel regions per
        # step, which matters on a small, shared CPU). A oneDNN call costs ~40 us, so tiny layers
        # stay on addmm, as does everything off CPU fp32/bf16 (into preallocated buffers).
        self._onednn = (self.backend == "torch" and dev.type == "cpu" and dt in (torch.float32, torch.bfloat16)
                        and _onednn_linear_ok() and (dt == torch.float32 or _onednn_bf16_ok()))
        for op in ops:
            op.b = op.conv.bias.to(device=dev, dtype=dt).contiguous()
            op.w32_bias = op.conv.bias.to(device=dev, dtype=torch.float32).contiguous()
            w = op.conv.weight.to(device=dev, dtype=dt)
            op.onednn = self._onednn and w.numel() >= _ONEDNN_MIN_WEIGHTS
            if op.onednn:
                op.w = torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous(), self.max_streams)
            else:
                op.w = w.contiguous()
        self._ops = ops
        self._rings = [torch.zeros(self.max_streams + 1, length, c, device=dev, dtype=dt) for c, length in ring_specs]
        self._rings_flat = [r.view(-1, r.shape[2]) for r in self._rings]
        # Host-side tap lags per ring (for the torch path's gather indices); tap k has lag (taps-1-k)*d.
        self._ring_lags = []
        for op in ops:
            if op.src[0] == "ring":
                c = op.conv
                self._ring_lags.append((op.src[1], np.array([(c.taps - 1 - k) * c.dilation for k in range(c.taps)],
                                                            dtype=np.int64)))
        self._ring_len = np.array([length for _, length in ring_specs], dtype=np.int64)
        self._pattern_n = -1

    def _ensure_scratch(self, n: int) -> None:
        """Grow the torch path's gather/GEMM buffers to hold ``n`` rows (power-of-two growth, rare)."""
        if n <= self._scratch_rows:
            return
        rows = min(_next_pow2(n), _next_pow2(self.max_streams))
        dev, dt = self.device, self.dtype
        c = self.channels
        widest = max(op.conv.taps * op.conv.c_in for op in self._ops if op.src[0] == "ring")
        self._gather = torch.empty(rows * widest, device=dev, dtype=dt)
        # addmm layers write into these; oneDNN layers return fresh outputs.
        self._bufs = {name: torch.empty(rows, c, device=dev, dtype=dt) for name in ("h", "g", "y")}
        self._bufs["out"] = torch.empty(rows, self._c_out, device=dev, dtype=dt)
        self._scratch_rows = rows

    def _build_kernel_plan(self) -> None:
        from fastlift.kernels import stream_step as ks

        self._ks = ks
        rows = _next_pow2(self.max_streams)
        dev, dt, c = self.device, self.dtype, self.channels
        # Static buffers shared by every bucket (a bucket uses the first B rows).
        self._kmeta = torch.zeros(3, rows, device=dev, dtype=torch.int64)
        cuda = dev.type == "cuda"
        # Pinned on CUDA so the per-step metadata upload is an async copy; the event guards the
        # host buffer against being rewritten before the previous upload has been consumed.
        self._kmeta_host = torch.zeros(3, rows, dtype=torch.int64, pin_memory=cuda)
        self._kmeta_event = torch.cuda.Event() if cuda else None
        self._kx = torch.zeros(rows, self._k0, device=dev, dtype=dt)
        self._kbufs = {"h": torch.zeros(rows, c, device=dev, dtype=dt), "g": torch.zeros(rows, c, device=dev, dtype=dt),
                       "out": torch.zeros(rows, self._c_out, device=dev, dtype=dt)}
        plan = []
        for op in self._ops:
            src = self._rings[op.src[1]] if op.src[0] == "ring" else self._kbufs[op.src[1]]
            dst = self._rings[op.dst[1]] if op.dst[0] == "ring" else self._kbufs[op.dst[1]]
            plan.append(ks.StreamLayer(
                weight=op.w, bias=op.w32_bias, taps=op.conv.taps, dilation=op.conv.dilation,
                src=src, src_ring=op.src[0] == "ring", dst=dst, dst_ring=op.dst[0] == "ring", relu=op.conv.relu,
                x=self._kx if op.src == ("ring", 0) else None,
                res=self._rings[op.res[0]] if op.res is not None else None,
                res_lag=op.res[1] if op.res is not None else 0))
        self._kplan = plan
        # Validate the launch plan once (meta points every row at the dummy slot, time 0).
        self._kmeta[0].fill_(self._dummy)
        for layer in plan:
            ks.validate_layer(layer, self._kmeta, rows)

    def _device_ctx(self):
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    # ------------------------------------------------------------------ properties
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
                out = self._step_triton(arr, t, fresh, x)
        else:
            out = self._step_torch(arr, t, fresh, x)
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

    def _index_pattern(self, n: int):
        """Per-entry (row, lag, ring length) of the step's gather indices for ``n`` rows (cached for the last n).

        Entries are ring-major blocks, each block row-major over (row, tap), so each ring's slice
        is a contiguous index whose gathered rows view as ``(n, taps * C)``.
        """
        if self._pattern_n != n:
            rows, lags, lens = [], [], []
            for r, lag in self._ring_lags:
                rows.append(np.repeat(np.arange(n, dtype=np.int64), lag.size))
                lags.append(np.tile(lag, n))
                lens.append(np.full(n * lag.size, self._ring_len[r], dtype=np.int64))
            self._pattern = (np.concatenate(rows), np.concatenate(lags), np.concatenate(lens))
            self._pattern_n = n
        return self._pattern

    def _indices(self, arr: np.ndarray, t: np.ndarray) -> dict:
        """Gather and write row indices into the flattened rings, built on the host in one array."""
        n = arr.size
        rows, lags, lens = self._index_pattern(n)
        # flat index of ring entry (slot, (t - lag) mod L) = slot * L + (t - lag) mod L
        q = t[rows] - lags
        np.remainder(q, lens, out=q)
        q += arr[rows] * lens
        flat = torch.from_numpy(q)
        if self.device.type != "cpu":
            flat = flat.to(self.device)
        out, off = {}, 0
        for r, lag in self._ring_lags:
            block = flat[off: off + n * lag.size]
            out[("gather", r)] = block
            # The newest tap (lag 0, the last tap) is where this step's frame is written.
            out[("write", r)] = block[lag.size - 1:: lag.size]
            off += n * lag.size
        return out

    def _write_ring(self, r: int, idx: dict, y: torch.Tensor, fresh_rows, fresh_slots) -> None:
        self._rings_flat[r].index_copy_(0, idx[("write", r)], y)
        if fresh_rows is not None:
            # First frame of a stream: fill its whole history with the constant response (module doc).
            self._rings[r][fresh_slots] = y.index_select(0, fresh_rows).unsqueeze(1)

    def _step_torch(self, arr: np.ndarray, t: np.ndarray, fresh: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        n = arr.size
        self._ensure_scratch(n)
        idx = self._indices(arr, t)
        if fresh.any():
            fresh_rows = torch.from_numpy(np.flatnonzero(fresh)).to(self.device)
            fresh_slots = torch.from_numpy(arr[fresh]).to(self.device)
        else:
            fresh_rows = fresh_slots = None
        self._write_ring(0, idx, x, fresh_rows, fresh_slots)
        gathered = {}
        for op in self._ops:
            c = op.conv
            if op.src[0] == "ring":
                r = op.src[1]
                a = self._gather[: n * c.taps * c.c_in].view(n * c.taps, c.c_in)
                torch.index_select(self._rings_flat[r], 0, idx[("gather", r)], out=a)
                a = a.view(n, c.taps * c.c_in)
                gathered[r] = a
            y = self._linear(op, a, out=self._bufs["y" if op.dst[0] == "ring" else op.dst[1]][:n])
            if op.res is not None:
                # The residual is one of the taps the dilated conv gathered: reuse that slice.
                g = gathered[op.res[0]]
                y.add_(g[:, op.res_tap * c.c_out: (op.res_tap + 1) * c.c_out])
            if op.dst[0] == "ring":
                self._write_ring(op.dst[1], idx, y, fresh_rows, fresh_slots)
            a = y
        return a

    def _linear(self, op: _Op, a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``act(a @ W + b)`` for one layer: ``a (rows, taps*C_in)`` -> ``(rows, C_out)``."""
        if op.onednn:
            return torch.ops.mkldnn._linear_pointwise(a, op.w, op.b, "relu" if op.conv.relu else "none", [], "")
        y = torch.addmm(op.b, a, op.w, out=out) if out is not None else torch.addmm(op.b, a, op.w)
        return y.relu_() if op.conv.relu else y

    def _step_triton(self, arr: np.ndarray, t: np.ndarray, fresh: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        n = arr.size
        b = _next_pow2(n)
        meta = self._kmeta_host
        if self._kmeta_event is not None:
            self._kmeta_event.synchronize()
        meta[0, :n] = torch.from_numpy(arr)
        meta[1, :n] = torch.from_numpy(t)
        meta[2, :n] = torch.from_numpy(fresh.astype(np.int64))
        # Padding rows of the bucket: the dummy slot at time 0, never fresh (writes land in the dummy).
        meta[0, n:b] = self._dummy
        meta[1, n:b] = 0
        meta[2, n:b] = 0
        if self.cuda_graphs and b not in self._graphs:
            self._capture(b)
        self._kmeta[:, :b].copy_(meta[:, :b], non_blocking=self._kmeta_event is not None)
        if self._kmeta_event is not None:
            self._kmeta_event.record()
        self._kx[:n].copy_(x)
        if self.cuda_graphs:
            self._graphs[b].replay()
        else:
            self._ks.stream_step(self._kplan, self._kmeta, b, validate=False)
        return self._kbufs["out"][:n]

    # ------------------------------------------------------------------ CUDA graphs
    def _capture(self, b: int) -> None:
        """Warm up (compile) and capture the step for bucket ``b`` rows; touches only the dummy slot."""
        self._kmeta[0, :b] = self._dummy
        self._kmeta[1:, :b] = 0
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._ks.stream_step(self._kplan, self._kmeta, b, validate=False)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._ks.stream_step(self._kplan, self._kmeta, b, validate=False)
        self._graphs[b] = graph

    def warmup(self, max_n: int | None = None) -> list[int]:
        """Capture the CUDA graphs of every bucket up to ``max_n`` streams now (default all).

        Returns the buckets captured. Without CUDA graphs this is a no-op returning ``[]``.
        """
        if max_n is not None and (isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1):
            raise ValueError(f"max_n: expected a positive integer or None, got {max_n!r}")
        if not self.cuda_graphs:
            return []
        with self._device_ctx():
            return self._warmup(max_n)

    def _warmup(self, max_n):
        top = _next_pow2(self.max_streams if max_n is None else max(1, min(int(max_n), self.max_streams)))
        done, b = [], 1
        while b <= top:
            if b not in self._graphs:
                self._capture(b)
            done.append(b)
            b *= 2
        return done

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

        def conv(seq: torch.Tensor, op: _Op) -> torch.Tensor:
            c = op.conv
            # Same [rows x taps*C] . [taps*C x C_out] GEMM as the step, for p output times.
            taps = torch.arange(c.taps, device=dev) * c.dilation
            rows = (torch.arange(p, device=dev)[:, None] + taps[None, :]).reshape(-1)
            return self._linear(op, seq.index_select(0, rows).reshape(p, c.taps * c.c_in))

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


# Layers with fewer weights than this use addmm even where oneDNN is available (call overhead).
_ONEDNN_MIN_WEIGHTS = 1 << 14


def _onednn_linear_ok() -> bool:
    """Whether torch's oneDNN linear (prepacked weight, fused bias + ReLU) works and is exact here."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        a, w, b = (torch.randn(3, 40, generator=g), torch.randn(24, 40, generator=g), torch.randn(24, generator=g))
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 4)
        y = torch.ops.mkldnn._linear_pointwise(a, packed, b, "relu", [], "")
        return bool(torch.allclose(y, torch.relu(a @ w.t() + b), rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError, TypeError):
        return False


def _onednn_bf16_ok() -> bool:
    from fastlift.cpu_infer import onednn_linear_available

    return onednn_linear_available(torch.bfloat16)


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
