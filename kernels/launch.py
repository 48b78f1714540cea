"""The one place where fastlift's Triton kernels are launched (or only compiled).

Every launcher in :mod:`fastlift.kernels` calls :func:`launch` instead of ``kernel[grid](...)``.
It has two modes:

* **launch** (default): the kernel runs — through ``torch.library.wrap_triton`` so registered
  ``triton_op`` bodies trace under ``torch.compile``/``torch.export``, or the bare interpreted
  kernel under ``TRITON_INTERPRET=1``;
* **compile only** (:func:`compile_only`): nothing runs; each launch is handed to a handler
  with the kernel, its grid and its exact arguments (e.g. :class:`fastlift.kernels.aot.Compiler`,
  which compiles it for a target GPU on a machine without one), and every launcher tiles for the
  session's :class:`~fastlift.kernels.target.Target` instead of the tensors' device. Outputs
  stay uninitialised, so this mode is for inspecting what the code paths launch, never for
  results.

Observers installed with :func:`record_launches` see every launch (kernel name and grid) in
both modes: this is how launch counts and grids are measured without a GPU.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from fastlift.kernels import target as _target
from fastlift.kernels import tuning as _tuning
from fastlift.kernels._common import interpreter_active, launchable

__all__ = ["LaunchRecord", "kernel_name", "launch", "compile_only", "compile_only_active", "record_launches"]


@dataclass
class LaunchRecord:
    """One launch as seen by an observer: kernel name, grid, compile-time (constexpr/option) keywords."""

    kernel: str
    grid: tuple
    meta: dict = field(default_factory=dict)


_HANDLERS: list = []  # compile-only handlers, innermost last
_OBSERVERS: list[list] = []


def kernel_name(kernel) -> str:
    """Short name of a ``@triton.jit`` kernel: ``_tconv_fwd_kernel`` -> ``tconv_fwd``."""
    name = kernel.fn.__name__ if hasattr(kernel, "fn") else getattr(kernel, "__name__", str(kernel))
    name = name.lstrip("_")
    return name[: -len("_kernel")] if name.endswith("_kernel") else name


def compile_only_active() -> bool:
    """Whether launches are currently compiled (or recorded) instead of run."""
    return bool(_HANDLERS)


def launch(kernel, grid, *args, **kwargs):
    """Launch ``kernel`` (a ``@triton.jit`` function) over ``grid`` with ``args``/``kwargs``.

    In a compile-only session the session's handler is called instead (and its result
    returned); nothing runs on the tensors.
    """
    if _OBSERVERS:
        meta = {k: v for k, v in kwargs.items() if isinstance(v, (bool, int, float, str))}
        rec = LaunchRecord(kernel_name(kernel), tuple(grid), meta)
        for obs in _OBSERVERS:
            obs.append(rec)
    if _HANDLERS:
        handler = _HANDLERS[-1]

        def run():
            return handler(kernel, tuple(grid), args, kwargs) if handler is not None else None
    else:
        def run():
            return launchable(kernel)[grid](*args, **kwargs)
    # During warm-up tuning the launch of the site being measured is checked and timed there.
    handled, result = _tuning.on_launch(kernel_name(kernel), kernel, tuple(grid), args, kwargs, run)
    return result if handled else run()


@contextlib.contextmanager
def compile_only(target: _target.Target, handler=None):
    """Within this context launches call ``handler(kernel, grid, args, kwargs)`` (``None``: only
    observers see them) and every launcher tiles for ``target``.

    CPU tensors are accepted by the launchers (the kernels' device checks pass), so real model code
    paths can be driven on a CPU-only machine. Not allowed under ``TRITON_INTERPRET=1``: the
    interpreter's kernels cannot be compiled.
    """
    if interpreter_active():
        raise RuntimeError("compile_only: TRITON_INTERPRET is set, so the kernels are interpreted and cannot be "
                           "compiled; run without TRITON_INTERPRET (e.g. in a subprocess)")
    _HANDLERS.append(handler)
    try:
        with _target.override(target):
            yield
    finally:
        _HANDLERS.pop()


@contextlib.contextmanager
def record_launches():
    """Collect a :class:`LaunchRecord` for every launch made within the context (yields the list)."""
    log: list[LaunchRecord] = []
    _OBSERVERS.append(log)
    try:
        yield log
    finally:
        _OBSERVERS.remove(log)
