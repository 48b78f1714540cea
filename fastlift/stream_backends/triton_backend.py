"""The ``"triton"`` streaming backend: the fused step kernel, one launch per layer, CUDA graphs.

Each layer of the step program is one :func:`fastlift.kernels.stream_step.stream_step` launch
over a power-of-two bucket of rows (the pushed streams, padded with rows that point at the
engine's extra dummy slot at time 0, so padding never touches a real stream). Per-step
metadata (slot, time, fresh) goes to a static device buffer; on CUDA each bucket's step is
captured in a CUDA graph on first use (or by :meth:`warmup`) and replayed afterwards. Few streams
split each layer's reduction over more programs (split-K, see :mod:`fastlift.kernels.stream_step`);
its workspace is allocated once here for every bucket, so the graphs replay fixed pointers.
"""
from __future__ import annotations

import numpy as np
import torch

from fastlift.stream_backends.step import StepOp, layer, next_pow2

__all__ = ["TritonBackend"]


class TritonBackend:
    """Steps the engine's rings with the Triton step kernel (see the module docstring)."""

    name = "triton"
    onednn = False

    def __init__(self, engine):
        from fastlift.kernels import stream_step as ks

        self._ks = ks
        self.device, self.dtype = engine.device, engine.dtype
        self.max_streams = engine.max_streams
        self.cuda_graphs = engine.cuda_graphs
        self._dummy = engine.max_streams  # the engine's extra slot for bucket padding rows
        self._ops: list[StepOp] = engine._ops
        self._rings = engine._rings
        self._graphs: dict[int, object] = {}
        rows = next_pow2(self.max_streams)
        dev, dt, c = self.device, self.dtype, engine.channels
        # Static buffers shared by every bucket (a bucket uses the first B rows).
        self._kmeta = torch.zeros(3, rows, device=dev, dtype=torch.int64)
        cuda = dev.type == "cuda"
        # Pinned on CUDA so the per-step metadata upload is an async copy; the event guards the
        # host buffer against being rewritten before the previous upload has been consumed.
        self._kmeta_host = torch.zeros(3, rows, dtype=torch.int64, pin_memory=cuda)
        self._kmeta_event = torch.cuda.Event() if cuda else None
        self._kx = torch.zeros(rows, engine.num_joints_in * engine.in_features, device=dev, dtype=dt)
        self._kbufs = {"h": torch.zeros(rows, c, device=dev, dtype=dt), "g": torch.zeros(rows, c, device=dev, dtype=dt),
                       "out": torch.zeros(rows, engine.num_joints_out * 3, device=dev, dtype=dt)}
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
        # Split-K workspace for every bucket's launches, allocated once (CUDA graphs replay its pointers).
        self._kscratch = ks.scratch_for(plan, rows)
        # Validate the launch plan once (meta points every row at the dummy slot, time 0).
        self._kmeta[0].fill_(self._dummy)
        for kl in plan:
            ks.validate_layer(kl, self._kmeta, rows)

    def linear(self, op: StepOp, a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``act(a @ W + b)`` with torch ops (the tail flush's batched pass)."""
        return layer(a, op.w, op.b, op.conv.relu, out=out)

    def step(self, arr: np.ndarray, t: np.ndarray, fresh: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """As :meth:`fastlift.stream_backends.torch_backend.TorchBackend.step` (call inside the
        engine's device context)."""
        n = arr.size
        b = next_pow2(n)
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
            self._ks.stream_step(self._kplan, self._kmeta, b, validate=False, scratch=self._kscratch)
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
                self._ks.stream_step(self._kplan, self._kmeta, b, validate=False, scratch=self._kscratch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._ks.stream_step(self._kplan, self._kmeta, b, validate=False, scratch=self._kscratch)
        self._graphs[b] = graph

    def warmup(self, max_n) -> list:
        """Capture every bucket's graph up to ``max_n`` streams (all when None); returns the buckets."""
        if not self.cuda_graphs:
            return []
        top = next_pow2(self.max_streams if max_n is None else max(1, min(int(max_n), self.max_streams)))
        done, b = [], 1
        while b <= top:
            if b not in self._graphs:
                self._capture(b)
            done.append(b)
            b *= 2
        return done
