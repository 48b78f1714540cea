"""Materialise a block output: ``y = [res[row map] +] dropout(relu((z - mean) * scale + shift))``.

In training, BatchNorm needs the statistics of the whole batch before it can be applied, so a
conv cannot normalise its own output. Where the activated tensor is consumed by one GEMM only, the
next conv applies it in its prologue (see :mod:`fastlift.kernels.tconv_fwd`). A block output is
consumed twice (the next block's conv and its residual), so it is materialised once by this
kernel: one read of ``z`` (and the residual), one write. The dropout mask is the same
counter hash the GEMM prologues use, keyed by ``seed + salt`` and the logical index of ``z``.

Shapes: ``z`` ``(B, T, C)`` contiguous; ``res`` ``(B, T_res, C)`` read at rows
``t * res_row_stride + res_offset``; output ``(B, T, C)`` in ``z``'s dtype. ``mean`` is optional
(0 when absent); BatchNorm passes its batch mean with ``shift = beta`` so that channels with
``|mean| >> std`` keep full precision.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from fastlift.kernels._common import (bn_act, check_kernel_device, dropout_key, dropout_threshold, placeholder,
                                      rowwise_config, use_launcher)
from fastlift.kernels.launch import launch

__all__ = ["bn_act_materialize", "bn_act_launch", "bn_act_reference"]


@triton.jit
def _bn_act_kernel(
    z_ptr,  # [B*T, C] contiguous pre-BN activations
    scale_ptr,  # [C] fp32
    shift_ptr,  # [C] fp32
    mean_ptr,  # [C] fp32 (CENTRED)
    res_ptr,  # [B, T_res, C] residual (strided: srb, srt, src) (HAS_RES)
    seed_ptr,  # [1] int64 (DROPOUT)
    y_ptr,  # [B*T, C] output
    M, T, C, srb, srt, src, res_row_stride, res_offset, threshold, inv_keep, salt,
    HAS_RES: tl.constexpr, DROPOUT: tl.constexpr, CENTRED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < M
    col_ok = cols < C
    mask = row_ok[:, None] & col_ok[None, :]
    idx = rows.to(tl.int64)[:, None] * C + cols[None, :]
    z = tl.load(z_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    sc = tl.load(scale_ptr + cols, mask=col_ok, other=0.0)
    sh = tl.load(shift_ptr + cols, mask=col_ok, other=0.0)
    if DROPOUT:
        k1, k2 = dropout_key(tl.load(seed_ptr) + salt)
    else:
        k1 = 0
        k2 = 0
    if CENTRED:
        mu = tl.load(mean_ptr + cols, mask=col_ok, other=0.0)[None, :]
    else:
        mu = 0.0
    y = bn_act(z, mu, sc[None, :], sh[None, :], k1, k2, idx, threshold, inv_keep, DROPOUT)
    if HAS_RES:
        rows_c = tl.where(row_ok, rows, 0)
        b = (rows_c // T).to(tl.int64)
        r = ((rows_c % T) * res_row_stride + res_offset).to(tl.int64)
        y += tl.load(res_ptr + b[:, None] * srb + r[:, None] * srt + cols[None, :] * src, mask=mask,
                     other=0.0).to(tl.float32)
    tl.store(y_ptr + idx, y.to(y_ptr.dtype.element_ty), mask=mask)


def bn_act_launch(z: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                  residual: Optional[torch.Tensor] = None, res_row_stride: int = 1, res_offset: int = 0,
                       seed: Optional[torch.Tensor] = None, p: float = 0.0, salt: int = 0,
                  mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Launch the BN-activation kernel; see the module docstring for semantics."""
    check_kernel_device("z", z)
    if z.dim() != 3 or not z.is_contiguous():
        raise ValueError(f"z: expected a contiguous (batch, frames, channels) tensor, got shape {tuple(z.shape)}")
    b, t, c = z.shape
    for n, v in (("scale", scale), ("shift", shift), ("mean", mean)):
        if v is not None and (v.shape != (c,) or v.dtype != torch.float32):
            raise ValueError(f"{n}: expected fp32 [{c}], got {tuple(v.shape)} {v.dtype}")
    if residual is not None:
        need = (t - 1) * res_row_stride + res_offset + 1
        if residual.dim() != 3 or residual.shape[0] != b or residual.shape[2] != c or residual.shape[1] < need:
            raise ValueError(f"residual: expected ({b}, >= {need}, {c}), got {tuple(residual.shape)}")
    thr = dropout_threshold(p)
    if thr > 0 and (seed is None or seed.numel() != 1 or seed.dtype != torch.int64):
        raise ValueError("seed: expected a one-element int64 tensor when p > 0")
    y = torch.empty_like(z)
    m = b * t
    cfg = rowwise_config(z.device)
    bm, bc = cfg["BLOCK_M"], cfg["BLOCK_C"]
    res = residual if residual is not None else z
    launch(_bn_act_kernel, (triton.cdiv(m, bm), triton.cdiv(c, bc)),
        z, scale, shift, mean if mean is not None else scale, res,
        seed if seed is not None else placeholder(z.device, torch.int64), y,
        m, t, c, res.stride(0), res.stride(1), res.stride(2), res_row_stride, res_offset, thr, 1.0 / (1.0 - p), salt,
        HAS_RES=residual is not None, DROPOUT=thr > 0, CENTRED=mean is not None, **cfg,
    )
    return y


def bn_act_reference(z, scale, shift, residual=None, res_row_stride=1, res_offset=0, seed=None, p=0.0, salt=0,
                     mean=None):
    """Torch twin of :func:`bn_act_launch` (same dropout mask)."""
    from fastlift.kernels.tconv_fwd import bn_act_torch

    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    y = bn_act_torch(z.to(acc), scale, shift, seed, p, salt, mean)
    if residual is not None:
        rows = torch.arange(z.shape[1], device=z.device) * res_row_stride + res_offset
        y = y + residual.to(acc)[:, rows]
    return y.to(z.dtype)


_op = torch.library.triton_op("fastlift::bn_act", mutates_args=())(bn_act_launch)
_op.register_kernel("cpu")(bn_act_reference)


def bn_act_materialize(z, scale, shift, **kwargs) -> torch.Tensor:
    """Registered operator ``fastlift::bn_act`` (or the launcher under the CPU interpreter)."""
    if use_launcher(z):
        return bn_act_launch(z, scale, shift, **kwargs)
    return torch.ops.fastlift.bn_act(z, scale, shift, **kwargs)
