"""Cross-process BatchNorm: the hook that turns per-rank BN statistics into global-batch ones.

The fused forward emits per-tile partials (column sum and centred sum of squares of ``tile_m``
rows each, see :mod:`fastlift.kernels.bn_stats`). Under data parallelism each rank holds the
partials of its own share of the batch. :class:`BNSync` merges them across a process group:

* forward: each rank reduces its tiles to ``(count, sum, M2)`` per channel (fp64), the ranks
  all-gather those ``[1 + 2C]`` vectors (counts may differ between ranks, so a plain all-reduce of
  M2 would be wrong), and every rank merges them in rank order with Chan's formula
  ``M2 = sum_r M2_r + n_r (mean_r - mean)^2`` — the same numbers on every rank;
* backward: the BN gradient needs the batch means of ``dL/da`` and ``dL/da * xhat``; their
  per-rank sums and counts are all-reduced (sums are order-free here: two values per channel).

:func:`bn_finalize_synced` is :func:`fastlift.kernels.bn_stats.bn_finalize_reference` with the
merge in between: it returns ``(mean, invstd, scale, shift)`` of the global batch and updates the
running statistics exactly as ``nn.BatchNorm1d`` would on the concatenated batch. It runs in
torch (``[C]``-sized work next to the GEMMs), on any device and backend (gloo, NCCL).

The fused autograd function picks the hook up from :func:`current_bn_sync`, set for the duration
of a forward call with :func:`bn_sync`; no signature of the kernel layer changes.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

import torch

__all__ = ["BNSync", "bn_sync", "current_bn_sync", "bn_finalize_synced", "local_moments"]

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("fastlift_bn_sync", default=None)


class BNSync:
    """All-reduce hook for BatchNorm statistics over ``group`` (a ``torch.distributed`` process
    group; ``None`` = the default group). Every rank of the group must call the same methods in the
    same order (one collective per BN layer in forward, one in backward)."""

    def __init__(self, group=None):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("BNSync: torch.distributed is not initialised (call init_process_group first)")
        self.group = group
        self.world_size = dist.get_world_size(group)

    def merge_moments(self, count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor):
        """This rank's ``(count [1], mean [C], M2 [C])`` (fp64) -> the group's, merged in rank order."""
        import torch.distributed as dist

        c = mean.shape[0]
        mine = torch.cat([count.reshape(1), mean * count, m2]).to(torch.float64)
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine, group=self.group)
        allv = torch.stack(parts)  # (W, 1 + 2C): count, sum, M2 of each rank
        n_r = allv[:, 0]
        n = n_r.sum()
        s_r = allv[:, 1:1 + c]
        g_mean = s_r.sum(0) / n
        # Ranks with no rows (n_r = 0) contribute nothing; avoid 0/0 in their mean.
        r_mean = s_r / n_r.clamp(min=1)[:, None]
        g_m2 = allv[:, 1 + c:].sum(0) + (n_r[:, None] * (r_mean - g_mean) ** 2).sum(0)
        return n, g_mean, g_m2

    def reduce_sums(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Element-wise sum over the group of same-shaped tensors (one all-reduce, fp64)."""
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
        dist.all_reduce(flat, group=self.group)
        out, i = [], 0
        for t in tensors:
            out.append(flat[i:i + t.numel()].reshape(t.shape).to(t.dtype))
            i += t.numel()
        return out


@contextlib.contextmanager
def bn_sync(sync: Optional[BNSync]) -> Iterator[None]:
    """Within the block, fused training forwards merge BN statistics through ``sync`` (None: off)."""
    token = _CURRENT.set(sync)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_bn_sync() -> Optional[BNSync]:
    """The :class:`BNSync` set by the innermost :func:`bn_sync` block, or None."""
    return _CURRENT.get()


def local_moments(psum: torch.Tensor, pm2: torch.Tensor, m: int, tile_m: int):
    """Per-tile partials of ``m`` rows -> ``(count [1], mean [C], M2 [C])`` in fp64."""
    r = psum.shape[0]
    if r != (m + tile_m - 1) // tile_m:
        raise ValueError(f"psum: expected {(m + tile_m - 1) // tile_m} tiles of {tile_m} rows for {m} rows, got {r}")
    counts = torch.full((r,), float(tile_m), dtype=torch.float64, device=psum.device)
    counts[-1] = m - (r - 1) * tile_m
    s = psum.double()
    total = counts.sum()
    mean = s.sum(0) / total
    m2 = pm2.double().sum(0) + (counts[:, None] * (s / counts[:, None] - mean) ** 2).sum(0)
    return total.reshape(1), mean, m2


def bn_finalize_synced(sync: BNSync, psum, pm2, m: int, tile_m: int, gamma, beta, running_mean, running_var,
                       num_batches_tracked, momentum, eps):
    """:func:`fastlift.kernels.bn_stats.bn_finalize` over the whole process group.

    Arguments as ``bn_finalize`` (this rank's fp32 ``[tiles, C]`` partials of ``m`` rows).
    Returns fp32 ``(mean, invstd, scale, shift)`` ``[C]`` of the global batch; running statistics
    (if given) are updated in place with the global mean and unbiased global variance.
    """
    # Lazy: bn_stats imports triton, and the reference path's SyncBatchNorm uses this module too.
    from fastlift.kernels.bn_stats import bn_coefficients_from_moments

    count, mean, m2 = local_moments(psum, pm2, m, tile_m)
    total, mean, m2 = sync.merge_moments(count, mean, m2)
    n = float(total)
    if n < 2 and running_mean is not None:
        raise ValueError(f"BatchNorm in training mode needs more than 1 value per channel, got {int(n)} "
                         f"(global batch x frames at this layer)")
    return bn_coefficients_from_moments(mean, m2, n, gamma, beta, running_mean, running_var, num_batches_tracked,
                                        momentum, eps)
