"""Precision names, what the CPU runs natively, and the warn-once for emulated low precision.

One vocabulary for every API and command: ``fp32``, ``tf32``, ``bf16``, ``fp16`` and ``auto``
(:data:`PRECISIONS`; ``float32``/``bfloat16``/``float16``/``half`` are accepted as aliases).

* Library calls (:func:`fastlift.fuse`, :class:`fastlift.StreamingLifter`) and ``fastlift infer``
  default to fp32: an exact drop-in for the reference.
* ``auto`` (:func:`resolve_precision`) is for the apps (``video``, ``stream``): bf16 on a CPU
  that computes bf16 natively (``avx512_bf16`` or ``amx_bf16``) and on CUDA devices with bf16,
  fp32 elsewhere. docs/performance.md has the accuracy table behind that choice (bf16 moves
  the demo model's MPJPE by well under 0.5 mm).
* bf16 on a CPU without native bf16, and fp16 on a CPU without ``avx512_fp16``/``amx_fp16``,
  still run (oneDNN emulates them by converting to fp32), but slower than fp32:
  :func:`warn_if_emulated` says so once per dtype and process.
"""
from __future__ import annotations

import functools
import warnings

import torch

__all__ = ["PRECISIONS", "parse_precision", "precision_dtype", "cpu_flags", "cpu_native", "warn_if_emulated",
           "resolve_precision", "check_model_dtype", "precision_name"]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "auto")
_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}
# The CPU instructions that make a dtype's GEMMs native rather than converted to fp32.
NATIVE_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}


def parse_precision(value, name: str = "--precision", allowed=PRECISIONS) -> str:
    """Canonical precision name for ``value`` (case-insensitive; aliases allowed), or a
    ``ValueError`` naming ``name`` and listing the valid names."""
    key = str(value).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return key


def precision_dtype(precision: str) -> torch.dtype:
    """The storage/compute dtype of a (non-``auto``) precision name (``tf32`` computes in fp32)."""
    return _DTYPES[parse_precision(precision, "precision", tuple(_DTYPES))]


def precision_name(dtype: torch.dtype) -> str:
    """Short name of a dtype (``fp32``, ``bf16``, ``fp16``, ``fp64``), or ``str(dtype)``."""
    return _NAMES.get(dtype, str(dtype).replace("torch.", ""))


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU feature flags of this (Linux) machine from ``/proc/cpuinfo``; empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _torch_says_native(dtype: torch.dtype) -> bool:
    # torch's own cpuinfo-based checks (private, so any failure just means "unknown").
    checks = {torch.bfloat16: ("_is_avx512_bf16_supported",), torch.float16: ("_is_amx_fp16_supported",)}
    for fn in checks.get(dtype, ()):
        try:
            if bool(getattr(torch.cpu, fn)()):
                return True
        except Exception:  # noqa: BLE001 -- a missing/broken private check is not an error
            pass
    return False


def cpu_native(dtype: torch.dtype) -> bool:
    """Whether this CPU computes ``dtype`` GEMMs natively (fp32/fp64: always; bf16: ``avx512_bf16``
    or ``amx_bf16``; fp16: ``avx512_fp16`` or ``amx_fp16``), from torch's check or the CPU flags."""
    if dtype in (torch.float32, torch.float64):
        return True
    if dtype not in NATIVE_FLAGS:
        return False
    return _torch_says_native(dtype) or any(f in cpu_flags() for f in NATIVE_FLAGS[dtype])


_warned: set = set()


def warn_if_emulated(dtype: torch.dtype, device="cpu") -> bool:
    """Warn (once per dtype and process) when ``dtype`` runs emulated on this CPU; return whether
    it is emulated. Non-CPU devices and fp32/fp64 are never emulated."""
    if torch.device(device).type != "cpu" or cpu_native(dtype):
        return False
    if dtype not in _warned:
        _warned.add(dtype)
        flags = " or ".join(NATIVE_FLAGS.get(dtype, ()))
        warnings.warn(f"{precision_name(dtype)} on this CPU is emulated (no {flags}): it runs correctly but slower "
                      f"than fp32; use fp32 here", RuntimeWarning, stacklevel=3)
    return True


def resolve_precision(precision: str, device="cpu") -> str:
    """``auto`` -> ``bf16`` where bf16 is native (a CPU with ``avx512_bf16``/``amx_bf16``, a CUDA
    device with bf16 support), else ``fp32``; any other name is returned canonicalised."""
    p = parse_precision(precision)
    if p != "auto":
        return p
    dev = torch.device(device)
    if dev.type == "cpu":
        return "bf16" if cpu_native(torch.bfloat16) else "fp32"
    if dev.type == "cuda":
        try:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        except Exception:  # noqa: BLE001 -- no usable CUDA: fp32 is always right
            return "fp32"
    return "fp32"


def check_model_dtype(model_dtype: torch.dtype, dtype: torch.dtype, name: str = "dtype") -> None:
    """Say so (once per process and pair) when a float64 model is asked for bf16/fp16.

    fp64 parameters usually mean the caller wants reference-exact numbers, so the request is
    probably a mistake -- but folding in float64 and then casting is also the most accurate way to
    get a half-precision lifter (an existing, tested use of ``fuse``), so it is a warning that names
    the model's dtype, not an error."""
    if model_dtype == torch.float64 and dtype in (torch.bfloat16, torch.float16):
        key = ("fp64->", dtype)
        if key in _warned:
            return
        _warned.add(key)
        warnings.warn(f"{name}: {precision_name(dtype)} requested, but the model's parameters are torch.float64: "
                      f"folding in float64 and casting to {precision_name(dtype)} (keep float64 for reference-exact "
                      f"numbers)", RuntimeWarning, stacklevel=3)
