"""Fused temporal convolution, weight gradient (wgrad).

    dW[k*C_in + c, n] = sum_{b,t} A[b, t*stride + k*dilation, c] * G[b, t, n]

a GEMM ``A_k^T . G`` reduced over all ``B*T_out`` rows, one per tap. Both operands are produced
on the fly from what the forward pass stored:

* ``A`` with the forward prologue (``load_activation``): the raw input, the previous layer's
  ``dropout(relu(BN(z)))`` recomputed from ``z`` (the dropout mask is recomputed from the seed),
  or a block output ``res + dropout(relu(BN(z)))``;
* ``G = dL/dz`` with the BatchNorm-backward prologue (``load_output_grad``).

The row reduction is split across ``SPLIT`` programs per output tile (enough parallelism for
small weight matrices and long reductions); their fp32 partials are summed in a fixed order by
the launcher, so results are deterministic.
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
    dropout_threshold,
    load_activation,
    load_output_grad,
    placeholder,
    use_launcher,
    wgrad_config,
)
from fastlift.kernels import tuning
from fastlift.kernels.launch import launch
from fastlift.kernels.tconv_dgrad import output_grad_reference
from fastlift.kernels.tconv_fwd import bn_act_torch

__all__ = ["tconv_wgrad", "tconv_wgrad_launch", "tconv_wgrad_reference"]


@triton.jit
def _tconv_wgrad_kernel(
    x_ptr,  # [B, T_in, C_in] conv input: raw activations or previous z (strided: sxb, sxt, sxc)
    pscale_ptr,  # [C_in] fp32 previous layer BN scale (PRO != 0)
    pshift_ptr,  # [C_in] fp32 previous layer BN shift (PRO != 0)
    pmean_ptr,  # [C_in] fp32 previous layer BN mean, subtracted before scaling (CENTRED)
    pres_ptr,  # [B, T_pres, C_in] block residual (strided: spb, spt, spc) (PRO == 2)
    g_ptr,  # [B, T_out, C_out] dL/da (GPRO=1) or dL/dz (GPRO=0), contiguous
    z_ptr,  # [B, T_out, C_out] this conv's output (GPRO=1)
    gcoef_ptr,  # [6, C_out] fp32 scale, shift, mean, invstd, m1, m2 (GPRO=1)
    seed_ptr,  # [1] int64
    dw_ptr,  # [SPLIT, TAPS*C_in, C_out] fp32 out (partials)
    M, T_in, T_out, C_in, C_out, rows_per_split,
    sxb, sxt, sxc, spb, spt, spc, pres_row_stride, pres_offset,
    a_threshold, a_inv_keep, a_salt, g_threshold, g_inv_keep, g_salt,
    TAPS: tl.constexpr, DIL: tl.constexpr, STRIDE: tl.constexpr,
    PRO: tl.constexpr, A_DROPOUT: tl.constexpr, CENTRED: tl.constexpr, GPRO: tl.constexpr, G_DROPOUT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    num_c = tl.cdiv(C_in, BLOCK_C)
    num_n = tl.cdiv(C_out, BLOCK_N)
    tap = pid // (num_c * num_n)
    rem = pid % (num_c * num_n)
    pid_c = rem // num_n
    pid_n = rem % num_n
    ci = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    ci_ok = ci < C_in
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < C_out
    rr = tl.arange(0, BLOCK_R)

    seed = tl.load(seed_ptr)
    if A_DROPOUT:
        ak1, ak2 = dropout_key(seed + a_salt)
    else:
        ak1 = 0
        ak2 = 0
    if G_DROPOUT:
        gk1, gk2 = dropout_key(seed + g_salt)
    else:
        gk1 = 0
        gk2 = 0

    acc = tl.zeros((BLOCK_C, BLOCK_N), dtype=tl.float32)
    start = split * rows_per_split
    end = tl.minimum(start + rows_per_split, M)
    for r0 in range(start, end, BLOCK_R):
        rows = r0 + rr
        row_ok = rows < end
        rows_c = tl.where(row_ok, rows, 0)
        bi = (rows_c // T_out).to(tl.int64)
        t = rows_c % T_out
        r_in = t * STRIDE + tap * DIL
        amask = row_ok[:, None] & ci_ok[None, :]
        a = load_activation(x_ptr, bi, r_in, ci, amask, ci_ok, sxb, sxt, sxc, pscale_ptr, pshift_ptr, pmean_ptr, pres_ptr,
                            spb, spt, spc, pres_row_stride, pres_offset, T_in, C_in, ak1, ak2, a_threshold,
                            a_inv_keep, PRO, A_DROPOUT, CENTRED)
        gmask = row_ok[:, None] & n_ok[None, :]
        gt = load_output_grad(g_ptr, z_ptr, gcoef_ptr, bi, t, n, gmask, n_ok, T_out, C_out, gk1, gk2, g_threshold,
                              g_inv_keep, GPRO, G_DROPOUT)
        acc = tl.dot(tl.trans(a.to(g_ptr.dtype.element_ty)), gt.to(g_ptr.dtype.element_ty), acc,
                     input_precision=PRECISION)
    out = dw_ptr + (split.to(tl.int64) * (TAPS * C_in) + tap * C_in + ci)[:, None] * C_out + n[None, :]
    tl.store(out, acc, mask=ci_ok[:, None] & n_ok[None, :])


def _validate(x, g, taps, dilation, stride, pro_scale, pro_shift, pro_residual, pres_row_stride, pres_offset, z, gcoef,
              seed, a_p, g_p, pro_mean=None):
    if x.dim() != 3:
        raise ValueError(f"x: expected (batch, frames, channels), got shape {tuple(x.shape)}")
    if g.dim() != 3 or not g.is_contiguous():
        raise ValueError(f"g: expected a contiguous (batch, frames, channels) tensor, got shape {tuple(g.shape)}")
    b, t_in, c_in = x.shape
    _, t_out, c_out = g.shape
    if g.shape[0] != b:
        raise ValueError(f"g: batch {g.shape[0]} does not match x's batch {b}")
    if (t_in - (taps - 1) * dilation - 1) // stride + 1 != t_out:
        raise ValueError(f"x: {t_in} frames give {(t_in - (taps - 1) * dilation - 1) // stride + 1} outputs for "
                         f"taps={taps}, dilation={dilation}, stride={stride}, but g has {t_out}")
    if g.dtype != x.dtype:
        raise TypeError(f"g: expected dtype {x.dtype} (x's dtype), got {g.dtype}")
    if (pro_scale is None) != (pro_shift is None):
        raise ValueError("pro_scale and pro_shift must be given together")
    if pro_residual is not None and pro_scale is None:
        raise ValueError("pro_residual needs pro_scale/pro_shift")
    if pro_mean is not None and (pro_scale is None or pro_mean.shape != (c_in,) or pro_mean.dtype != torch.float32):
        raise ValueError(f"pro_mean: expected fp32 [{c_in}] together with pro_scale/pro_shift, got "
                         f"{tuple(pro_mean.shape)} {pro_mean.dtype}")
    if pro_residual is not None and (pro_residual.shape[0] != b or pro_residual.shape[2] != c_in
                                     or pro_residual.shape[1] < (t_in - 1) * pres_row_stride + pres_offset + 1):
        raise ValueError(f"pro_residual: expected ({b}, >= {(t_in - 1) * pres_row_stride + pres_offset + 1}, {c_in}), "
                         f"got {tuple(pro_residual.shape)}")
    if (z is None) != (gcoef is None):
        raise ValueError("z and gcoef must be given together (BN backward prologue)")
    if z is not None and (z.shape != g.shape or not z.is_contiguous()):
        raise ValueError(f"z: expected contiguous {tuple(g.shape)}, got {tuple(z.shape)}")
    if gcoef is not None and (gcoef.shape != (6, c_out) or gcoef.dtype != torch.float32):
        raise ValueError(f"gcoef: expected fp32 [6, {c_out}] (scale, shift, mean, invstd, m1, m2), got "
                         f"{tuple(gcoef.shape)} {gcoef.dtype}")
    if (a_p > 0 or g_p > 0) and (seed is None or seed.numel() != 1 or seed.dtype != torch.int64):
        raise ValueError("seed: expected a one-element int64 tensor when dropout is active")
    return b, t_in, c_in, t_out, c_out


def tconv_wgrad_launch(x: torch.Tensor, g: torch.Tensor, taps: int, dilation: int = 1, stride: int = 1,
                pro_scale: Optional[torch.Tensor] = None, pro_shift: Optional[torch.Tensor] = None,
                pro_residual: Optional[torch.Tensor] = None, pres_row_stride: int = 1, pres_offset: int = 0,
                a_p: float = 0.0, a_salt: int = 0, z: Optional[torch.Tensor] = None,
                gcoef: Optional[torch.Tensor] = None, g_p: float = 0.0, g_salt: int = 0,
                seed: Optional[torch.Tensor] = None, split: Optional[int] = None,
                pro_mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Launch the wgrad kernel; returns ``dW`` ``[taps*C_in, C_out]`` in fp32.

    ``x`` is the conv input as stored by the forward (raw, or the previous ``z`` with
    ``pro_scale``/``pro_shift`` [centred by ``pro_mean``, + ``pro_residual``] and dropout
    ``a_p``/``a_salt``, exactly as the forward prologue); ``g`` is dL/dz,
    or dL/da with ``z``/``gcoef`` (this layer's dropout ``g_p``/``g_salt``).
    """
    check_kernel_device("x", x)
    check_dtype("x", x)
    b, t_in, c_in, t_out, c_out = _validate(x, g, taps, dilation, stride, pro_scale, pro_shift, pro_residual,
                                            pres_row_stride, pres_offset, z, gcoef, seed, a_p, g_p, pro_mean)
    dev = x.device
    m = b * t_out
    a_thr, g_thr = dropout_threshold(a_p), dropout_threshold(g_p)
    flags = dict(TAPS=taps, STRIDE=stride,
                 PRO=PRO_NONE if pro_scale is None else (PRO_BN_ACT_RES if pro_residual is not None else PRO_BN_ACT),
                 A_DROPOUT=a_thr > 0 and pro_scale is not None, CENTRED=pro_mean is not None, GPRO=int(z is not None),
                 G_DROPOUT=g_thr > 0 and z is not None)
    heuristic = wgrad_config(m, c_in, c_out, taps, x.dtype, dev)
    cfg = tuning.pick("tconv_wgrad", heuristic, flags, (m, c_in, c_out), x.dtype, dev)
    bc, bn, br, warps, stages = cfg["BLOCK_C"], cfg["BLOCK_N"], cfg["BLOCK_R"], cfg["num_warps"], cfg["num_stages"]
    tiles = taps * triton.cdiv(c_in, bc) * triton.cdiv(c_out, bn)
    if split is None:
        split = cfg["SPLIT"]
    # The split's row ranges follow the heuristic's row step, so a tuned BLOCK_R changes neither
    # the number of partials nor which rows each one sums.
    rows_per_split = triton.cdiv(triton.cdiv(m, split), heuristic["BLOCK_R"]) * heuristic["BLOCK_R"]
    split = triton.cdiv(m, rows_per_split)
    # One split writes the result directly (no reduction launch); several are summed in a fixed order.
    shape = (split, taps * c_in, c_out) if split > 1 else (taps * c_in, c_out)
    dw = torch.empty(shape, device=dev, dtype=torch.float32)
    dummy = placeholder(dev)
    pres = pro_residual if pro_residual is not None else x
    launch(_tconv_wgrad_kernel, (tiles, split),
        x, pro_scale if pro_scale is not None else dummy, pro_shift if pro_shift is not None else dummy,
        pro_mean if pro_mean is not None else dummy, pres,
        g, z if z is not None else g, gcoef if gcoef is not None else dummy,
        seed if seed is not None else placeholder(dev, torch.int64), dw,
        m, t_in, t_out, c_in, c_out, rows_per_split,
        x.stride(0), x.stride(1), x.stride(2), pres.stride(0), pres.stride(1), pres.stride(2),
        pres_row_stride, pres_offset, a_thr, 1.0 / (1.0 - a_p), a_salt, g_thr, 1.0 / (1.0 - g_p), g_salt,
        DIL=dilation, **flags, BLOCK_C=bc, BLOCK_N=bn, BLOCK_R=br, PRECISION=dot_precision(x.dtype), num_warps=warps, num_stages=stages,
    )
    return dw.sum(0) if split > 1 else dw


def tconv_wgrad_reference(x, g, taps, dilation=1, stride=1, pro_scale=None, pro_shift=None, pro_residual=None,
                          pres_row_stride=1, pres_offset=0, a_p=0.0, a_salt=0, z=None, gcoef=None, g_p=0.0, g_salt=0,
                          seed=None, split=None, pro_mean=None):
    """Torch twin of :func:`tconv_wgrad`."""
    b, t_in, c_in, t_out, c_out = _validate(x, g, taps, dilation, stride, pro_scale, pro_shift, pro_residual,
                                            pres_row_stride, pres_offset, z, gcoef, seed, a_p, g_p, pro_mean)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = x.to(acc)
    if pro_scale is not None:
        h = bn_act_torch(h, pro_scale, pro_shift, seed, a_p, a_salt, pro_mean)
        if pro_residual is not None:
            rows = torch.arange(t_in, device=x.device) * pres_row_stride + pres_offset
            h = h + pro_residual.to(acc)[:, rows]
    h = h.to(x.dtype).to(acc)
    gz = output_grad_reference(g, z, gcoef, g_p, g_salt, seed).to(g.dtype).to(acc)
    dw = torch.empty((taps * c_in, c_out), dtype=acc, device=x.device)
    for k in range(taps):
        start = k * dilation
        a = h[:, start: start + (t_out - 1) * stride + 1: stride].reshape(-1, c_in)
        dw[k * c_in:(k + 1) * c_in] = a.T @ gz.reshape(-1, c_out)
    return dw if acc == torch.float64 else dw.float()


# ---------------------------------------------------------------------------------- operator
_op = torch.library.triton_op("fastlift::tconv_wgrad", mutates_args=())(tconv_wgrad_launch)
_op.register_kernel("cpu")(tconv_wgrad_reference)


def tconv_wgrad(x: torch.Tensor, g: torch.Tensor, **kwargs) -> torch.Tensor:
    """Fused wgrad (arguments and output as :func:`tconv_wgrad_launch`): the registered operator,
    or the Triton launcher directly for CPU tensors under ``TRITON_INTERPRET=1``."""
    if use_launcher(x):
        return tconv_wgrad_launch(x, g, **kwargs)
    return torch.ops.fastlift.tconv_wgrad(x, g, **kwargs)
