"""Data-parallel training on PyTorch's own engine: torchrun, DistributedDataParallel, synced BatchNorm.

How a run is distributed (see docs/distributed.md for the commands):

* **Launch**: ``torchrun --nproc-per-node N -m fastlift train ...`` (or ``fastlift train
  --nproc-per-node N ...``, which calls :func:`torch.distributed.run.main`, i.e. torchrun, with the
  same flags). torchrun's elastic agent starts, watches and restarts the workers; this module only
  reads the environment it sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``TORCHELASTIC_RESTART_COUNT``) and calls :func:`torch.distributed.init_process_group`:
  NCCL for CUDA (each process on ``cuda:LOCAL_RANK``), gloo on CPU.
* **Checks before any work**: every rank all-gathers its flags; any difference (other than the
  per-process device) is a one-line error on every rank naming the flag and both values. The
  global batch ``-b`` (``-b // -s`` examples) must split evenly over the processes.
* **Batch**: ``-b`` stays the *global* batch; each rank trains on its contiguous share of every
  global batch (:class:`fastlift.train.sampler.WindowSampler` with ``rank``/``world_size``). The
  loss of rank ``r`` is scaled by ``W * n_r / n`` so DDP's gradient *average* is the gradient of the
  mean loss over the global batch, also for an uneven last batch.
* **BatchNorm**: by default each rank normalises with its own share's statistics (what
  ``nn.DataParallel`` gives the reference: per-device batch statistics; DDP broadcasts rank 0's
  running statistics to the others every step, so all ranks hold rank 0's, as DataParallel keeps
  device 0's). With ``--sync-bn`` the statistics are those of the global batch: on the fused
  kernel path through :class:`fastlift.kernels.bn_sync.BNSync` (the per-tile partial sums and
  centred sums of squares are merged across ranks before finalisation, and the backward's batch
  means are all-reduced); on the reference path through :class:`SyncBatchNorm`, which is
  ``nn.SyncBatchNorm`` on GPUs and the same merge on CPU (where ``nn.SyncBatchNorm`` refuses to
  run). With ``--sync-bn`` and no dropout, N ranks compute the same step as one process with the
  same global batch (up to fp32 rounding).
* **Evaluation**: :class:`DistContext` is passed to :mod:`fastlift.train.evaluate`, which gives
  each rank a contiguous block of the forward calls over the packed test sequences and gathers
  the predictions; metrics are then computed from the full prediction on every rank with the
  single-process code, so the numbers are those of a single-process evaluation.
* **Checkpoints**: written by rank 0 only (atomically, :mod:`fastlift._files`), with the world
  size and every rank's RNG state; the sampler state is global, so a checkpoint resumes on any
  number of ranks. After an elastic restart (``TORCHELASTIC_RESTART_COUNT > 0``) the run resumes
  from the newest ``epoch_N.bin`` in ``-c`` by itself. Multi-node runs need ``-c`` on a
  filesystem every node sees.

Limitations: semi-supervised training's bone-length term compares per-rank mean bone lengths (a
nonlinear function of a batch mean), so it is not identical to one process with the global batch;
everything else in the loss is. The endless unlabelled stream always yields full global batches.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Optional

import torch
from torch import nn

__all__ = ["DistContext", "SINGLE", "setup", "add_distributed_arguments", "launch", "wrap_ddp",
           "convert_sync_batchnorm", "SyncBatchNorm", "latest_checkpoint", "in_torchrun"]

# Flags that legitimately differ between ranks (or only matter to the launcher).
_PER_PROCESS = {"device", "progress", "debug", "nproc_per_node", "max_restarts", "nnodes"}


def _timeout() -> timedelta:
    """Collective timeout: ``FASTLIFT_DIST_TIMEOUT`` seconds (default 1800)."""
    text = os.environ.get("FASTLIFT_DIST_TIMEOUT", "1800")
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"FASTLIFT_DIST_TIMEOUT: expected a number of seconds, got {text!r}") from None
    return timedelta(seconds=seconds)


@dataclass
class DistContext:
    """This process's place in the run. ``SINGLE`` (world size 1) makes every helper a no-op.

    Attributes: ``rank``, ``world_size``, ``local_rank``, ``backend`` (``"gloo"``/``"nccl"`` or None),
    ``restart_count`` (torchrun's elastic restarts so far), ``sync_bn`` (global-batch BatchNorm).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    restart_count: int = 0
    sync_bn: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_sum(self, values, device) -> list[float]:
        """Sum ``values`` (floats or 0-d tensors) over the ranks; returns floats (fp64 all-reduce)."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def all_reduce_max(self, value: float, device) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``(n_r, ...)`` tensor along dim 0 in rank order (on every rank)."""
        if not self.enabled:
            return t
        import torch.distributed as dist

        n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        big = max(sizes)
        pad = t if t.shape[0] == big else torch.cat([t, t.new_zeros((big - t.shape[0],) + tuple(t.shape[1:]))])
        parts = [torch.empty_like(pad) for _ in range(self.world_size)]
        dist.all_gather(parts, pad.contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def all_gather_object(self, obj) -> list:
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def block(self, n: int) -> tuple[int, int]:
        """This rank's contiguous ``[start, stop)`` of ``n`` work items."""
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size

    def shutdown(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


SINGLE = DistContext()


def in_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: expected an integer from the launcher, got {text!r}") from None


def _flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _check_same_flags(ctx: DistContext, args) -> None:
    mine = {k: v for k, v in sorted(vars(args).items()) if not k.startswith("_") and k not in _PER_PROCESS
            and isinstance(v, (str, int, float, bool, type(None)))}
    everyone = ctx.all_gather_object(mine)
    ref = everyone[0]
    for r, other in enumerate(everyone[1:], start=1):
        keys = sorted(set(ref) | set(other))
        diff = [k for k in keys if ref.get(k) != other.get(k)]
        if diff:
            k = diff[0]
            more = f" (and {len(diff) - 1} more: {', '.join(_flag_name(d) for d in diff[1:])})" if len(diff) > 1 else ""
            raise ValueError(f"{_flag_name(k)}: every process must get the same flags; rank 0 has {ref.get(k)!r}, "
                             f"rank {r} has {other.get(k)!r}{more}")


def setup(args, mode: str = "train") -> DistContext:
    """Join the process group torchrun describes (no-op for a plain single process).

    Sets ``args.device`` to this process's device (``cuda:LOCAL_RANK`` on CUDA), checks that every
    rank got the same flags and, for training, that the global batch splits evenly. Raises
    ValueError (on every rank alike) for bad input. Returns the :class:`DistContext`.
    """
    world = _env_int("WORLD_SIZE", 1)
    restarts = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    sync_bn = bool(getattr(args, "sync_bn", False))
    if world <= 1:
        return DistContext(restart_count=restarts, sync_bn=False)
    import torch.distributed as dist

    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if dev.index is not None:
            raise ValueError(f"--device: under torchrun every process uses cuda:LOCAL_RANK; pass --device cuda, got "
                             f"{args.device!r}")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"--nproc-per-node: process {local_rank} on this node needs cuda:{local_rank}, but this "
                             f"machine has {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(local_rank)
        args.device = f"cuda:{local_rank}"
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"--device: distributed training supports cuda (NCCL) and cpu (gloo), got {args.device!r}")
    if not dist.is_initialized():
        # torchrun's workers share the agent's TCPStore across elastic restarts, and the process
        # group's keys (e.g. gloo's peer addresses) would be read back stale from the previous attempt:
        # the restarted group then dials dead ranks. A per-attempt key prefix keeps attempts apart.
        store, rank, world = next(dist.rendezvous("env://", rank=rank, world_size=world, timeout=_timeout()))
        store = dist.PrefixStore(f"fastlift/attempt_{restarts}/", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=_timeout())
    ctx = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                      backend=backend, restart_count=restarts, sync_bn=sync_bn)
    try:
        _check_same_flags(ctx, args)
        if mode == "train" and not args.evaluate:
            examples = args.batch_size // args.stride
            if examples % ctx.world_size:
                good = max(1, examples // ctx.world_size) * ctx.world_size * args.stride
                raise ValueError(f"-b/--batch-size: the global batch ({args.batch_size} frames = {examples} examples of "
                                 f"-s {args.stride}) must split evenly over the {ctx.world_size} processes; use a "
                                 f"multiple of {ctx.world_size * args.stride} frames, e.g. -b {good}")
    except ValueError:
        ctx.shutdown()
        raise
    return ctx


# ----------------------------------------------------------------------------------------- DDP
def wrap_ddp(module: nn.Module, ctx: DistContext, device: torch.device, sync: bool) -> nn.Module:
    """``module`` as DDP would train it (``module`` itself for a single process).

    With ``sync`` the fused kernels' BatchNorm statistics are merged across the ranks during every
    forward (the reference path must have been converted with :func:`convert_sync_batchnorm`).
    """
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    inner = _BNSyncScope(module) if sync else module
    return DDP(inner, device_ids=[device.index] if device.type == "cuda" else None)


class _BNSyncScope(nn.Module):
    """Runs ``module`` with the kernel layer's BatchNorm sync hook set (see kernels/bn_sync.py)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self._sync = None

    def forward(self, x):
        from fastlift.kernels.bn_sync import BNSync, bn_sync

        if self._sync is None:
            self._sync = BNSync()
        with bn_sync(self._sync):
            return self.module(x)


class _SyncBNFunction(torch.autograd.Function):
    """BatchNorm over the process group's batch on devices ``nn.SyncBatchNorm`` refuses (CPU):
    the per-rank moments are merged by :class:`fastlift.kernels.bn_sync.BNSync` (fp64)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, factor, sync):
        c = x.shape[1]
        shape = [1, c] + [1] * (x.dim() - 2)
        xt = x.detach().transpose(0, 1).reshape(c, -1).double()
        n_local = xt.shape[1]
        mean_l = xt.mean(1) if n_local else xt.new_zeros(c)
        m2_l = ((xt - mean_l[:, None]) ** 2).sum(1)
        n, mean, m2 = sync.merge_moments(torch.tensor([float(n_local)], dtype=torch.float64), mean_l, m2_l)
        n = float(n)
        if n < 2:
            raise ValueError(f"BatchNorm in training mode needs more than 1 value per channel, got {int(n)} "
                             f"(global batch x frames at this layer)")
        var = m2 / n
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.copy_((1 - factor) * running_mean.double() + factor * mean)
                running_var.copy_((1 - factor) * running_var.double() + factor * var * n / (n - 1))
        xhat = (x.double() - mean.view(shape)) * invstd.view(shape)
        y = xhat * weight.double().view(shape) + bias.double().view(shape)
        ctx.save_for_backward(xhat.to(x.dtype), invstd, weight)
        ctx.sync, ctx.n_local = sync, n_local
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, gy):
        xhat, invstd, weight = ctx.saved_tensors
        c = gy.shape[1]
        shape = [1, c] + [1] * (gy.dim() - 2)
        dims = [d for d in range(gy.dim()) if d != 1]
        g = gy.double()
        xh = xhat.double()
        sum_dy = g.sum(dims)
        sum_dy_xhat = (g * xh).sum(dims)
        tot_dy, tot_dy_xhat, n = ctx.sync.reduce_sums(sum_dy, sum_dy_xhat,
                                                      torch.tensor(float(ctx.n_local), dtype=torch.float64))
        gx = (weight.double() * invstd).view(shape) * (g - (tot_dy / n).view(shape) - xh * (tot_dy_xhat / n).view(shape))
        # Parameter gradients are this rank's share; DDP sums them over the ranks.
        return (gx.to(gy.dtype), sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype), None, None, None, None,
                None)


class SyncBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the process group's batch on CPU (gloo), where ``nn.SyncBatchNorm`` refuses to
    run (and DDP refuses ``nn.SyncBatchNorm`` in a CPU module). Same parameters and buffers as
    ``nn.BatchNorm1d``. In training it merges the ranks' moments with
    :class:`fastlift.kernels.bn_sync.BNSync`, the helper the fused kernels use; in eval mode, or
    without a process group, it is ``nn.BatchNorm1d``. Needs ``affine=True`` and running statistics
    (as the lifter has). :func:`convert_sync_batchnorm` uses ``nn.SyncBatchNorm`` itself on GPUs.
    """

    _sync = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        need_sync = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not need_sync:
            return super().forward(x)
        if not self.affine or self.running_mean is None:
            raise ValueError("SyncBatchNorm on CPU: expected affine BatchNorm with running statistics")
        from fastlift.kernels.bn_sync import BNSync

        if self._sync is None:
            self._sync = BNSync()
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return _SyncBNFunction.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps, factor,
                                     self._sync)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every ``nn.BatchNorm1d`` of ``model`` by a synced BatchNorm sharing its parameters
    and buffers (state_dict keys unchanged): ``nn.SyncBatchNorm`` on GPUs, :class:`SyncBatchNorm`
    on CPU. Returns ``model``."""
    cls = SyncBatchNorm if torch.device(device).type == "cpu" else nn.SyncBatchNorm
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, SyncBatchNorm):
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(model, name, new)
        elif not isinstance(child, (SyncBatchNorm, nn.SyncBatchNorm)):
            convert_sync_batchnorm(child, device)
    return model


# ----------------------------------------------------------------------------------------- restarts
def latest_checkpoint(directory) -> Optional[Path]:
    """The ``epoch_N.bin`` with the largest ``N`` in ``directory`` (None if there is none)."""
    d = Path(directory)
    best, best_n = None, -1
    if d.is_dir():
        for p in d.iterdir():
            m = re.fullmatch(r"epoch_(\d+)\.bin", p.name)
            if m and int(m.group(1)) > best_n:
                best, best_n = p, int(m.group(1))
    return best


# ----------------------------------------------------------------------------------------- CLI
def add_distributed_arguments(p: argparse.ArgumentParser) -> None:
    """``--sync-bn`` and the torchrun convenience flags of ``fastlift train``."""
    g = p.add_argument_group("distributed (torchrun / DDP; see docs/distributed.md)")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics of the global batch across processes (default: per-process statistics)")
    g.add_argument("--nproc-per-node", default=None, type=_int_arg, metavar="N",
                   help="start N training processes on this machine through torchrun (same as `torchrun "
                        "--nproc-per-node N -m fastlift train ...`); -b stays the global batch")
    g.add_argument("--nnodes", default=None, metavar="N|MIN:MAX",
                   help="with --nproc-per-node: number of machines (needs --rdzv-endpoint for more than one)")
    g.add_argument("--max-restarts", default=None, type=_int_arg, metavar="N",
                   help="with --nproc-per-node: restart the whole group up to N times after a failure; the run resumes "
                        "from its newest checkpoint")
    g.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="with --nproc-per-node: c10d rendezvous endpoint for multi-node runs")
    g.add_argument("--rdzv-id", default=None, metavar="ID", help="with --nproc-per-node: rendezvous (job) id")


def _int_arg(text: str):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


_LAUNCH_FLAGS = {"--nproc-per-node": "nproc_per_node", "--nnodes": "nnodes", "--max-restarts": "max_restarts",
                 "--rdzv-endpoint": "rdzv_endpoint", "--rdzv-id": "rdzv_id"}


def launch_requested(args) -> bool:
    return getattr(args, "nproc_per_node", None) is not None


def torchrun_argv(args, argv: list[str]) -> list[str]:
    """torchrun's argument list for ``fastlift train`` flags ``argv`` (launcher flags moved to torchrun)."""
    n = args.nproc_per_node
    if n < 1:
        raise ValueError(f"--nproc-per-node: expected a positive number of processes, got {n}")
    if args.max_restarts is not None and args.max_restarts < 0:
        raise ValueError(f"--max-restarts: expected a number >= 0, got {args.max_restarts}")
    for flag in ("--rdzv-endpoint", "--rdzv-id"):
        if getattr(args, _LAUNCH_FLAGS[flag]) is not None and args.nnodes is None:
            raise ValueError(f"{flag}: only used with --nnodes (multi-node runs), got {flag} without --nnodes")
    nnodes = args.nnodes or "1"
    if not re.fullmatch(r"\d+(:\d+)?", str(nnodes)) or int(str(nnodes).split(":")[0]) < 1:
        raise ValueError(f"--nnodes: expected N or MIN:MAX with N >= 1, got {nnodes!r}")
    multi = str(nnodes) != "1"
    if multi and args.rdzv_endpoint is None:
        raise ValueError("--rdzv-endpoint: a multi-node run (--nnodes other than 1) needs the rendezvous HOST:PORT")
    if not multi:
        examples = args.batch_size // args.stride
        if examples % n:
            raise ValueError(f"-b/--batch-size: the global batch ({args.batch_size} frames = {examples} examples of "
                             f"-s {args.stride}) must split evenly over --nproc-per-node {n} processes; use a multiple "
                             f"of {n * args.stride} frames")
    rest, i = [], 0
    while i < len(argv):
        a = argv[i]
        key = a.split("=", 1)[0]
        if key in _LAUNCH_FLAGS:
            i += 1 if "=" in a else 2
            continue
        rest.append(a)
        i += 1
    out = ["--nproc-per-node", str(n), "--nnodes", str(nnodes)]
    if args.max_restarts is not None:
        out += ["--max-restarts", str(args.max_restarts)]
    if multi:
        out += ["--rdzv-backend", "c10d", "--rdzv-endpoint", args.rdzv_endpoint]
        if args.rdzv_id is not None:
            out += ["--rdzv-id", str(args.rdzv_id)]
    else:
        out += ["--standalone"]
    return out + ["-m", "fastlift", "train", *rest]


def launch(args, argv: list[str]) -> int:
    """Run ``fastlift train`` under torchrun (``torch.distributed.run``) and return its exit status."""
    from torch.distributed import run as torchrun

    targv = torchrun_argv(args, argv)
    try:
        torchrun.main(targv)
    except SystemExit as exc:  # torchrun exits on argument errors
        return int(exc.code or 0)
    except Exception as exc:  # ChildFailedError: torchrun has printed the failing rank's error
        name = type(exc).__name__
        if name == "ChildFailedError":
            return 1
        raise
    return 0
