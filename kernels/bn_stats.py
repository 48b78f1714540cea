"""BatchNorm statistics finalisation: per-tile partials -> batch mean/invstd, scale/shift, running stats.

The conv forward kernel's epilogue writes, per row tile ``i`` of ``BLOCK_M`` rows, the column sum
``psum[i]`` and the centred sum of squares ``pm2[i]`` of its output. This kernel merges them in a
fixed order with Chan's parallel-variance formula (deterministic, no ``E[x^2] - E[x]^2``
cancellation) and updates the running statistics exactly as ``torch.nn.BatchNorm1d`` does in
training mode:

* normalisation uses the biased batch variance;
* ``running_mean = (1 - f) * running_mean + f * mean``,
  ``running_var = (1 - f) * running_var + f * var * N / (N - 1)`` (unbiased),
  with ``f = momentum``, or ``f = 1 / num_batches_tracked`` when ``momentum is None``;
* ``num_batches_tracked += 1``.

Outputs (fp32, ``[C]`` each): ``mean``, ``invstd``, ``scale = gamma * invstd`` and
``shift = beta - mean * scale``, so the next layer's prologue computes ``z * scale + shift``.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from fastlift.kernels._common import check_kernel_device, finalize_config, placeholder, use_launcher
from fastlift.kernels.launch import launch

__all__ = ["bn_finalize", "bn_finalize_launch", "bn_finalize_reference", "bn_eval_coefficients", "bn_grad_coef",
           "bn_grad_coef_launch", "bn_grad_coef_reference"]


@triton.jit
def _bn_finalize_kernel(
    psum_ptr,  # [R, C] fp32 per-tile sums
    pm2_ptr,  # [R, C] fp32 per-tile centred sums of squares
    gamma_ptr,  # [C] BN weight (HAS_AFFINE)
    beta_ptr,  # [C] BN bias (HAS_AFFINE)
    rmean_ptr,  # [C] running mean, updated in place (UPDATE)
    rvar_ptr,  # [C] running var, updated in place (UPDATE)
    nbt_ptr,  # [1] int64 num_batches_tracked: read (already incremented) if CUMULATIVE, else incremented (INCREMENT)
    mean_ptr,  # [C] fp32 out
    invstd_ptr,  # [C] fp32 out
    scale_ptr,  # [C] fp32 out
    shift_ptr,  # [C] fp32 out
    R, C, M, momentum, eps,
    TILE_M: tl.constexpr, HAS_AFFINE: tl.constexpr, UPDATE: tl.constexpr, CUMULATIVE: tl.constexpr,
    INCREMENT: tl.constexpr, BLOCK_C: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = cols < C
    n_a = tl.zeros((BLOCK_C,), dtype=tl.float32)  # vector so the loop-carried type is fixed
    mean_a = tl.zeros((BLOCK_C,), dtype=tl.float32)
    m2_a = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for i in range(0, R):
        n_b = tl.minimum(M - i * TILE_M, TILE_M).to(tl.float32)
        s_b = tl.load(psum_ptr + i * C + cols, mask=ok, other=0.0)
        m2_b = tl.load(pm2_ptr + i * C + cols, mask=ok, other=0.0)
        n = n_a + n_b
        delta = s_b / n_b - mean_a
        mean_a += delta * (n_b / n)
        m2_a += m2_b + delta * delta * (n_a * n_b / n)
        n_a = n
    var = m2_a / n_a
    invstd = 1.0 / tl.sqrt(var + eps)
    if HAS_AFFINE:
        g = tl.load(gamma_ptr + cols, mask=ok, other=1.0).to(tl.float32)
        b = tl.load(beta_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    else:
        g = tl.full((BLOCK_C,), 1.0, tl.float32)
        b = tl.zeros((BLOCK_C,), dtype=tl.float32)
    scale = g * invstd
    tl.store(mean_ptr + cols, mean_a, mask=ok)
    tl.store(invstd_ptr + cols, invstd, mask=ok)
    tl.store(scale_ptr + cols, scale, mask=ok)
    tl.store(shift_ptr + cols, b - mean_a * scale, mask=ok)
    if UPDATE:
        if CUMULATIVE:
            f = 1.0 / tl.load(nbt_ptr).to(tl.float32)
        else:
            f = momentum
            if INCREMENT:
                # f does not depend on the counter, so one program may advance it (no host add_).
                if tl.program_id(0) == 0:
                    tl.store(nbt_ptr, tl.load(nbt_ptr) + 1)
        rm = tl.load(rmean_ptr + cols, mask=ok, other=0.0)
        rv = tl.load(rvar_ptr + cols, mask=ok, other=0.0)
        new_rm = (1.0 - f) * rm.to(tl.float32) + f * mean_a
        new_rv = (1.0 - f) * rv.to(tl.float32) + f * (m2_a / (n_a - 1.0))
        tl.store(rmean_ptr + cols, new_rm.to(rm.dtype), mask=ok)
        tl.store(rvar_ptr + cols, new_rv.to(rv.dtype), mask=ok)


def _check(psum, pm2, m, tile_m, gamma, beta, running_mean, running_var):
    if psum.dim() != 2 or psum.shape != pm2.shape or psum.dtype != torch.float32 or pm2.dtype != torch.float32:
        raise ValueError(f"psum/pm2: expected fp32 [tiles, C] of equal shape, got {tuple(psum.shape)} "
                         f"{psum.dtype} / {tuple(pm2.shape)} {pm2.dtype}")
    r, c = psum.shape
    if r != (m + tile_m - 1) // tile_m:
        raise ValueError(f"psum: expected {(m + tile_m - 1) // tile_m} tiles of {tile_m} rows for {m} rows, got {r}")
    if m < 2 and running_mean is not None:
        raise ValueError(f"BatchNorm in training mode needs more than 1 value per channel, got {m} "
                         f"(batch x frames at this layer)")
    for n, v in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if v is not None and v.shape != (c,):
            raise ValueError(f"{n}: expected [{c}], got {tuple(v.shape)}")
    return r, c


def bn_finalize_launch(psum: torch.Tensor, pm2: torch.Tensor, m: int, tile_m: int, gamma: Optional[torch.Tensor],
                beta: Optional[torch.Tensor], running_mean: Optional[torch.Tensor],
                running_var: Optional[torch.Tensor], num_batches_tracked: Optional[torch.Tensor],
                momentum: Optional[float], eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge BN partials of ``m`` rows (tiles of ``tile_m``) and update running stats in place.

    Returns ``(mean, invstd, scale, shift)``, fp32 ``[C]`` each. ``running_*`` may be ``None``
    (no tracking); ``num_batches_tracked`` is incremented here when given.
    """
    check_kernel_device("psum", psum)
    r, c = _check(psum, pm2, m, tile_m, gamma, beta, running_mean, running_var)
    dev = psum.device
    # Four separate outputs (an op's outputs must not alias each other; no clones of one buffer).
    out = [torch.empty(c, device=dev, dtype=torch.float32) for _ in range(4)]
    update = running_mean is not None and running_var is not None
    cumulative = momentum is None
    increment = num_batches_tracked is not None and update
    if increment and cumulative:  # the kernel reads the incremented counter
        num_batches_tracked.add_(1)
    dummy = placeholder(dev)
    block_c = finalize_config(dev)["BLOCK_C"]
    launch(_bn_finalize_kernel, (triton.cdiv(c, block_c),),
        psum, pm2, gamma if gamma is not None else dummy, beta if beta is not None else dummy,
        running_mean if update else dummy, running_var if update else dummy,
        num_batches_tracked if num_batches_tracked is not None else (
            torch.ones(1, device=dev, dtype=torch.int64) if momentum is None else placeholder(dev, torch.int64)),
        out[0], out[1], out[2], out[3], r, c, m, 0.0 if momentum is None else float(momentum), float(eps),
        TILE_M=tile_m, HAS_AFFINE=gamma is not None, UPDATE=update, CUMULATIVE=cumulative,
        INCREMENT=increment and not cumulative, BLOCK_C=block_c,
    )
    return out[0], out[1], out[2], out[3]


def bn_finalize_reference(psum, pm2, m, tile_m, gamma, beta, running_mean, running_var, num_batches_tracked,
                          momentum, eps):
    """Torch twin of :func:`bn_finalize` (same merge order and update rule)."""
    r, c = _check(psum, pm2, m, tile_m, gamma, beta, running_mean, running_var)
    counts = torch.full((r,), float(tile_m), dtype=torch.float64, device=psum.device)
    counts[-1] = m - (r - 1) * tile_m
    s = psum.double()
    total = counts.sum()
    mean = s.sum(0) / total
    tile_mean = s / counts[:, None]
    m2 = pm2.double().sum(0) + (counts[:, None] * (tile_mean - mean) ** 2).sum(0)
    return bn_coefficients_from_moments(mean, m2, total, gamma, beta, running_mean, running_var, num_batches_tracked,
                                        momentum, eps)


def bn_coefficients_from_moments(mean, m2, total, gamma, beta, running_mean, running_var, num_batches_tracked,
                                 momentum, eps):
    """BatchNorm training coefficients from merged fp64 moments (shared by the torch twin and the
    process-group finalize in :mod:`fastlift.kernels.bn_sync`).

    ``mean``/``m2``: fp64 ``[C]`` batch mean and sum of squared deviations over ``total`` rows.
    Returns fp32 ``(mean, invstd, scale, shift)`` ``[C]``; running statistics (if given) are
    updated in place with the batch mean and the unbiased variance (the reference's rule,
    cumulative average when ``momentum`` is None)."""
    var = m2 / total
    invstd = torch.rsqrt(var + eps)
    g = gamma.double() if gamma is not None else torch.ones_like(mean)
    b = beta.double() if beta is not None else torch.zeros_like(mean)
    scale = g * invstd
    shift = b - mean * scale
    if running_mean is not None and running_var is not None:
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        f = (1.0 / float(num_batches_tracked)) if momentum is None else momentum
        with torch.no_grad():
            running_mean.copy_((1 - f) * running_mean.double() + f * mean)
            running_var.copy_((1 - f) * running_var.double() + f * var * total / (total - 1))
    return mean.float(), invstd.float(), scale.float(), shift.float()


@triton.jit
def _bn_grad_coef_kernel(
    psu_ptr,  # [R, C] fp32 per-tile sums of gu (dgrad epilogue)
    psz_ptr,  # [R, C] fp32 per-tile sums of gu * zhat
    scale_ptr, shift_ptr, mean_ptr, invstd_ptr,  # [C] fp32 each: this layer's BN (forward)
    gcoef_ptr,  # [6, C] fp32 out: scale, shift, mean, invstd, m1, m2
    dgamma_ptr,  # [C] fp32 out: sum gu * zhat
    dbeta_ptr,  # [C] fp32 out: sum gu
    R, C, n,
    TRAINING: tl.constexpr, BLOCK_C: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = cols < C
    su = tl.zeros((BLOCK_C,), dtype=tl.float32)
    sz = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for i in range(0, R):  # fixed order: deterministic
        su += tl.load(psu_ptr + i * C + cols, mask=ok, other=0.0)
        sz += tl.load(psz_ptr + i * C + cols, mask=ok, other=0.0)
    tl.store(dbeta_ptr + cols, su, mask=ok)
    tl.store(dgamma_ptr + cols, sz, mask=ok)
    if TRAINING:
        m1 = su / n
        m2 = sz / n
    else:  # running statistics are constants: no gradient through the batch mean/variance
        m1 = tl.zeros((BLOCK_C,), dtype=tl.float32)
        m2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    tl.store(gcoef_ptr + cols, tl.load(scale_ptr + cols, mask=ok, other=0.0), mask=ok)
    tl.store(gcoef_ptr + C + cols, tl.load(shift_ptr + cols, mask=ok, other=0.0), mask=ok)
    tl.store(gcoef_ptr + 2 * C + cols, tl.load(mean_ptr + cols, mask=ok, other=0.0), mask=ok)
    tl.store(gcoef_ptr + 3 * C + cols, tl.load(invstd_ptr + cols, mask=ok, other=0.0), mask=ok)
    tl.store(gcoef_ptr + 4 * C + cols, m1, mask=ok)
    tl.store(gcoef_ptr + 5 * C + cols, m2, mask=ok)


def _check_grad_coef(psu, psz, n, scale, shift, mean, invstd):
    if psu.dim() != 2 or psu.shape != psz.shape or psu.dtype != torch.float32 or psz.dtype != torch.float32:
        raise ValueError(f"psu/psz: expected fp32 [tiles, C] of equal shape, got {tuple(psu.shape)} {psu.dtype} / "
                         f"{tuple(psz.shape)} {psz.dtype}")
    c = psu.shape[1]
    for name, v in (("scale", scale), ("shift", shift), ("mean", mean), ("invstd", invstd)):
        if v.shape != (c,) or v.dtype != torch.float32:
            raise ValueError(f"{name}: expected fp32 [{c}], got {tuple(v.shape)} {v.dtype}")
    if n < 1:
        raise ValueError(f"n: expected a positive row count, got {n}")
    return c


def bn_grad_coef_launch(psu: torch.Tensor, psz: torch.Tensor, n: int, scale: torch.Tensor, shift: torch.Tensor,
                        mean: torch.Tensor, invstd: torch.Tensor, training: bool
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reduce the dgrad epilogue's BN-backward partials of one BatchNorm layer over ``n`` rows.

    Returns ``(gcoef, dgamma, dbeta)``: ``gcoef`` fp32 ``[6, C]`` = scale, shift, mean, invstd,
    ``m1 = sum(gu)/n``, ``m2 = sum(gu*zhat)/n`` (zeros when not ``training``: eval-mode BN), the
    prologue coefficients of the BN backward (``load_output_grad``); ``dgamma = sum(gu*zhat)``,
    ``dbeta = sum(gu)``, fp32 ``[C]``. One launch instead of two sums, two divisions and a stack.
    """
    check_kernel_device("psu", psu)
    c = _check_grad_coef(psu, psz, n, scale, shift, mean, invstd)
    dev = psu.device
    gcoef = torch.empty((6, c), device=dev, dtype=torch.float32)
    dgamma = torch.empty(c, device=dev, dtype=torch.float32)
    dbeta = torch.empty(c, device=dev, dtype=torch.float32)
    block_c = finalize_config(dev)["BLOCK_C"]
    launch(_bn_grad_coef_kernel, (triton.cdiv(c, block_c),),
           psu, psz, scale, shift, mean, invstd, gcoef, dgamma, dbeta, psu.shape[0], c, float(n),
           TRAINING=bool(training), BLOCK_C=block_c)
    return gcoef, dgamma, dbeta


def bn_grad_coef_reference(psu, psz, n, scale, shift, mean, invstd, training):
    """Torch twin of :func:`bn_grad_coef_launch`."""
    _check_grad_coef(psu, psz, n, scale, shift, mean, invstd)
    su, sz = psu.sum(0), psz.sum(0)
    if training:
        m1, m2 = su / n, sz / n
    else:
        m1 = m2 = torch.zeros_like(scale)
    return torch.stack([scale, shift, mean, invstd, m1, m2]), sz, su


def bn_eval_coefficients(gamma, beta, running_mean, running_var, eps):
    """``(mean, invstd, scale, shift)`` of an eval-mode BatchNorm (running statistics), fp32."""
    mean = running_mean.float()
    invstd = torch.rsqrt(running_var.float() + eps)
    g = gamma.float() if gamma is not None else torch.ones_like(mean)
    b = beta.float() if beta is not None else torch.zeros_like(mean)
    scale = g * invstd
    return mean, invstd, scale, b - mean * scale


# ---------------------------------------------------------------------------------- operator
_op = torch.library.triton_op("fastlift::bn_finalize",
                              mutates_args=("running_mean", "running_var", "num_batches_tracked"))(bn_finalize_launch)
_op.register_kernel("cpu")(bn_finalize_reference)


def bn_finalize(psum, pm2, m, tile_m, gamma, beta, running_mean, running_var, num_batches_tracked, momentum, eps):
    """Registered operator ``fastlift::bn_finalize`` (or the launcher under the CPU interpreter)."""
    if use_launcher(psum):
        return bn_finalize_launch(psum, pm2, m, tile_m, gamma, beta, running_mean, running_var, num_batches_tracked,
                                  momentum, eps)
    return torch.ops.fastlift.bn_finalize(psum, pm2, m, tile_m, gamma, beta, running_mean, running_var,
                                          num_batches_tracked, momentum, eps)


_gc_op = torch.library.triton_op("fastlift::bn_grad_coef", mutates_args=())(bn_grad_coef_launch)
_gc_op.register_kernel("cpu")(bn_grad_coef_reference)


def bn_grad_coef(psu, psz, n, scale, shift, mean, invstd, training):
    """Registered operator ``fastlift::bn_grad_coef`` (or the launcher under the CPU interpreter)."""
    if use_launcher(psu):
        return bn_grad_coef_launch(psu, psz, n, scale, shift, mean, invstd, training)
    return torch.ops.fastlift.bn_grad_coef(psu, psz, n, scale, shift, mean, invstd, training)
