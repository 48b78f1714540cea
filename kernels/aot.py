"""Compile fastlift's Triton kernels for a real GPU without one, and read what the compiler made.

Triton's wheel bundles the NVIDIA back end (``ptxas``, ``cuobjdump``). With a stand-in driver that
reports a CUDA target, ``JITFunction.run(..., warmup=True)`` runs the real pipeline (ttir -> ttgir
-> llir -> ptx -> cubin) on a CPU-only machine. :class:`Compiler` is a compile-only handler for
:func:`fastlift.kernels.launch.compile_only`: every launch the real code paths make is bound by
Triton's own binder (so the specialisation -- dtypes, ``== 1`` / ``% 16`` integer hints, pointer
alignment, constexprs, options -- is exactly what the JIT would compile), compiled once per
distinct specialisation, and analysed:

* ``shared_bytes``: ``metadata.shared`` (vs. the target's opt-in limit);
* ``registers``, ``spill_bytes`` (stack frame + local memory) from ``cuobjdump -res-usage``,
  ``stl`` (local stores in the SASS);
* ``dot_lowering``: ``"HGMMA"`` (Hopper warpgroup MMA), ``"HMMA"`` (mma.sync tensor cores),
  ``"FFMA"`` (a ``tt.dot`` lowered to scalar FMAs) or ``"none"`` (no ``tt.dot``), from the SASS.

Timing still needs a GPU. Must run without ``TRITON_INTERPRET`` (interpreted kernels cannot be
compiled).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections import defaultdict

import triton

from fastlift.kernels.launch import kernel_name as short_name
from fastlift.kernels.target import Target

__all__ = ["nvidia_backend_missing", "Compiler", "short_name"]


def _nvidia_bin(tool: str) -> str:
    import triton.backends.nvidia as nv

    return os.path.join(os.path.dirname(nv.__file__), "bin", tool)


def nvidia_backend_missing() -> str | None:
    """``None`` if this Triton can compile for NVIDIA GPUs here, else the reason (one line)."""
    try:
        from triton.backends import backends
    except ImportError as e:  # pragma: no cover - very old triton
        return f"triton {triton.__version__} has no pluggable back ends ({e})"
    if "nvidia" not in backends:
        return f"triton {triton.__version__} was installed without its NVIDIA back end"
    for tool in ("ptxas", "cuobjdump"):
        path = _nvidia_bin(tool)
        if not os.access(path, os.X_OK):
            return f"triton {triton.__version__}'s NVIDIA back end lacks {tool} ({path})"
    return None


class _StandInDriver:
    """Just enough of a Triton driver for ``JITFunction.run(warmup=True)`` -> ``triton.compile``."""

    def __init__(self, target: Target):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", target.arch, target.warp_size)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")

    def is_active(self):
        return True


_DOT_RE = re.compile(r"\btt\.dot\b|\bttng\.warp_group_dot\b")


def analyse(compiled, target: Target) -> dict:
    """Resources and dot lowering of a compiled kernel (see the module docstring)."""
    md = compiled.metadata
    out = {"shared_bytes": int(md.shared), "num_warps": int(md.num_warps), "num_stages": int(md.num_stages)}
    has_dot = bool(_DOT_RE.search(compiled.asm.get("ttir", "")))
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
        path = f.name
    try:
        res = subprocess.run([_nvidia_bin("cuobjdump"), "-res-usage", path], capture_output=True, text=True,
                             check=True).stdout
        sass = subprocess.run([_nvidia_bin("cuobjdump"), "-sass", path], capture_output=True, text=True,
                              check=True).stdout
    finally:
        os.unlink(path)
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res)
    if m is None:
        raise RuntimeError(f"cuobjdump -res-usage: unexpected output {res[-300:]!r}")
    out["registers"] = int(m.group(1))
    out["stack_bytes"] = int(m.group(2))
    out["local_bytes"] = int(m.group(4))
    out["spill_bytes"] = out["stack_bytes"] + out["local_bytes"]
    counts = {op: len(re.findall(rf"\b{op}\b", sass)) for op in ("HGMMA", "HMMA", "FFMA", "STL")}
    out["sass"] = counts
    if counts["HGMMA"]:
        out["dot_lowering"] = "HGMMA"
    elif counts["HMMA"]:
        out["dot_lowering"] = "HMMA"
    elif has_dot:
        out["dot_lowering"] = "FFMA"
    else:
        out["dot_lowering"] = "none"
    out["over_shared"] = out["shared_bytes"] > target.shared_bytes
    return out


def _jsonable(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


class Compiler:
    """Compile-only launch handler: compiles each distinct specialisation once for ``target``.

    Use as a context manager (it installs the stand-in driver and gives every kernel a fresh JIT
    cache for this target, restoring both on exit), and pass it to
    :func:`~fastlift.kernels.launch.compile_only`. Set :attr:`scenario`, :attr:`precision` and
    :attr:`dtype` before driving each workload; they label the records.

    Args:
        target: the GPU to compile for (``backend == "cuda"``).
        overrides: ``{kernel short name: {keyword: value}}`` forced onto that kernel's launches
            (e.g. to try a tile configuration).
        select: if given, a set of record keys: only those are compiled, the rest are only recorded
            (their ``ok`` is ``None``); see :meth:`key`.
        log: callable receiving one line per compiled specialisation (progress).
        kernels: if given, short names of the only kernels to record (others' launches are ignored).
    """

    def __init__(self, target: Target, overrides: dict | None = None, select: set | None = None, log=None,
                 kernels=None):
        if target.backend != "cuda":
            raise ValueError(f"target: expected a CUDA target, got backend {target.backend!r}")
        self.target = target
        self.overrides = overrides or {}
        self.select = select
        self.log = log
        self.kernels = set(kernels) if kernels else None
        self.scenario = "?"
        self.precision = "?"
        self.dtype = "?"
        self.records: dict = {}
        self._saved_caches: dict = {}
        self._prev_driver = None

    # -------------------------------------------------------------- context
    def __enter__(self):
        from triton.runtime.driver import driver

        self._prev_driver = driver._active  # None unless a driver was used: restored as is on exit
        driver.set_active(_StandInDriver(self.target))
        return self

    def __exit__(self, *exc):
        from triton.runtime.driver import driver

        for kernel, caches in self._saved_caches.items():
            kernel.device_caches = caches
        self._saved_caches.clear()
        driver.set_active(self._prev_driver)
        return False

    def _fresh_cache(self, kernel):
        # A JIT function caches its binder and compiled kernels per device index, with the target
        # fixed at first use: each Compiler (one target) gets its own, the previous one is restored.
        if kernel not in self._saved_caches:
            self._saved_caches[kernel] = kernel.device_caches
            kernel.device_caches = defaultdict(kernel.create_binder)

    # -------------------------------------------------------------- handler
    def key(self, kernel, args, kwargs) -> tuple:
        """Record key: (precision label, kernel, Triton's specialisation of these arguments)."""
        binder = kernel.device_caches[0][4]
        _, spec, opts = binder(*args, **kwargs)
        return (self.precision, short_name(kernel), repr(spec), repr(opts))

    def __call__(self, kernel, grid, args, kwargs):
        self._fresh_cache(kernel)
        name = short_name(kernel)
        if self.kernels is not None and name not in self.kernels:
            return
        kw = dict(kwargs)
        kw.update(self.overrides.get(name, {}))
        key = self.key(kernel, args, kw)
        rec = self.records.get(key)
        if rec is None:
            consts = {k: _jsonable(v) for k, v in kw.items() if k in kernel.arg_names}
            opts = {k: _jsonable(v) for k, v in kw.items() if k not in kernel.arg_names}
            programs = 1
            for g in grid:
                programs *= int(g)
            rec = dict(kernel=name, arch=self.target.arch, target=self.target.name, dtype=self.dtype,
                       precision=self.precision, dot_precision=consts.get("PRECISION"), ok=None, error=None,
                       grid=list(grid), programs=programs, sm_fill=round(programs / self.target.sm_count, 3),
                       launches=0, scenarios=[], constexprs=consts, options=opts,
                       shared_limit=self.target.shared_bytes, score=_score(consts, opts))
            self.records[key] = rec
            if self.select is None or key in self.select:
                self._compile(kernel, grid, args, kw, rec)
        rec["launches"] += 1
        if self.scenario not in rec["scenarios"]:
            rec["scenarios"].append(self.scenario)

    def facts(self, kernel, grid, args, kwargs) -> dict:
        """Compile one launch for this target and return its resources (:func:`analyse`): the
        ``facts`` function of :func:`fastlift.kernels.tuning.tune`, so a tile space is pruned by what
        ptxas made for the target (spills, shared memory) on a machine without the GPU. Raises when
        the configuration does not compile."""
        self._fresh_cache(kernel)
        return analyse(kernel.run(*args, grid=grid, warmup=True, **kwargs), self.target)

    def _compile(self, kernel, grid, args, kw, rec):
        t0 = time.time()
        try:
            compiled = kernel.run(*args, grid=grid, warmup=True, **kw)
            rec.update(analyse(compiled, self.target))
            rec["ok"] = True
        except Exception as e:  # a failed compile is a result, reported per specialisation
            rec["ok"] = False
            rec["error"] = f"{type(e).__name__}: {e}"[-2000:]
        rec["compile_s"] = round(time.time() - t0, 2)
        if self.log is not None:
            state = "ok  " if rec["ok"] else "FAIL"
            self.log(f"[sm_{self.target.arch} {self.precision:4s} {self.scenario}] {state} {rec['kernel']:12s} "
                     f"smem={rec.get('shared_bytes')} regs={rec.get('registers')} spill={rec.get('spill_bytes')} "
                     f"dot={rec.get('dot_lowering')} {rec['compile_s']}s"
                     + (f" {rec['error'][:200]}" if rec["error"] else ""))


def _score(consts: dict, opts: dict) -> tuple:
    """How demanding a specialisation is (larger first): tile volume x stages, then enabled features.
    Quick checks compile the most demanding specialisation of each kernel x precision."""
    vol = 1
    for k, v in consts.items():
        if k.startswith("BLOCK_") and isinstance(v, int):
            vol *= v
    flags = sum(1 for k, v in consts.items() if not k.startswith("BLOCK_") and v not in (0, False, None, "ieee")
                and not isinstance(v, str))
    return (vol * int(opts.get("num_stages", 1) or 1), flags)
