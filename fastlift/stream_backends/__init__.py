"""Executors of the streaming step for :class:`fastlift.streaming.StreamingLifter`.

The engine (``fastlift/streaming.py``) owns what does not depend on how a step is computed:
the plan, the per-slot ring-buffer state, slot bookkeeping, the delay, input validation and the
tail flush. A backend computes one step for the pushed streams, reading and writing the
engine's rings in place. Every backend, the tail flush and the exported step
(:class:`fastlift.export.StreamStep`) execute the same step definition: the plan's
:attr:`~fastlift.kernels.plan.LifterPlan.stream_program` (which layer reads which ring at which
lags, where the residual tap is) with the layer math of :func:`fastlift.stream_backends.step.layer`.

* ``"torch"`` (:mod:`.torch_backend`): any device; one batched GEMM per layer over all pushed
  streams. On CPU in fp32 it uses oneDNN's prepacked linear when torch provides it (a private
  ``torch.ops.mkldnn`` op, probed once; ``addmm`` is the public fallback and is tested too).
* ``"triton"`` (:mod:`.triton_backend`): the fused step kernel of
  :mod:`fastlift.kernels.stream_step`, one launch per layer; on CUDA each power-of-two stream
  bucket's step is captured in a CUDA graph.
"""
from __future__ import annotations

import torch

__all__ = ["BACKENDS", "resolve_backend", "create_backend"]

BACKENDS = ("auto", "torch", "triton")


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend name for ``backend`` (``"auto"`` resolved) on ``device``/``dtype``;
    raises ``ValueError`` naming the argument when the combination cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected 'auto', 'torch' or 'triton', got {backend!r}")
    if backend == "auto":
        backend = "triton" if (device.type == "cuda" and dtype != torch.float64 and _triton_available()) else "torch"
    if backend == "triton":
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"dtype: the triton backend supports float16/bfloat16/float32, got {dtype}")
        if device.type == "cpu":
            from fastlift.kernels import stream_step

            if not stream_step.kernels_available(device):
                raise ValueError("backend: 'triton' on CPU needs TRITON_INTERPRET=1 set before triton is first "
                                 "imported (it runs the kernels in the Triton interpreter); use backend='torch' "
                                 "on CPU")
    return backend


def create_backend(name: str, engine):
    """Build backend ``name`` (already resolved) for ``engine``'s plan, weights and rings."""
    if name == "triton":
        from fastlift.stream_backends.triton_backend import TritonBackend

        return TritonBackend(engine)
    from fastlift.stream_backends.torch_backend import TorchBackend

    return TorchBackend(engine)
