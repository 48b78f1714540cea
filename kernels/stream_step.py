"""Fused Triton kernel for one layer of a streaming step, its launcher, and the whole-step runner.

A streaming step advances ``N`` streams by one frame each. Every layer of the lifter is one
launch of :func:`_stream_layer_kernel` over all ``N`` rows (one row per stream):

1. gather the layer's taps from a per-slot ring buffer by ``(slot, (t - lag) mod L)``
   (the expand layer takes its newest tap straight from the new input frames),
2. one GEMM ``[N x taps*C_in] . [taps*C_in x C_out]`` accumulated in fp32,
3. epilogue: ``+ bias``, ReLU, ``+ residual`` (the block input's centre tap, or its newest tap
   for causal models, read from the block input's ring: no extra buffer),
4. store into the next layer's ring at ``(slot, t mod L)``, or into a plain ``(N, C_out)`` buffer
   when the next layer is a 1x1 conv that needs no history.

A *fresh* row (the first frame of a stream) writes its result into every position of the next
ring. Because the whole-sequence path replicates a sequence's first frame on the left, every
activation of a stream before its first frame equals the network's response to that constant
frame; filling the rings with it on the first push makes streaming exactly equal to
whole-sequence inference, for one frame of work.

Row metadata ``meta`` is an ``int64`` tensor ``(3, meta_stride)``: ``meta[0]`` slot index,
``meta[1]`` the row's frame time ``t`` (number of frames the stream had before this one),
``meta[2]`` fresh flag (non-zero on a stream's first frame). Rows beyond the real streams (CUDA
graph bucket padding) point at a dummy slot whose state nobody reads.

Ring layout: ``(slots, L, C)`` contiguous, channel-contiguous, ``L = span + 1`` where
``span = (taps - 1) * dilation`` of the layer that reads it. The extra entry holds the newest
frame, so every tap of a step is read from the ring while the write of the step's new frame
(position ``t mod L``) never aliases a tap another program of the same launch still reads.

Few streams (split-K): at N = 1 the (row tile x column tile) grid of a 1,024-channel layer is 32
programs, a quarter of an H100's SMs, for a step bound by reading the weights. The launch then
also splits the reduction over ``taps * c_in`` into ``SPLIT_K`` slices (grid axis 2, planned by
:func:`fastlift.kernels._common.stream_config` from the target's SM count). Each slice stores an
fp32 partial into a :class:`StreamScratch` and counts its arrival on its output tile; the last
arrival adds the partials in slice order (deterministic: the same bits whatever the arrival
order), runs the epilogue and resets the tile's counter. One launch per layer, as before.

Limitations: dtypes fp16 / bf16 / fp32 (fp32 ``tl.dot`` precision follows
:func:`fastlift.kernels._common.dot_precision`); CPU tensors only under ``TRITON_INTERPRET=1`` (set
before triton is imported) or in a compile-only session.

Operator: the launch is registered as ``torch.ops.fastlift.stream_layer`` (mutating ``src`` and
``dst``) with the torch twin :func:`stream_layer_reference` as its CPU implementation, so it
works under ``torch.compile``/``opcheck`` like the other ops. :class:`fastlift.streaming.StreamingLifter`
calls :func:`stream_layer` (the launcher) directly instead: its step is ~9 launches that must
cost a few microseconds each and are captured into CUDA graphs that replay in-place updates of
engine-owned ring buffers; the dispatcher adds per-call overhead there and brings nothing
(there is nothing to trace or differentiate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from fastlift.kernels._common import SUPPORTED_DTYPES, dot_precision, interpreter_active, stream_config
from fastlift.kernels._common import kernels_available as _kernels_available
from fastlift.kernels.launch import compile_only_active, launch

__all__ = ["StreamLayer", "StreamScratch", "launch_config", "scratch_for", "stream_layer", "stream_step",
           "validate_layer", "interpreter_active", "kernels_available", "stream_layer_reference", "SUPPORTED_DTYPES"]


@triton.jit
def _stream_epilogue(acc, b_ptr, res_ptr, dst_ptr, slot, t, fresh, rows64, cols, row_ok, col_ok, c_out, l_res, res_lag,
                     l_dst, HAS_RES: tl.constexpr, DST_RING: tl.constexpr, RELU: tl.constexpr):
    """``acc`` (BLOCK_N x BLOCK_C fp32, the finished GEMM) + bias, ReLU, + residual, stored into the
    next ring (with the first-frame fill) or the plain row buffer."""
    acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    ok2 = row_ok[:, None] & col_ok[None, :]
    if HAS_RES:
        rpos = (t % l_res + l_res - res_lag) % l_res
        r_row = (slot * l_res + rpos) * c_out
        acc += tl.load(res_ptr + r_row[:, None] + cols[None, :], mask=ok2, other=0.0).to(tl.float32)
    out = acc.to(dst_ptr.dtype.element_ty)
    if DST_RING:
        d_row = (slot * l_dst + t % l_dst) * c_out
        tl.store(dst_ptr + d_row[:, None] + cols[None, :], out, mask=ok2)
        if tl.max(fresh.to(tl.int32), axis=0) > 0:
            # First frame of a stream: its whole history is the constant response (module doc).
            fmask = fresh[:, None] & col_ok[None, :]
            for p in range(0, l_dst):
                tl.store(dst_ptr + ((slot * l_dst + p) * c_out)[:, None] + cols[None, :], out, mask=fmask)
    else:
        tl.store(dst_ptr + rows64[:, None] * c_out + cols[None, :], out, mask=ok2)


@triton.jit
def _stream_tile(src_ptr, x_ptr, w_ptr, b_ptr, res_ptr, dst_ptr, part_ptr, count_ptr, slot, t, fresh, rows64, row_ok, cols,
                 col_ok, ks, pid_n, pid_c, pid_k, n_rows, c_in, c_out, l_src, l_res, res_lag, l_dst,
                 TAPS: tl.constexpr, DIL: tl.constexpr, SRC_RING: tl.constexpr, NEWEST_FROM_X: tl.constexpr,
                 HAS_RES: tl.constexpr, DST_RING: tl.constexpr, RELU: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, PRECISION: tl.constexpr):
    """One output tile (rows x columns) of the layer over this program's K slice: GEMM, then the
    epilogue (SPLIT_K == 1) or the partial store and, for the last slice to arrive, the reduction."""
    # This program's slice of the K blocks (tap-major: tap k owns blocks k*kb .. k*kb + kb - 1).
    kb = tl.cdiv(c_in, BLOCK_K)
    kb_lo = (pid_k * TAPS * kb) // SPLIT_K
    kb_hi = ((pid_k + 1) * TAPS * kb) // SPLIT_K

    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(TAPS):
        lag = (TAPS - 1 - k) * DIL  # compile-time: tap k of a width-TAPS conv with dilation DIL
        if SRC_RING:
            # lag <= span < l_src, so adding l_src keeps the operand of % non-negative.
            pos = (t % l_src + l_src - lag) % l_src
            a_row = (slot * l_src + pos) * c_in
        else:
            a_row = rows64 * c_in
        if SPLIT_K == 1:
            k_start = 0
            k_stop = c_in
        else:
            k_start = tl.minimum(tl.maximum(kb_lo - k * kb, 0), kb) * BLOCK_K
            k_stop = tl.minimum(tl.maximum(kb_hi - k * kb, 0) * BLOCK_K, c_in)
        for k0 in range(k_start, k_stop, BLOCK_K):
            kk = k0 + ks
            k_ok = kk < c_in
            if NEWEST_FROM_X:
                # The newest tap (and, on a stream's first frame, every tap) is the new input frame.
                if lag == 0:
                    a = tl.load(x_ptr + rows64[:, None] * c_in + kk[None, :], mask=row_ok[:, None] & k_ok[None, :],
                                other=0.0)
                else:
                    # One load from either tensor (a pointer select), not two masked loads: the
                    # second load's registers made the expand layer spill.
                    a_base = tl.where(fresh, x_ptr + rows64 * c_in, src_ptr + a_row)
                    a = tl.load(a_base[:, None] + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            else:
                a = tl.load(src_ptr + a_row[:, None] + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w_rows = (k * c_in + kk).to(tl.int64)
            b = tl.load(w_ptr + w_rows[:, None] * c_out + cols[None, :], mask=k_ok[:, None] & col_ok[None, :],
                        other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if SPLIT_K == 1:
        _stream_epilogue(acc, b_ptr, res_ptr, dst_ptr, slot, t, fresh, rows64, cols, row_ok, col_ok, c_out, l_res,
                         res_lag, l_dst, HAS_RES, DST_RING, RELU)
    else:
        # Deterministic split-K in one launch: every slice stores its fp32 partial, then counts its
        # arrival on the output tile; the last to arrive (whichever it is) adds the SPLIT_K partials
        # in slice order 0, 1, ... -- the same sum, bit for bit, whatever the arrival order -- runs
        # the epilogue and re-arms the counter for the next launch (or CUDA-graph replay).
        ok2 = row_ok[:, None] & col_ok[None, :]
        tl.store(part_ptr + ((pid_k * n_rows + rows64) * c_out)[:, None] + cols[None, :], acc, mask=ok2)
        # Every thread's stores precede the (release) arrival; the last arriver's acquire makes the
        # other slices' stores visible, and its reads bypass L1 (.cg), which is not coherent.
        tl.debug_barrier()
        tile = pid_n * tl.num_programs(1) + pid_c
        arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            tot = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
            for s in tl.static_range(SPLIT_K):
                tot += tl.load(part_ptr + ((s * n_rows + rows64) * c_out)[:, None] + cols[None, :], mask=ok2,
                               other=0.0, cache_modifier=".cg")
            tl.atomic_xchg(count_ptr + tile, 0)
            _stream_epilogue(tot, b_ptr, res_ptr, dst_ptr, slot, t, fresh, rows64, cols, row_ok, col_ok, c_out, l_res,
                             res_lag, l_dst, HAS_RES, DST_RING, RELU)


@triton.jit
def _record_input(src_ptr, x_ptr, slot, t, fresh, rows64, row_ok, ks, c_in, l_src, BLOCK_K: tl.constexpr):
    """Store the rows' new input frames at ``t mod l_src`` of the input ring (every position for a
    stream's first frame)."""
    any_fresh = tl.max(fresh.to(tl.int32), axis=0) > 0
    s_row = (slot * l_src + t % l_src) * c_in
    for k0 in range(0, c_in, BLOCK_K):
        kk = k0 + ks
        m = row_ok[:, None] & (kk < c_in)[None, :]
        xv = tl.load(x_ptr + rows64[:, None] * c_in + kk[None, :], mask=m, other=0.0)
        tl.store(src_ptr + s_row[:, None] + kk[None, :], xv, mask=m)
        if any_fresh:
            fm = fresh[:, None] & (kk < c_in)[None, :]
            for p in range(0, l_src):
                tl.store(src_ptr + ((slot * l_src + p) * c_in)[:, None] + kk[None, :], xv, mask=fm)


@triton.jit
def _stream_layer_kernel(
    src_ptr,   # SRC_RING: (slots, l_src, c_in) ring of the layer input; else (n_rows, c_in) plain rows
    x_ptr,     # NEWEST_FROM_X: (n_rows, c_in) the new input frame of each row; unused otherwise
    w_ptr,     # (taps * c_in, c_out) BN-folded weight, tap-major rows (tap k has lag (taps-1-k)*dil)
    b_ptr,     # (c_out,) fp32 folded bias
    res_ptr,   # HAS_RES: (slots, l_res, c_out) ring of the block input (residual source); unused otherwise
    dst_ptr,   # DST_RING: (slots, l_dst, c_out) ring of the next layer's input; else (n_rows, c_out)
    meta_ptr,  # (3, meta_stride) int64: slot, frame time t, fresh flag per row
    part_ptr,  # SPLIT_K > 1: (SPLIT_K, n_rows, c_out) fp32 partial sums of the K slices; unused otherwise
    count_ptr,  # SPLIT_K > 1: (row tiles * column tiles,) int32 arrivals per output tile, 0 between launches
    n_rows, c_in, c_out, l_src, l_res, res_lag, l_dst, meta_stride,
    TAPS: tl.constexpr, DIL: tl.constexpr, SRC_RING: tl.constexpr, NEWEST_FROM_X: tl.constexpr, HAS_RES: tl.constexpr,
    DST_RING: tl.constexpr, RELU: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr, PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_k = tl.program_id(2)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < c_out
    ks = tl.arange(0, BLOCK_K)

    slot = tl.load(meta_ptr + rows64, mask=row_ok, other=0).to(tl.int64)
    t = tl.load(meta_ptr + meta_stride + rows64, mask=row_ok, other=0).to(tl.int64)
    fresh = (tl.load(meta_ptr + 2 * meta_stride + rows64, mask=row_ok, other=0) != 0) & row_ok

    if NEWEST_FROM_X:
        if pid_c == tl.num_programs(1) - 1:
            # The extra last column of programs records the new input frames in the input ring
            # (apart from the GEMM programs: in the same program its registers made the expand
            # layer spill). Programs of this launch read that ring only at lags >= 1 (positions
            # != t mod l_src) or, for fresh rows, not at all, so the write cannot race with a read.
            if pid_k == 0:
                _record_input(src_ptr, x_ptr, slot, t, fresh, rows64, row_ok, ks, c_in, l_src, BLOCK_K)
        else:
            _stream_tile(src_ptr, x_ptr, w_ptr, b_ptr, res_ptr, dst_ptr, part_ptr, count_ptr, slot, t, fresh, rows64,
                         row_ok, cols, col_ok, ks, pid_n, pid_c, pid_k, n_rows, c_in, c_out, l_src, l_res, res_lag,
                         l_dst, TAPS, DIL, SRC_RING, NEWEST_FROM_X, HAS_RES, DST_RING, RELU, BLOCK_N, BLOCK_C, BLOCK_K,
                         SPLIT_K, PRECISION)
    else:
        _stream_tile(src_ptr, x_ptr, w_ptr, b_ptr, res_ptr, dst_ptr, part_ptr, count_ptr, slot, t, fresh, rows64,
                     row_ok, cols, col_ok, ks, pid_n, pid_c, pid_k, n_rows, c_in, c_out, l_src, l_res, res_lag, l_dst,
                     TAPS, DIL, SRC_RING, NEWEST_FROM_X, HAS_RES, DST_RING, RELU, BLOCK_N, BLOCK_C, BLOCK_K, SPLIT_K,
                     PRECISION)


def kernels_available(device: torch.device) -> bool:
    """Whether the step kernel can run on ``device``: CUDA, CPU under the interpreter, or any device
    in a compile-only session."""
    device = torch.device(device)
    if device.type == "cpu":  # this module's interpreter_active (tests patch it)
        return interpreter_active() or compile_only_active()
    return _kernels_available(device)


@dataclass
class StreamLayer:
    """One launch of the step: a BN-folded conv reading a ring (or plain rows) and writing the next.

    Attributes:
        weight: ``(taps * c_in, c_out)`` contiguous, the step dtype.
        bias: ``(c_out,)`` fp32 contiguous.
        taps, dilation: kernel width and frame spacing of the taps.
        src: ``(slots, L_src, c_in)`` ring when ``src_ring`` else ``(rows, c_in)`` buffer.
        dst: ``(slots, L_dst, c_out)`` ring when ``dst_ring`` else ``(rows, c_out)`` buffer.
        x: ``(rows, c_in)`` new input frames when the newest tap comes from the input (expand layer).
        res: ``(slots, L_res, c_out)`` ring of the block input when the layer adds a residual.
        res_lag: frames between the step's newest frame and the residual tap.
        relu: apply ReLU before the residual add.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    taps: int
    dilation: int
    src: torch.Tensor
    src_ring: bool
    dst: torch.Tensor
    dst_ring: bool
    relu: bool
    x: torch.Tensor | None = None
    res: torch.Tensor | None = None
    res_lag: int = 0


def _fail(name: str, expected: str, got) -> ValueError:
    return ValueError(f"{name}: expected {expected}, got {got}")


def validate_layer(layer: StreamLayer, meta: torch.Tensor, n_rows: int) -> None:
    """Check one launch's operands (shapes, dtypes, devices, contiguity, aliasing, slot range); raise ValueError."""
    w, b = layer.weight, layer.bias
    dev = w.device
    if w.dim() != 2 or not w.is_contiguous():
        raise _fail("weight", "a contiguous (taps * c_in, c_out) matrix", f"shape {tuple(w.shape)}, contiguous={w.is_contiguous()}")
    if w.dtype not in SUPPORTED_DTYPES:
        raise _fail("weight", f"dtype in {SUPPORTED_DTYPES}", w.dtype)
    if layer.taps < 1 or layer.dilation < 1 or w.shape[0] % layer.taps:
        raise _fail("taps/dilation", f"positive integers with taps dividing weight rows {w.shape[0]}",
                    f"taps={layer.taps}, dilation={layer.dilation}")
    c_in, c_out = w.shape[0] // layer.taps, w.shape[1]
    if b.shape != (c_out,) or b.dtype != torch.float32 or not b.is_contiguous():
        raise _fail("bias", f"a contiguous fp32 ({c_out},) vector", f"shape {tuple(b.shape)}, dtype {b.dtype}")
    if meta.dtype != torch.int64 or meta.dim() != 2 or meta.shape[0] != 3 or meta.stride(1) != 1 or meta.shape[1] < n_rows:
        raise _fail("meta", f"an int64 (3, >= {n_rows}) tensor with contiguous rows",
                    f"dtype {meta.dtype}, shape {tuple(meta.shape)}, strides {meta.stride()}")
    tensors = {"weight": w, "bias": b, "src": layer.src, "dst": layer.dst, "meta": meta}
    if layer.x is not None:
        tensors["x"] = layer.x
    if layer.res is not None:
        tensors["res"] = layer.res
    for name, tns in tensors.items():
        if tns.device != dev:
            raise _fail(name, f"a tensor on {dev} (the weight's device)", f"device {tns.device}")
        if not tns.is_contiguous():
            raise _fail(name, "a contiguous tensor", f"strides {tns.stride()} for shape {tuple(tns.shape)}")
    if not kernels_available(dev):
        raise ValueError("stream_layer: CPU tensors need the Triton interpreter; set TRITON_INTERPRET=1 before "
                         "triton is first imported in the process (or use the torch path of StreamingLifter)")
    for name, tns, c, ring in (("src", layer.src, c_in, layer.src_ring), ("dst", layer.dst, c_out, layer.dst_ring)):
        if tns.dtype != w.dtype:
            raise _fail(name, f"dtype {w.dtype} (the weight's)", tns.dtype)
        if ring and (tns.dim() != 3 or tns.shape[2] != c):
            raise _fail(name, f"a ring (slots, L, {c})", f"shape {tuple(tns.shape)}")
        if not ring and (tns.dim() != 2 or tns.shape[1] != c or tns.shape[0] < n_rows):
            raise _fail(name, f"a (>= {n_rows}, {c}) row buffer", f"shape {tuple(tns.shape)}")
    span = (layer.taps - 1) * layer.dilation
    if layer.src_ring and layer.src.shape[1] < span + 1:
        raise _fail("src", f"a ring of length >= span + 1 = {span + 1}", f"length {layer.src.shape[1]}")
    if not layer.src_ring and layer.taps != 1:
        raise _fail("taps", "1 when the source is a plain row buffer (no history)", layer.taps)
    if layer.x is not None:
        if not layer.src_ring:
            raise ValueError("x: the newest-tap input needs a ring source to record it in")
        if layer.x.dtype != w.dtype or layer.x.dim() != 2 or layer.x.shape[1] != c_in or layer.x.shape[0] < n_rows:
            raise _fail("x", f"a {w.dtype} (>= {n_rows}, {c_in}) tensor", f"dtype {layer.x.dtype}, shape {tuple(layer.x.shape)}")
    if layer.res is not None:
        r = layer.res
        if r.dtype != w.dtype or r.dim() != 3 or r.shape[2] != c_out or not (0 <= layer.res_lag < r.shape[1]):
            raise _fail("res", f"a {w.dtype} ring (slots, L > res_lag={layer.res_lag}, {c_out})",
                        f"dtype {r.dtype}, shape {tuple(r.shape)}")
        if r.data_ptr() == layer.dst.data_ptr():
            raise ValueError("res: the residual ring must not be the destination (the launch would read what it writes)")
    if layer.dst.data_ptr() == layer.src.data_ptr():
        raise ValueError("dst: the destination must not be the source (the launch would read what it writes)")
    if layer.dst_ring or layer.src_ring or layer.res is not None:
        rings = [tns.shape[0] for tns, ring in ((layer.src, layer.src_ring), (layer.dst, layer.dst_ring)) if ring]
        if layer.res is not None:
            rings.append(layer.res.shape[0])
        if len(set(rings)) != 1:
            raise _fail("rings", "the same number of slots in every ring", rings)
        if n_rows:
            used = meta[0, :n_rows]
            if int(used.min()) < 0 or int(used.max()) >= rings[0]:
                raise _fail("meta[0]", f"slot indices in [0, {rings[0]})", f"range [{int(used.min())}, {int(used.max())}]")
            if int(meta[1, :n_rows].min()) < 0:
                raise _fail("meta[1]", "non-negative frame times", int(meta[1, :n_rows].min()))


class StreamScratch:
    """Workspace of the split-K step (see :func:`fastlift.kernels._common.stream_config`).

    Attributes:
        partials: ``(>= SPLIT_K * n_rows * c_out,)`` fp32, the K slices' partial sums.
        counters: ``(>= row tiles * column tiles,)`` int32 arrivals per output tile; zero between
            launches (each launch re-arms what it used), so one scratch serves every layer of a
            step and every CUDA-graph bucket as long as its launches run in stream order.
    """

    def __init__(self, device, partial_elems: int, tiles: int):
        self.partials = torch.empty(max(1, int(partial_elems)), device=device, dtype=torch.float32)
        self.counters = torch.zeros(max(1, int(tiles)), device=device, dtype=torch.int32)

    def fits(self, partial_elems: int, tiles: int) -> bool:
        return self.partials.numel() >= partial_elems and self.counters.numel() >= tiles


def launch_config(layer: StreamLayer, n_rows: int, split_k: Optional[int] = None) -> dict:
    """Tiles, ``SPLIT_K`` and grid of one layer's launch over ``n_rows`` rows, and the scratch it needs
    (``partial_elems``, ``tiles``; both 0 without a split)."""
    return _config(layer.weight, layer.taps, n_rows, layer.x is not None, split_k)


def _config(weight, taps, n_rows, newest_from_x, split_k=None) -> dict:
    c_in, c_out = weight.shape[0] // taps, weight.shape[1]
    cfg = stream_config(n_rows, c_out, weight.dtype, weight.device, c_in=c_in, taps=taps, split_k=split_k)
    # With the newest tap from x, one extra column of programs records x in the input ring.
    grid = (triton.cdiv(n_rows, cfg["BLOCK_N"]), triton.cdiv(c_out, cfg["BLOCK_C"]) + int(newest_from_x),
            cfg["SPLIT_K"])
    split = cfg["SPLIT_K"] > 1
    return dict(cfg=cfg, grid=grid, partial_elems=cfg["SPLIT_K"] * n_rows * c_out if split else 0,
                tiles=grid[0] * grid[1] if split else 0)


def scratch_for(layers: list[StreamLayer], max_rows: int) -> StreamScratch:
    """A scratch large enough for every layer of ``layers`` at every power-of-two row bucket up to
    ``max_rows`` (the engine's CUDA-graph buckets), on the layers' device."""
    elems = tiles = 0
    b = 1
    while True:
        for layer in layers:
            need = launch_config(layer, b)
            elems, tiles = max(elems, need["partial_elems"]), max(tiles, need["tiles"])
        if b >= max_rows:
            break
        b *= 2
    return StreamScratch(layers[0].weight.device if layers else "cpu", elems, tiles)


def stream_layer(layer: StreamLayer, meta: torch.Tensor, n_rows: int, validate: bool = True,
                 scratch: Optional[StreamScratch] = None, split_k: Optional[int] = None) -> None:
    """Launch one layer of a streaming step over rows ``0 .. n_rows-1`` (in place, returns nothing).

    ``meta``: ``(3, >= n_rows)`` int64 (slot, frame time, fresh flag per row). ``validate=False``
    skips the checks (the engine validates its launch plan once, then replays it). ``scratch``: the
    split-K workspace (:func:`scratch_for`); without one (or too small) a split launch allocates its
    own. ``split_k`` forces the split count (tests; clamped to the K blocks).
    """
    if validate:
        validate_layer(layer, meta, n_rows)
        if split_k is not None and int(split_k) < 1:
            raise _fail("split_k", "a positive integer", split_k)
    if n_rows == 0:
        return
    _launch_layer(layer.src, layer.x, layer.weight, layer.bias, layer.res, layer.dst, meta, n_rows, layer.taps,
                  layer.dilation, layer.res_lag, layer.src_ring, layer.dst_ring, layer.relu, scratch, split_k)


def _launch_layer(src, x, weight, bias, res, dst, meta, n_rows, taps, dilation, res_lag, src_ring, dst_ring, relu,
                  scratch=None, split_k=None):
    c_in = weight.shape[0] // taps
    c_out = weight.shape[1]
    plan = _config(weight, taps, n_rows, x is not None, split_k)
    cfg, grid = plan["cfg"], plan["grid"]
    if cfg["SPLIT_K"] > 1:
        if scratch is None or not scratch.fits(plan["partial_elems"], plan["tiles"]):
            scratch = StreamScratch(weight.device, plan["partial_elems"], plan["tiles"])
        part, count = scratch.partials, scratch.counters
    else:
        part, count = bias, meta  # unused by the SPLIT_K == 1 specialisation
    l_src = src.shape[1] if src_ring else 1
    l_dst = dst.shape[1] if dst_ring else 1
    l_res = res.shape[1] if res is not None else 1
    launch(_stream_layer_kernel, grid,
           src, x if x is not None else src, weight, bias, res if res is not None else dst, dst, meta, part, count,
           n_rows, c_in, c_out, l_src, l_res, res_lag, l_dst, meta.stride(0),
           TAPS=taps, DIL=dilation, SRC_RING=src_ring, NEWEST_FROM_X=x is not None, HAS_RES=res is not None,
           DST_RING=dst_ring, RELU=relu, PRECISION=dot_precision(weight.dtype), **cfg)


def stream_step(layers: list[StreamLayer], meta: torch.Tensor, n_rows: int, validate: bool = True,
                scratch: Optional[StreamScratch] = None) -> None:
    """Run every layer of a step in order (one launch per layer; CUDA-graph capturable when ``scratch``
    covers every split launch, see :func:`scratch_for`)."""
    for layer in layers:
        stream_layer(layer, meta, n_rows, validate, scratch)


# ---------------------------------------------------------------------------------- torch twin + operator
def stream_layer_reference(src: torch.Tensor, x: Optional[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                           res: Optional[torch.Tensor], dst: torch.Tensor, meta: torch.Tensor, n_rows: int, taps: int,
                           dilation: int, res_lag: int, src_ring: bool, dst_ring: bool, relu: bool) -> None:
    """Torch twin of one launch (arguments as the fields of :class:`StreamLayer`); updates ``dst`` (and,
    with ``x``, the input ring ``src``) in place. Math in fp32 (fp64 kept), rounded to ``dst``'s dtype."""
    if n_rows == 0:
        return
    acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
    slot, t = meta[0, :n_rows], meta[1, :n_rows]
    fresh = meta[2, :n_rows] != 0
    taps_in = []
    for k in range(taps):
        lag = (taps - 1 - k) * dilation
        a = src[slot, (t - lag) % src.shape[1]] if src_ring else src[:n_rows]
        if x is not None:
            a = torch.where((fresh | (lag == 0))[:, None], x[:n_rows], a)
        taps_in.append(a.to(acc))
    y = torch.cat(taps_in, 1) @ weight.to(acc) + bias.to(acc)
    if relu:
        y = torch.relu(y)
    if res is not None:
        y = y + res[slot, (t - res_lag) % res.shape[1]].to(acc)
    out = y.to(dst.dtype)
    if dst_ring:
        dst[slot[fresh]] = out[fresh][:, None]
        dst[slot, t % dst.shape[1]] = out
    else:
        dst[:n_rows] = out
    if x is not None:
        xs = x[:n_rows].to(src.dtype)
        src[slot[fresh]] = xs[fresh][:, None]
        src[slot, t % src.shape[1]] = xs


@torch.library.triton_op("fastlift::stream_layer", mutates_args=("src", "dst"))
def _stream_layer_op(src: torch.Tensor, x: Optional[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                     res: Optional[torch.Tensor], dst: torch.Tensor, meta: torch.Tensor, n_rows: int, taps: int,
                     dilation: int, res_lag: int, src_ring: bool, dst_ring: bool, relu: bool) -> None:
    if n_rows:
        _launch_layer(src, x, weight, bias, res, dst, meta, n_rows, taps, dilation, res_lag, src_ring, dst_ring, relu)


_stream_layer_op.register_kernel("cpu")(stream_layer_reference)
