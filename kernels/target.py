"""The machine a kernel is tiled for, described explicitly.

Tile and launch configuration (``_common``'s tile table) takes a :class:`Target` instead of
branching on ``tensor.device.type``, so the same launcher code can launch on a GPU, run under the
Triton CPU interpreter, or only *compile* for a GPU that is not there (``fastlift kernels
check``): "what would run on an H100?" is answered by passing the H100's target.

* On CUDA, :func:`device_target` reads the real device's properties (compute capability, SM
  count, opt-in shared memory per block, warp size); ROCm devices report backend ``"hip"``.
* On CPU (interpreter, or the CPU twins that must reproduce the kernels' tile layout),
  :data:`INTERPRETER` is the default target: tiny tiles, one warp.
* :func:`override` installs a target for every device while a compile-only session runs
  (see :mod:`fastlift.kernels.launch`).
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

__all__ = ["Target", "INTERPRETER", "KNOWN_CUDA", "cuda_target", "device_target", "resolve", "override",
           "active_override"]


@dataclass(frozen=True)
class Target:
    """What tile choice needs to know about a machine.

    Attributes:
        backend: ``"cuda"``, ``"hip"`` or ``"interpreter"`` (Triton's CPU interpreter).
        arch: compute capability as ``major * 10 + minor`` (90 = sm_90); 0 for the interpreter.
        sm_count: streaming multiprocessors (sizes split-K / split-N grids).
        shared_bytes: largest dynamic shared memory one block may use (the opt-in limit).
        warp_size: threads per warp (32 on NVIDIA, 64 on most AMD GPUs).
        name: human-readable description for reports.
    """

    backend: str
    arch: int
    sm_count: int
    shared_bytes: int
    warp_size: int = 32
    name: str = ""

    @property
    def gpu(self) -> bool:
        """Whether kernels are compiled for a real GPU (False: the CPU interpreter)."""
        return self.backend != "interpreter"

    @property
    def has_tf32(self) -> bool:
        """Whether fp32 ``tl.dot`` can use TF32 tensor cores (NVIDIA Ampere and later)."""
        return self.backend == "cuda" and self.arch >= 80


INTERPRETER = Target("interpreter", 0, sm_count=1, shared_bytes=1 << 30, warp_size=32, name="Triton CPU interpreter")

# Published limits of common data-centre parts (opt-in dynamic shared memory per block; SM count
# of the part named). Used to compile for a GPU that is not present; a present GPU's own
# properties always win (device_target).
KNOWN_CUDA: dict[int, Target] = {
    80: Target("cuda", 80, 108, 166912, 32, "A100 (sm_80)"),
    86: Target("cuda", 86, 84, 101376, 32, "A40 (sm_86)"),
    89: Target("cuda", 89, 58, 101376, 32, "L4 (sm_89)"),
    90: Target("cuda", 90, 132, 232448, 32, "H100 SXM / H200 (sm_90)"),
}


def cuda_target(arch: int) -> Target:
    """Target of a known CUDA architecture (``arch`` = 80, 86, 89 or 90)."""
    if arch not in KNOWN_CUDA:
        raise ValueError(f"arch: expected one of {sorted(KNOWN_CUDA)}, got {arch!r}")
    return KNOWN_CUDA[arch]


@functools.lru_cache(maxsize=None)
def _cuda_device_target(index: int) -> Target:
    p = torch.cuda.get_device_properties(index)
    backend = "hip" if torch.version.hip is not None else "cuda"
    shared = int(getattr(p, "shared_memory_per_block_optin", 0) or getattr(p, "shared_memory_per_block", 0) or 49152)
    return Target(backend, p.major * 10 + p.minor, int(p.multi_processor_count), shared,
                  int(getattr(p, "warp_size", 32) or 32), p.name)


def device_target(device) -> Target:
    """The real target of ``device``: the CUDA device's properties, else :data:`INTERPRETER`."""
    device = torch.device(device)
    if device.type == "cuda":
        return _cuda_device_target(device.index if device.index is not None else torch.cuda.current_device())
    return INTERPRETER


_OVERRIDE: list[Target] = []


def active_override() -> Target | None:
    """The target installed by :func:`override`, if any."""
    return _OVERRIDE[-1] if _OVERRIDE else None


@contextlib.contextmanager
def override(target: Target):
    """Tile every launch for ``target`` whatever the tensors' device (compile-only sessions)."""
    _OVERRIDE.append(target)
    try:
        yield target
    finally:
        _OVERRIDE.pop()


def resolve(where) -> Target:
    """``where`` if it is a :class:`Target`, else the override (if any) or the target of the device ``where``."""
    if isinstance(where, Target):
        return where
    if _OVERRIDE:
        return _OVERRIDE[-1]
    return device_target(where)
