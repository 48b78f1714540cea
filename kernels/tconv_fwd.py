"""Fused temporal convolution, forward: ``y = epilogue(conv(prologue(x)))``.

One GEMM ``[rows x taps*C_in] . [taps*C_in x C_out]`` whose A tile is ``taps`` row-shifted loads
(offsets ``t*stride + k*dilation``) of the same activation matrix, in (batch, time, channel)
layout. It covers every conv of the lifter:

* expand conv (``C_in = joints*features``, e.g. 34; masked K tiles pad it for ``tl.dot``),
  optionally reading the raw sequence with **edge replication done in the index math**
  (``edge_left``/``edge_right``: no padded copy is materialised);
* dilated / dense convs (``stride=1``) and the strided convs of the 1f model (``stride=taps``);
* 1x1 convs and the shrink conv (``taps=1``).

Prologue (applied to A as it is loaded, in fp32):
  ``PRO_BN_ACT``      A = dropout(relu(x*scale + shift))          (previous layer's BatchNorm)
  ``PRO_BN_ACT_RES``  A = pres[row map] + dropout(relu(x*scale + shift))   (a block output)
Epilogue: ``+ bias``, ``ReLU``, ``+ residual`` (read at row ``t*res_row_stride + res_offset`` of
the residual tensor: the block input's centre or newest tap, no slicing copy), per-tile BN partial
statistics of the output (sum and centred sum of squares, combined deterministically by
:mod:`fastlift.kernels.bn_stats`), and an optional fused shrink (1x1 conv to ``J*3``) that writes
per-N-tile partial products instead of the wide activation.

Dropout masks use the counter hash of :mod:`fastlift.kernels._common` keyed by a seed held in a
device tensor plus a per-layer salt, and the element's logical index ``(b*T + t)*C + c`` in the
tensor the mask belongs to.

Accumulation is fp32; activations fp32/fp16/bf16.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from fastlift.kernels._common import (
    PRO_BN_ACT,
    PRO_BN_ACT_RES,
    PRO_NONE,
    check_dtype,
    check_kernel_device,
    dot_precision,
    dropout_key,
    dropout_apply_torch,
    dropout_threshold,
    gemm_config,
    placeholder,
    load_activation,
    swizzle,
    tile_column_sums,
    use_launcher,
)
from fastlift.kernels import tuning
from fastlift.kernels.launch import launch

__all__ = ["tconv_fwd", "tconv_fwd_launch", "tconv_fwd_reference", "conv_out_frames", "bn_act_torch", "stats_tile_rows"]


@triton.jit
def _tconv_fwd_kernel(
    x_ptr,  # [B, T_in, C_in] activations (strided: sxb, sxt, sxc)
    w_ptr,  # [TAPS*C_in, C_out] weights, row-major, tap-major rows
    bias_ptr,  # [C_out] fp32 (HAS_BIAS)
    res_ptr,  # [B, T_res, C_out] epilogue residual (strided: srb, srt, src) (HAS_RES)
    y_ptr,  # [M = B*T_out, C_out] output, contiguous (STORE_Y)
    pscale_ptr,  # [C_in] fp32 prologue BN scale (PRO != 0)
    pshift_ptr,  # [C_in] fp32 prologue BN shift (PRO != 0)
    pmean_ptr,  # [C_in] fp32 prologue BN mean, subtracted before scaling (CENTRED)
    pres_ptr,  # [B, T_pres, C_in] prologue residual (strided: spb, spt, spc) (PRO == 2)
    seed_ptr,  # [1] int64 dropout seed (DROPOUT)
    psum_ptr,  # [num_m_tiles, C_out] fp32 per-tile column sums (STATS)
    pm2_ptr,  # [num_m_tiles, C_out] fp32 per-tile centred sums of squares (STATS)
    sw_ptr,  # [C_out, J3] shrink weight (SHRINK)
    sout_ptr,  # [num_n_tiles, M, J3] fp32 shrink partial products (SHRINK)
    M, T_out, T_in, C_in, C_out, J3,
    sxb, sxt, sxc, srb, srt, src, spb, spt, spc,
    edge_left,
    res_row_stride, res_offset,
    pres_row_stride, pres_offset,
    threshold, inv_keep, salt,
    TAPS: tl.constexpr, DIL: tl.constexpr, STRIDE: tl.constexpr, EDGE: tl.constexpr,
    PRO: tl.constexpr, DROPOUT: tl.constexpr, CENTRED: tl.constexpr, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
    HAS_RES: tl.constexpr, STATS: tl.constexpr, SHRINK: tl.constexpr, STORE_Y: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_J: tl.constexpr,
    GROUP_M: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(C_out, BLOCK_N)
    pid_m, pid_n = swizzle(pid, num_m, num_n, GROUP_M)

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rows_c = tl.where(row_ok, rows, 0)
    bi = (rows_c // T_out).to(tl.int64)
    ti = rows_c % T_out
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < C_out
    rk = tl.arange(0, BLOCK_K)

    if DROPOUT:
        k1, k2 = dropout_key(tl.load(seed_ptr) + salt)
    else:
        k1 = 0
        k2 = 0

    k_tiles = tl.cdiv(C_in, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # One flat loop over (tap, K tile) so the compiler can software-pipeline the loads.
    for kk in range(0, TAPS * k_tiles):
        tap = kk // k_tiles
        ci = (kk - tap * k_tiles) * BLOCK_K + rk
        ci_ok = ci < C_in
        r = ti * STRIDE + tap * DIL
        if EDGE:
            # Virtual edge-replicated sequence: clamp into the real frames.
            r = tl.minimum(tl.maximum(r - edge_left, 0), T_in - 1)
        amask = row_ok[:, None] & ci_ok[None, :]
        a = load_activation(x_ptr, bi, r, ci, amask, ci_ok, sxb, sxt, sxc, pscale_ptr, pshift_ptr, pmean_ptr, pres_ptr,
                            spb, spt, spc, pres_row_stride, pres_offset, T_in, C_in, k1, k2, threshold, inv_keep,
                            PRO, DROPOUT, CENTRED).to(w_ptr.dtype.element_ty)
        wrow = tap * C_in + ci
        wt = tl.load(w_ptr + wrow[:, None] * C_out + cols[None, :], mask=ci_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, wt, acc, input_precision=PRECISION)

    omask = row_ok[:, None] & col_ok[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    if HAS_RES:
        rr = (ti * res_row_stride + res_offset).to(tl.int64)
        acc += tl.load(res_ptr + bi[:, None] * srb + rr[:, None] * srt + cols[None, :] * src,
                       mask=omask, other=0.0).to(tl.float32)
    if STORE_Y:
        tl.store(y_ptr + rows.to(tl.int64)[:, None] * C_out + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=omask)
    if STATS:
        # Tile-local (sum, centred M2): combined with Chan's formula in bn_stats, which is both
        # deterministic (no atomics) and free of E[x^2] - E[x]^2 cancellation.
        cnt = tl.minimum(M - pid_m * BLOCK_M, BLOCK_M).to(tl.float32)
        accm = tl.where(omask, acc, 0.0)
        s = tl.sum(accm, axis=0)
        d = tl.where(omask, acc - (s / cnt)[None, :], 0.0)
        tl.store(psum_ptr + pid_m * C_out + cols, s, mask=col_ok)
        tl.store(pm2_ptr + pid_m * C_out + cols, tl.sum(d * d, axis=0), mask=col_ok)
    if SHRINK:
        rj = tl.arange(0, BLOCK_J)
        j_ok = rj < J3
        sw = tl.load(sw_ptr + cols[:, None] * J3 + rj[None, :], mask=col_ok[:, None] & j_ok[None, :], other=0.0)
        part = tl.dot(tl.where(omask, acc, 0.0).to(sw_ptr.dtype.element_ty), sw, input_precision=PRECISION)
        tl.store(sout_ptr + (pid_n * M + rows.to(tl.int64))[:, None] * J3 + rj[None, :], part,
                 mask=row_ok[:, None] & j_ok[None, :])


def stats_tile_rows(m, c_out, k, dtype, device) -> int:
    """Rows per BN-partial tile of the forward kernel (its ``BLOCK_M``) for this problem."""
    return gemm_config(m, c_out, k, dtype, device)["BLOCK_M"]


def conv_out_frames(t_in: int, taps: int, dilation: int, stride: int, edge_left: int = 0, edge_right: int = 0) -> int:
    """Output frames of a valid conv over ``t_in`` (+ virtual edge padding) frames."""
    span = (taps - 1) * dilation
    t_virtual = t_in + edge_left + edge_right
    if t_virtual <= span:
        return 0
    return (t_virtual - span - 1) // stride + 1


def _validate(x, w, taps, dilation, stride, bias, residual, res_row_stride, res_offset, pro_scale, pro_shift,
              pro_residual, pres_row_stride, pres_offset, seed, p, shrink_w, edge_left, edge_right, pro_mean=None):
    if x.dim() != 3:
        raise ValueError(f"x: expected (batch, frames, channels), got shape {tuple(x.shape)}")
    if w.dim() != 2:
        raise ValueError(f"w: expected [taps*C_in, C_out], got shape {tuple(w.shape)}")
    if taps < 1 or dilation < 1 or stride < 1:
        raise ValueError(f"taps/dilation/stride must be >= 1, got {taps}/{dilation}/{stride}")
    b, t_in, c_in = x.shape
    if w.shape[0] != taps * c_in:
        raise ValueError(f"w: expected {taps}*{c_in}={taps * c_in} rows for taps={taps} and C_in={c_in}, "
                         f"got shape {tuple(w.shape)}")
    if w.dtype != x.dtype:
        raise TypeError(f"w: expected dtype {x.dtype} (the activations' dtype), got {w.dtype}")
    if not w.is_contiguous():
        raise ValueError("w: expected a contiguous weight matrix")
    c_out = w.shape[1]
    t_out = conv_out_frames(t_in, taps, dilation, stride, edge_left, edge_right)
    if t_out < 1:
        raise ValueError(f"x: {t_in} frames (+{edge_left}+{edge_right} edge padding) are fewer than the "
                         f"{(taps - 1) * dilation + 1} frames one output of this conv needs")
    if bias is not None and (bias.shape != (c_out,) or bias.dtype != torch.float32):
        raise ValueError(f"bias: expected fp32 [{c_out}], got {tuple(bias.shape)} {bias.dtype}")
    if residual is not None:
        if residual.dim() != 3 or residual.shape[0] != b or residual.shape[2] != c_out:
            raise ValueError(f"residual: expected ({b}, frames, {c_out}), got {tuple(residual.shape)}")
        need = (t_out - 1) * res_row_stride + res_offset + 1
        if residual.shape[1] < need or res_offset < 0:
            raise ValueError(f"residual: needs at least {need} frames for res_row_stride={res_row_stride}, "
                             f"res_offset={res_offset}, got {residual.shape[1]}")
    if (pro_scale is None) != (pro_shift is None):
        raise ValueError("pro_scale and pro_shift must be given together")
    if pro_mean is not None and pro_scale is None:
        raise ValueError("pro_mean needs pro_scale/pro_shift (it centres the BN prologue)")
    if pro_scale is not None:
        for n, v in (("pro_scale", pro_scale), ("pro_shift", pro_shift), ("pro_mean", pro_mean)):
            if v is not None and (v.shape != (c_in,) or v.dtype != torch.float32):
                raise ValueError(f"{n}: expected fp32 [{c_in}], got {tuple(v.shape)} {v.dtype}")
    if pro_residual is not None:
        if pro_scale is None:
            raise ValueError("pro_residual needs pro_scale/pro_shift (it is added after the BN activation)")
        if pro_residual.dim() != 3 or pro_residual.shape[0] != b or pro_residual.shape[2] != c_in:
            raise ValueError(f"pro_residual: expected ({b}, frames, {c_in}), got {tuple(pro_residual.shape)}")
        need = (t_in - 1) * pres_row_stride + pres_offset + 1
        if pro_residual.shape[1] < need:
            raise ValueError(f"pro_residual: needs at least {need} frames, got {pro_residual.shape[1]}")
    if p > 0.0:
        if pro_scale is None:
            raise ValueError("p: dropout is applied in the BN prologue; pass pro_scale/pro_shift")
        if seed is None or seed.numel() != 1 or seed.dtype != torch.int64:
            raise ValueError("seed: expected a one-element int64 tensor when p > 0")
    if shrink_w is not None:
        if shrink_w.dim() != 2 or shrink_w.shape[0] != c_out or shrink_w.dtype != x.dtype:
            raise ValueError(f"shrink_w: expected [{c_out}, J*3] of dtype {x.dtype}, got {tuple(shrink_w.shape)} "
                             f"{shrink_w.dtype}")
    if (edge_left or edge_right) and pro_scale is not None:
        raise ValueError("edge padding is only supported on raw inputs (no prologue)")
    return b, t_in, c_in, c_out, t_out


def tconv_fwd_launch(x: torch.Tensor, w: torch.Tensor, taps: int, dilation: int = 1, stride: int = 1,
              bias: Optional[torch.Tensor] = None, relu: bool = False,
              residual: Optional[torch.Tensor] = None, res_row_stride: int = 1, res_offset: int = 0,
              pro_scale: Optional[torch.Tensor] = None, pro_shift: Optional[torch.Tensor] = None,
              pro_residual: Optional[torch.Tensor] = None, pres_row_stride: int = 1, pres_offset: int = 0,
              seed: Optional[torch.Tensor] = None, p: float = 0.0, salt: int = 0,
              stats: bool = False, shrink_w: Optional[torch.Tensor] = None, store_y: bool = True,
              edge_left: int = 0, edge_right: int = 0,
              pro_mean: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the fused forward conv kernel.

    Args:
        x: ``(B, T_in, C_in)`` activations (any strides), fp32/fp16/bf16, CUDA (or CPU under
            ``TRITON_INTERPRET=1``).
        w: ``[taps*C_in, C_out]`` contiguous, same dtype as ``x``.
        bias: fp32 ``[C_out]``; relu: apply ReLU after the bias.
        residual: ``(B, T_res, C_out)`` added after ReLU at rows ``t*res_row_stride + res_offset``.
        pro_scale/pro_shift: fp32 ``[C_in]``: apply BN + ReLU (+ dropout with probability ``p``,
            seed ``seed[0] + salt``) to ``x`` as it is loaded; ``pro_residual`` (rows
            ``r*pres_row_stride + pres_offset``) is then added (a block output).
        pro_mean: fp32 ``[C_in]``: the prologue becomes ``relu((x - pro_mean)*pro_scale + pro_shift)``
            (centred BatchNorm: pass ``pro_shift = beta``; accurate when ``|mean| >> std``).
        stats: also return per-tile BN partials (see :mod:`fastlift.kernels.bn_stats`).
        shrink_w: ``[C_out, J3]``: also return the shrink projection of the output (partials summed).
        store_y: write the ``C_out``-wide output (set False with ``shrink_w`` to skip it).
        edge_left/edge_right: virtual edge-replication padding of the raw input.

    Returns:
        ``(y, psum, pm2, shrink)``: ``y`` ``(B, T_out, C_out)`` (or an empty tensor),
        ``psum``/``pm2`` ``[tiles, C_out]`` fp32 (empty unless ``stats``), ``shrink``
        ``(B, T_out, J3)`` fp32 (empty unless ``shrink_w``).
    """
    check_kernel_device("x", x)
    check_dtype("x", x)
    b, t_in, c_in, c_out, t_out = _validate(x, w, taps, dilation, stride, bias, residual, res_row_stride, res_offset,
                                            pro_scale, pro_shift, pro_residual, pres_row_stride, pres_offset, seed, p,
                                            shrink_w, edge_left, edge_right, pro_mean)
    m = b * t_out
    thr = dropout_threshold(p)
    flags = dict(TAPS=taps, STRIDE=stride, EDGE=bool(edge_left or edge_right),
                 PRO=PRO_NONE if pro_scale is None else (PRO_BN_ACT_RES if pro_residual is not None else PRO_BN_ACT),
                 DROPOUT=thr > 0 and pro_scale is not None, CENTRED=pro_mean is not None, HAS_BIAS=bias is not None,
                 RELU=relu, HAS_RES=residual is not None, STATS=stats, SHRINK=shrink_w is not None, STORE_Y=store_y)
    cfg = tuning.pick("tconv_fwd", gemm_config(m, c_out, c_in * taps, x.dtype, x.device), flags,
                      (m, c_out, c_in * taps), x.dtype, x.device)
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    num_m, num_n = triton.cdiv(m, bm), triton.cdiv(c_out, bn)
    dev = x.device
    dummy = placeholder(dev)
    y = torch.empty((b, t_out, c_out), device=dev, dtype=x.dtype) if store_y else torch.empty(0, device=dev, dtype=x.dtype)
    psum = torch.empty((num_m, c_out), device=dev, dtype=torch.float32) if stats else dummy
    pm2 = torch.empty((num_m, c_out), device=dev, dtype=torch.float32) if stats else dummy
    j3 = shrink_w.shape[1] if shrink_w is not None else 1
    sout = torch.empty((num_n, m, j3), device=dev, dtype=torch.float32) if shrink_w is not None else dummy
    res = residual if residual is not None else x
    pres = pro_residual if pro_residual is not None else x
    launch(_tconv_fwd_kernel, (num_m * num_n,),
        x, w, bias if bias is not None else dummy, res, y if store_y else dummy,
        pro_scale if pro_scale is not None else dummy, pro_shift if pro_shift is not None else dummy,
        pro_mean if pro_mean is not None else dummy, pres,
        seed if seed is not None else placeholder(dev, torch.int64),
        psum, pm2, shrink_w if shrink_w is not None else w, sout,
        m, t_out, t_in, c_in, c_out, j3,
        x.stride(0), x.stride(1), x.stride(2), res.stride(0), res.stride(1), res.stride(2),
        pres.stride(0), pres.stride(1), pres.stride(2),
        edge_left, res_row_stride, res_offset, pres_row_stride, pres_offset,
        thr, 1.0 / (1.0 - p), salt,
        DIL=dilation, **flags, BLOCK_J=max(16, triton.next_power_of_2(j3)), PRECISION=dot_precision(x.dtype), **cfg,
    )
    shrink = sout.sum(0).reshape(b, t_out, j3) if shrink_w is not None else torch.empty(0, device=dev)
    return y, (psum if stats else torch.empty(0, device=dev)), (pm2 if stats else torch.empty(0, device=dev)), shrink


# ---------------------------------------------------------------------------------- torch twin
def bn_act_torch(z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, seed: Optional[torch.Tensor], p: float,
                 salt: int, mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``dropout(relu((z - mean)*scale + shift))`` with the kernels' dropout mask (``mean`` None: 0);
    z ``(B, T, C)`` in fp32/fp64."""
    if mean is not None:
        z = z - mean.to(z.dtype)
    return dropout_apply_torch(torch.relu(z * scale.to(z.dtype) + shift.to(z.dtype)), seed, salt, p)


def tconv_fwd_reference(x, w, taps, dilation=1, stride=1, bias=None, relu=False, residual=None, res_row_stride=1,
                        res_offset=0, pro_scale=None, pro_shift=None, pro_residual=None, pres_row_stride=1,
                        pres_offset=0, seed=None, p=0.0, salt=0, stats=False, shrink_w=None, store_y=True,
                        edge_left=0, edge_right=0, pro_mean=None):
    """Pure-torch implementation with the launcher's signature and semantics (fp32 math; fp64 kept).

    Used as the CPU implementation of the registered operator and as the test oracle. BN
    partials are returned per :func:`stats_tile_rows` rows, as the kernel does.
    """
    b, t_in, c_in, c_out, t_out = _validate(x, w, taps, dilation, stride, bias, residual, res_row_stride, res_offset,
                                            pro_scale, pro_shift, pro_residual, pres_row_stride, pres_offset, seed, p,
                                            shrink_w, edge_left, edge_right, pro_mean)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = x.to(acc_dtype)
    if edge_left or edge_right:
        parts = [h[:, :1].expand(b, edge_left, c_in), h, h[:, -1:].expand(b, edge_right, c_in)]
        h = torch.cat(parts, 1)
    if pro_scale is not None:
        h = bn_act_torch(h, pro_scale, pro_shift, seed, p, salt, pro_mean)
        if pro_residual is not None:
            rows = torch.arange(t_in, device=x.device) * pres_row_stride + pres_offset
            h = h + pro_residual.to(acc_dtype)[:, rows]
        h = h.to(x.dtype).to(acc_dtype)  # the kernel feeds tl.dot in the weight dtype
    wf = w.to(acc_dtype)
    span = (taps - 1) * dilation
    acc = torch.zeros((b, t_out, c_out), dtype=acc_dtype, device=x.device)
    for k in range(taps):
        start = k * dilation
        rows = h[:, start: start + (t_out - 1) * stride + 1: stride]
        acc = acc + rows @ wf[k * c_in:(k + 1) * c_in]
    del span
    if bias is not None:
        acc = acc + bias.to(acc_dtype)
    if relu:
        acc = torch.relu(acc)
    if residual is not None:
        rows = torch.arange(t_out, device=x.device) * res_row_stride + res_offset
        acc = acc + residual.to(acc_dtype)[:, rows]
    y = acc.to(x.dtype) if store_y else torch.empty(0, device=x.device, dtype=x.dtype)
    empty = torch.empty(0, device=x.device)
    psum = pm2 = empty
    if stats:
        flat = acc.reshape(-1, c_out)
        m = flat.shape[0]
        tile_m = stats_tile_rows(m, c_out, c_in * taps, x.dtype, x.device)
        psum = tile_column_sums(flat, tile_m)
        counts = tile_column_sums(flat.new_ones(m, 1), tile_m)
        tile_mean = torch.repeat_interleave(psum / counts, counts[:, 0].long(), dim=0)
        pm2 = tile_column_sums((flat - tile_mean) ** 2, tile_m)
        psum, pm2 = psum.float(), pm2.float()
    shrink = empty
    if shrink_w is not None:
        shrink = (acc.to(x.dtype).to(acc_dtype) @ shrink_w.to(acc_dtype)).float()
    return y, psum, pm2, shrink



# ---------------------------------------------------------------------------------- operator
_op = torch.library.triton_op("fastlift::tconv_fwd", mutates_args=())(tconv_fwd_launch)
_op.register_kernel("cpu")(tconv_fwd_reference)


def tconv_fwd(x: torch.Tensor, w: torch.Tensor, **kwargs):
    """Fused forward conv (arguments and outputs as :func:`tconv_fwd_launch`).

    Dispatches to the registered operator ``torch.ops.fastlift.tconv_fwd`` (Triton on CUDA,
    :func:`tconv_fwd_reference` on CPU), or straight to the Triton launcher for CPU tensors
    under ``TRITON_INTERPRET=1``.
    """
    if use_launcher(x):
        return tconv_fwd_launch(x, w, **kwargs)
    return torch.ops.fastlift.tconv_fwd(x, w, **kwargs)
