"""The ``"torch"`` streaming backend: one batched GEMM per layer over all pushed streams.

Gathers each layer's taps from the engine's rings into a preallocated buffer with one
``index_select`` (host-built flat indices, no per-stream Python loop), runs the layer, and
writes ring inputs back with ``index_copy_``. Any device and dtype torch's ``addmm`` supports.

CPU fp32: oneDNN linear with prepacked weights and the bias + ReLU fused into the GEMM (about
30 % faster than addmm on the 243f layers on a 2-core EPYC, and fewer parallel regions per
step). That is a private ``torch.ops.mkldnn`` op: :func:`_onednn_linear_ok` probes it once
(present and exact on a small case) and every layer falls back to the public ``addmm`` path
otherwise; ``tests/test_streaming.py`` runs both paths against each other.
"""
from __future__ import annotations

import numpy as np
import torch

from fastlift.stream_backends.step import StepOp, layer, next_pow2

__all__ = ["TorchBackend"]

# Layers with fewer weights than this use addmm even where oneDNN is available (call overhead:
# a oneDNN call costs ~40 us).
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


class TorchBackend:
    """Steps the engine's rings with torch ops (see the module docstring)."""

    name = "torch"

    def __init__(self, engine):
        self.device, self.dtype = engine.device, engine.dtype
        self.max_streams = engine.max_streams
        self.channels = engine.channels
        self._c_out = engine.num_joints_out * 3
        self._ops: list[StepOp] = engine._ops
        self._rings = engine._rings
        self._rings_flat = [r.view(-1, r.shape[2]) for r in self._rings]
        self._ring_len = engine._ring_len
        # Host-side tap lags per ring (for the gather indices); tap k has lag (taps-1-k)*d.
        self._ring_lags = [(op.src[1], np.array(op.lags, dtype=np.int64)) for op in self._ops if op.src[0] == "ring"]
        self._pattern_n = -1
        self._scratch_rows = 0
        dev, dt = self.device, self.dtype
        self.onednn = (dev.type == "cpu" and dt in (torch.float32, torch.bfloat16) and _onednn_linear_ok()
                       and (dt == torch.float32 or _onednn_bf16_ok()))
        for op in self._ops:
            op.onednn = self.onednn and op.w.numel() >= _ONEDNN_MIN_WEIGHTS
            if op.onednn:
                op.w = torch.ops.mkldnn._reorder_linear_weight(op.w.t().contiguous(), self.max_streams)

    def warmup(self, max_n):
        return []

    def _ensure_scratch(self, n: int) -> None:
        """Grow the gather/GEMM buffers to hold ``n`` rows (power-of-two growth, rare)."""
        if n <= self._scratch_rows:
            return
        rows = min(next_pow2(n), next_pow2(self.max_streams))
        dev, dt = self.device, self.dtype
        c = self.channels
        widest = max(op.conv.taps * op.conv.c_in for op in self._ops if op.src[0] == "ring")
        self._gather = torch.empty(rows * widest, device=dev, dtype=dt)
        # addmm layers write into these; oneDNN layers return fresh outputs.
        self._bufs = {name: torch.empty(rows, c, device=dev, dtype=dt) for name in ("h", "g", "y")}
        self._bufs["out"] = torch.empty(rows, self._c_out, device=dev, dtype=dt)
        self._scratch_rows = rows

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
            # First frame of a stream: fill its whole history with the constant response (engine doc).
            self._rings[r][fresh_slots] = y.index_select(0, fresh_rows).unsqueeze(1)

    def step(self, arr: np.ndarray, t: np.ndarray, fresh: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """Advance streams ``arr`` (at times ``t``; ``fresh`` marks first frames) by frames ``x (n, J_in*F)``;
        returns the shrink output ``(n, J_out*3)`` (a view of a scratch buffer)."""
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
            y = self.linear(op, a, out=self._bufs["y" if op.dst[0] == "ring" else op.dst[1]][:n])
            if op.res is not None:
                # The residual is one of the taps the dilated conv gathered: reuse that slice.
                g = gathered[op.res[0]]
                y.add_(g[:, op.res_tap * c.c_out: (op.res_tap + 1) * c.c_out])
            if op.dst[0] == "ring":
                self._write_ring(op.dst[1], idx, y, fresh_rows, fresh_slots)
            a = y
        return a

    def linear(self, op: StepOp, a: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``act(a @ W + b)`` for one layer: ``a (rows, taps*C_in)`` -> ``(rows, C_out)``."""
        if op.onednn:
            return torch.ops.mkldnn._linear_pointwise(a, op.w, op.b, "relu" if op.conv.relu else "none", [], "")
        return layer(a, op.w, op.b, op.conv.relu, out=out)


def _onednn_bf16_ok() -> bool:
    from fastlift.cpu_infer import onednn_linear_available

    return onednn_linear_available(torch.bfloat16)
