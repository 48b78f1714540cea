"""Fused temporal convolution, input gradient (dgrad), with the BatchNorm backward fused around it.

For a conv ``z[b, t] = sum_k a[b, t*stride + k*dilation] @ W_k`` this computes

    gx[b, r, c] = sum_k sum_n G[b, t_k(r), n] * W[k*C_in + c, n],   t_k(r) = (r - k*dilation) / stride

(terms whose ``t_k(r)`` is not an integer in ``[0, T_out)`` vanish): a GEMM whose A tile is
``taps`` row-shifted (and, for the strided 1f convs, stride-filtered) loads of ``G`` and whose
B tile is the transposed weight, read in place.

Prologue (``GPRO_BN_BWD``): ``G = dL/dz`` is recomputed on the fly from ``g = dL/da`` of this
layer's activation ``a = dropout(relu(BN(z)))`` and ``z`` (see ``load_output_grad``), so the
BatchNorm/ReLU/dropout backward never materialises a tensor.

Epilogue:
* ``+ gres`` at rows ``(r - gres_offset) / gres_row_stride`` — the gradient that a block's output
  sends back through its residual connection to the block input;
* BN backward reductions of the layer that produced this conv's input (``EPI_BN``): with
  ``gu = gx * keep/(1-p) * [u > 0]`` (``u = (z - mean)*scale + shift``, the forward's centred BN
  activation) and ``zhat`` of that layer, per-tile partial sums of ``gu``
  and ``gu * zhat`` (deterministic: written per row tile, summed in a fixed order by the caller).
  They are the previous layer's ``dbeta`` and ``dgamma`` and, divided by the row count, its ``m1``/``m2``.

Outputs are in the activation dtype; accumulation fp32.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from fastlift.kernels._common import (
    check_dtype,
    check_kernel_device,
    dot_precision,
    dropout_apply_torch,
    dropout_keep,
    dropout_key,
    dgrad_config,
    dropout_threshold,
    placeholder,
    load_output_grad,
    swizzle,
    tile_column_sums,
    use_launcher,
)
from fastlift.kernels import tuning
from fastlift.kernels.launch import launch

__all__ = ["tconv_dgrad", "tconv_dgrad_launch", "tconv_dgrad_reference", "output_grad_reference", "dgrad_tile_rows"]


@triton.jit
def _tconv_dgrad_kernel(
    g_ptr,  # [B, T_out, C_out] dL/da of this layer (GPRO=1) or dL/dz (GPRO=0), contiguous
    z_ptr,  # [B, T_out, C_out] this conv's output z (GPRO=1)
    gcoef_ptr,  # [6, C_out] fp32 scale, shift, mean, invstd, m1, m2 of this layer's BN (GPRO=1)
    w_ptr,  # [TAPS*C_in, C_out] weights
    gres_ptr,  # [B, T_gres, C_in] residual gradient, contiguous (HAS_GRES)
    zp_ptr,  # [B, T_in, C_in] previous layer's z, contiguous (EPI_BN)
    ecoef_ptr,  # [4, C_in] fp32 scale, shift, mean, invstd of the previous layer's BN (EPI_BN)
    gx_ptr,  # [B*T_in, C_in] out: dL/d(conv input)
    psu_ptr,  # [num_m_tiles, C_in] fp32 out: per-tile sum of gu (EPI_BN)
    psz_ptr,  # [num_m_tiles, C_in] fp32 out: per-tile sum of gu*zhat (EPI_BN)
    seed_ptr,  # [1] int64 dropout seed
    M_in, T_in, T_out, C_in, C_out, T_gres,
    gres_row_stride, gres_offset,
    g_threshold, g_inv_keep, g_salt, e_threshold, e_inv_keep, e_salt,
    TAPS: tl.constexpr, DIL: tl.constexpr, STRIDE: tl.constexpr,
    GPRO: tl.constexpr, G_DROPOUT: tl.constexpr, HAS_GRES: tl.constexpr, EPI_BN: tl.constexpr,
    E_DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M_in, BLOCK_M)
    num_n = tl.cdiv(C_in, BLOCK_N)
    pid_m, pid_n = swizzle(pid, num_m, num_n, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M_in
    rows_c = tl.where(row_ok, rows, 0)
    bi = rows_c // T_in
    ri = rows_c % T_in
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input channels c
    col_ok = cols < C_in
    rk = tl.arange(0, BLOCK_K)

    if G_DROPOUT:
        gk1, gk2 = dropout_key(tl.load(seed_ptr) + g_salt)
    else:
        gk1 = 0
        gk2 = 0

    k_tiles = tl.cdiv(C_out, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, TAPS * k_tiles):
        tap = kk // k_tiles
        n = (kk - tap * k_tiles) * BLOCK_K + rk
        n_ok = n < C_out
        tn = ri - tap * DIL
        tn_c = tl.maximum(tn, 0)
        t = tn_c // STRIDE
        valid = row_ok & (tn >= 0) & (t < T_out)
        if STRIDE > 1:
            valid = valid & (tn_c % STRIDE == 0)
        gmask = valid[:, None] & n_ok[None, :]
        gt = load_output_grad(g_ptr, z_ptr, gcoef_ptr, bi, t, n, gmask, n_ok, T_out, C_out, gk1, gk2, g_threshold,
                              g_inv_keep, GPRO, G_DROPOUT)
        # W[k*C_in + c, n] read as [c, n] (contiguous in n) and transposed for the dot.
        wt = tl.load(w_ptr + (tap * C_in + cols)[:, None] * C_out + n[None, :], mask=col_ok[:, None] & n_ok[None, :],
                     other=0.0)
        acc = tl.dot(gt.to(w_ptr.dtype.element_ty), tl.trans(wt), acc, input_precision=PRECISION)

    omask = row_ok[:, None] & col_ok[None, :]
    if HAS_GRES:
        tn = ri - gres_offset
        tn_c = tl.maximum(tn, 0)
        tq = tn_c // gres_row_stride
        ok = row_ok & (tn >= 0) & (tn_c % gres_row_stride == 0) & (tq < T_gres)
        acc += tl.load(gres_ptr + ((bi.to(tl.int64) * T_gres + tq)[:, None]) * C_in + cols[None, :],
                       mask=ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    off = rows.to(tl.int64)[:, None] * C_in + cols[None, :]
    tl.store(gx_ptr + off, acc.to(gx_ptr.dtype.element_ty), mask=omask)
    if EPI_BN:
        zp = tl.load(zp_ptr + off, mask=omask, other=0.0).to(tl.float32)
        esc = tl.load(ecoef_ptr + cols, mask=col_ok, other=0.0)[None, :]
        esh = tl.load(ecoef_ptr + C_in + cols, mask=col_ok, other=0.0)[None, :]
        emean = tl.load(ecoef_ptr + 2 * C_in + cols, mask=col_ok, other=0.0)[None, :]
        einv = tl.load(ecoef_ptr + 3 * C_in + cols, mask=col_ok, other=0.0)[None, :]
        gu = tl.where(omask & ((zp - emean) * esc + esh > 0.0), acc, 0.0)
        if E_DROPOUT:
            ek1, ek2 = dropout_key(tl.load(seed_ptr) + e_salt)
            gu = tl.where(dropout_keep(ek1, ek2, off, e_threshold), gu * e_inv_keep, 0.0)
        zhat = (zp - emean) * einv
        tl.store(psu_ptr + pid_m * C_in + cols, tl.sum(gu, axis=0), mask=col_ok)
        tl.store(psz_ptr + pid_m * C_in + cols, tl.sum(gu * zhat, axis=0), mask=col_ok)


def dgrad_tile_rows(m_in, c_in, k, dtype, device) -> int:
    """Rows per BN-backward partial tile of the dgrad kernel (its ``BLOCK_M``)."""
    return dgrad_config(m_in, c_in, k, dtype, device)["BLOCK_M"]


def _validate(g, w, taps, dilation, stride, t_in, z, gcoef, gres, gres_row_stride, gres_offset, zprev, ecoef, seed,
              g_p, e_p):
    if g.dim() != 3 or not g.is_contiguous():
        raise ValueError(f"g: expected a contiguous (batch, frames, channels) tensor, got shape {tuple(g.shape)}")
    b, t_out, c_out = g.shape
    if w.dim() != 2 or w.shape[1] != c_out or w.shape[0] % taps != 0:
        raise ValueError(f"w: expected [taps*C_in, {c_out}] with taps={taps}, got {tuple(w.shape)}")
    c_in = w.shape[0] // taps
    if (t_in - (taps - 1) * dilation - 1) // stride + 1 != t_out:
        raise ValueError(f"t_in: {t_in} input frames give {(t_in - (taps - 1) * dilation - 1) // stride + 1} outputs "
                         f"for taps={taps}, dilation={dilation}, stride={stride}, but g has {t_out}")
    if (z is None) != (gcoef is None):
        raise ValueError("z and gcoef must be given together (BN backward prologue)")
    if z is not None:
        if z.shape != g.shape or not z.is_contiguous():
            raise ValueError(f"z: expected contiguous {tuple(g.shape)}, got {tuple(z.shape)}")
        if gcoef.shape != (6, c_out) or gcoef.dtype != torch.float32:
            raise ValueError(f"gcoef: expected fp32 [6, {c_out}] (scale, shift, mean, invstd, m1, m2), got "
                             f"{tuple(gcoef.shape)} {gcoef.dtype}")
    if gres is not None and (gres.dim() != 3 or gres.shape[0] != b or gres.shape[2] != c_in or not gres.is_contiguous()):
        raise ValueError(f"gres: expected contiguous ({b}, frames, {c_in}), got {tuple(gres.shape)}")
    if (zprev is None) != (ecoef is None):
        raise ValueError("zprev and ecoef must be given together (BN backward reductions)")
    if zprev is not None:
        if zprev.shape != (b, t_in, c_in) or not zprev.is_contiguous():
            raise ValueError(f"zprev: expected contiguous ({b}, {t_in}, {c_in}), got {tuple(zprev.shape)}")
        if ecoef.shape != (4, c_in) or ecoef.dtype != torch.float32:
            raise ValueError(f"ecoef: expected fp32 [4, {c_in}], got {tuple(ecoef.shape)} {ecoef.dtype}")
    if (g_p > 0 or e_p > 0) and (seed is None or seed.numel() != 1 or seed.dtype != torch.int64):
        raise ValueError("seed: expected a one-element int64 tensor when dropout is active")
    if g_p > 0 and z is None:
        raise ValueError("g_p: this layer's dropout is undone in the BN-backward prologue; pass z and gcoef")
    return b, t_out, c_out, c_in


def tconv_dgrad_launch(g: torch.Tensor, w: torch.Tensor, taps: int, t_in: int, dilation: int = 1, stride: int = 1,
                z: Optional[torch.Tensor] = None, gcoef: Optional[torch.Tensor] = None, g_p: float = 0.0,
                g_salt: int = 0, gres: Optional[torch.Tensor] = None, gres_row_stride: int = 1, gres_offset: int = 0,
                zprev: Optional[torch.Tensor] = None, ecoef: Optional[torch.Tensor] = None, e_p: float = 0.0,
                e_salt: int = 0, seed: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the dgrad kernel.

    Args:
        g: ``(B, T_out, C_out)`` contiguous: dL/dz, or dL/da of this layer when ``z``/``gcoef``
            are given (BN-backward prologue with this layer's dropout ``g_p``/``g_salt``).
        w: ``[taps*C_in, C_out]``; ``t_in``: frames of the conv input.
        gres: ``(B, T_gres, C_in)`` residual gradient added at rows ``r = tq*gres_row_stride + gres_offset``.
        zprev/ecoef: previous layer's ``z`` ``(B, t_in, C_in)`` and ``[scale, shift, mean, invstd]``
            (ReLU mask ``(z - mean)*scale + shift > 0``, as the centred forward prologue) to emit
            its BN backward partial sums (dropout ``e_p``/``e_salt``).

    Returns:
        ``(gx, psum_gu, psum_guz)``: ``gx`` ``(B, t_in, C_in)`` in ``g``'s dtype; per-tile partials
        ``[tiles, C_in]`` fp32 (empty unless ``zprev``).
    """
    check_kernel_device("g", g)
    check_dtype("g", g)
    b, t_out, c_out, c_in = _validate(g, w, taps, dilation, stride, t_in, z, gcoef, gres, gres_row_stride, gres_offset,
                                      zprev, ecoef, seed, g_p, e_p)
    m_in = b * t_in
    g_thr, e_thr = dropout_threshold(g_p), dropout_threshold(e_p)
    epi = zprev is not None
    flags = dict(TAPS=taps, STRIDE=stride, GPRO=int(z is not None), G_DROPOUT=g_thr > 0 and z is not None,
                 HAS_GRES=gres is not None, EPI_BN=epi, E_DROPOUT=e_thr > 0 and epi)
    cfg = tuning.pick("tconv_dgrad", dgrad_config(m_in, c_in, c_out * taps, g.dtype, g.device), flags,
                      (m_in, c_in, c_out * taps), g.dtype, g.device)
    bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
    num_m, num_n = triton.cdiv(m_in, bm), triton.cdiv(c_in, bn)
    dev = g.device
    dummy = placeholder(dev)
    gx = torch.empty((b, t_in, c_in), device=dev, dtype=g.dtype)
    psu = torch.empty((num_m, c_in), device=dev, dtype=torch.float32) if epi else dummy
    psz = torch.empty((num_m, c_in), device=dev, dtype=torch.float32) if epi else dummy
    launch(_tconv_dgrad_kernel, (num_m * num_n,),
        g, z if z is not None else g, gcoef if gcoef is not None else dummy, w,
        gres if gres is not None else g, zprev if epi else g, ecoef if epi else dummy, gx, psu, psz,
        seed if seed is not None else placeholder(dev, torch.int64),
        m_in, t_in, t_out, c_in, c_out, gres.shape[1] if gres is not None else 1,
        gres_row_stride, gres_offset, g_thr, 1.0 / (1.0 - g_p), g_salt, e_thr, 1.0 / (1.0 - e_p), e_salt,
        DIL=dilation, **flags, PRECISION=dot_precision(g.dtype), **cfg,
    )
    empty = torch.empty(0, device=dev)
    return gx, (psu if epi else empty), (psz if epi else empty)


# ---------------------------------------------------------------------------------- torch twins
def output_grad_reference(g, z, gcoef, p, salt, seed):
    """dL/dz from dL/da (``load_output_grad`` with GPRO=1) in fp32/fp64 torch."""
    acc = torch.float64 if g.dtype == torch.float64 else torch.float32
    g = g.to(acc)
    if z is None:
        return g
    z = z.to(acc)
    sc, sh, mean, invstd, m1, m2 = (v.to(acc) for v in gcoef)
    gu = dropout_apply_torch(torch.where((z - mean) * sc + sh > 0, g, torch.zeros((), dtype=acc, device=g.device)),
                             seed, salt, p)
    return sc * (gu - m1 - (z - mean) * invstd * m2)


def tconv_dgrad_reference(g, w, taps, t_in, dilation=1, stride=1, z=None, gcoef=None, g_p=0.0, g_salt=0, gres=None,
                          gres_row_stride=1, gres_offset=0, zprev=None, ecoef=None, e_p=0.0, e_salt=0, seed=None):
    """Torch twin of :func:`tconv_dgrad` (same arguments and outputs; partials per ``tile_m`` rows)."""
    b, t_out, c_out, c_in = _validate(g, w, taps, dilation, stride, t_in, z, gcoef, gres, gres_row_stride, gres_offset,
                                      zprev, ecoef, seed, g_p, e_p)
    acc = torch.float64 if g.dtype == torch.float64 else torch.float32
    gz = output_grad_reference(g, z, gcoef, g_p, g_salt, seed).to(g.dtype).to(acc)
    wf = w.to(acc)
    gx = torch.zeros((b, t_in, c_in), dtype=acc, device=g.device)
    for k in range(taps):
        start = k * dilation
        gx[:, start: start + (t_out - 1) * stride + 1: stride] += gz @ wf[k * c_in:(k + 1) * c_in].T
    if gres is not None:
        rows = torch.arange(gres.shape[1], device=g.device) * gres_row_stride + gres_offset
        keep = rows < t_in
        gx[:, rows[keep]] += gres.to(acc)[:, keep]
    empty = torch.empty(0, device=g.device)
    psu = psz = empty
    if zprev is not None:
        zp = zprev.to(acc)
        sc, sh, mean, inv = (v.to(acc) for v in ecoef)
        gu = dropout_apply_torch(torch.where((zp - mean) * sc + sh > 0, gx, torch.zeros((), dtype=acc, device=g.device)),
                                 seed, e_salt, e_p)
        zhat = (zp - mean) * inv
        tile_m = dgrad_tile_rows(b * t_in, c_in, c_out * taps, g.dtype, g.device)
        psu = tile_column_sums(gu.reshape(-1, c_in), tile_m).float()
        psz = tile_column_sums((gu * zhat).reshape(-1, c_in), tile_m).float()
    return gx.to(g.dtype), psu, psz


# ---------------------------------------------------------------------------------- operator
_op = torch.library.triton_op("fastlift::tconv_dgrad", mutates_args=())(tconv_dgrad_launch)
_op.register_kernel("cpu")(tconv_dgrad_reference)


def tconv_dgrad(g: torch.Tensor, w: torch.Tensor, **kwargs):
    """Fused dgrad (arguments and outputs as :func:`tconv_dgrad_launch`): the registered operator,
    or the Triton launcher directly for CPU tensors under ``TRITON_INTERPRET=1``."""
    if use_launcher(g):
        return tconv_dgrad_launch(g, w, **kwargs)
    return torch.ops.fastlift.tconv_dgrad(g, w, **kwargs)
