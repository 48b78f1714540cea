"""Where a number came from: device resolution, a stable device slug, machine facts, peaks."""
from __future__ import annotations

import os
import platform
import re
import subprocess

import torch

from fastlift.bench.peaks import lookup_peaks

__all__ = ["resolve_device", "device_name", "cpu_model_name", "cpu_ids", "cpu_cores", "device_slug", "host_info",
           "machine_info", "slugify"]


def resolve_device(spec: str | None = None) -> torch.device:
    """``None``/``"auto"``: the current accelerator if torch sees one, else the CPU; otherwise
    ``torch.device(spec)`` (validated: an accelerator that is not available is an error)."""
    if spec in (None, "", "auto"):
        acc = getattr(torch, "accelerator", None)
        if acc is not None and acc.is_available():
            dev = acc.current_accelerator()
            index = getattr(acc, "current_device_index", None) or getattr(acc, "current_device_idx", None)
            if dev is not None and dev.type == "cuda" and index is not None:  # the suite measures cpu/cuda
                return torch.device(dev.type, index())
        if torch.cuda.is_available():  # torch without torch.accelerator
            return torch.device(torch.cuda.current_device())
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available on this machine (torch {torch.__version__}); "
                             f"use --device cpu")
        if dev.index is None:
            dev = torch.device(dev.type, torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"--device {spec}: only cpu and cuda devices are benchmarked, got {dev.type}")
    return dev


def cpu_model_name() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` ``model name``), or ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


_ISA_PREFIXES = ("avx512", "amx", "avx2", "fma", "avx_vnni")


def cpu_ids(cpuinfo: str | None = None) -> dict:
    """The CPU's generation, which the marketing name does not give: ``family``, ``model``,
    ``stepping`` (ints) and ``isa`` (sorted AVX2/FMA/AVX-512/AMX flags) from ``/proc/cpuinfo``
    (or the text ``cpuinfo``); ``{}`` where unavailable.

    Why: machines that all report "AMD EPYC" differ ~2x in fp32 AVX-512 throughput (family 25
    executes 512-bit FMAs as two 256-bit halves; later generations do not), so a CPU number
    without these cannot be compared with another.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return {}
    ids: dict = {}
    for line in cpuinfo.splitlines():
        key, sep, val = line.partition(":")
        if not sep:
            if ids:  # end of the first processor's block
                break
            continue
        key, val = key.strip(), val.strip()
        if key in ("cpu family", "model", "stepping") and key not in ids:
            try:
                ids["family" if key == "cpu family" else key] = int(val)
            except ValueError:
                pass
        elif key == "flags" and "isa" not in ids:
            ids["isa"] = sorted(x for x in val.split() if x.startswith(_ISA_PREFIXES))
    return ids


def cpu_cores() -> int:
    """CPUs this process may run on (the affinity mask in containers), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model_name() or "generic"


def slugify(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return re.sub(r"-{2,}", "-", s)


def _cpu_slug_name(name: str) -> str:
    n = re.sub(r"\((r|tm|c)\)", " ", name, flags=re.I)
    n = re.sub(r"@.*$", " ", n)  # clock speed
    n = re.sub(r"\b(cpu|processor|\d+-core)\b", " ", n, flags=re.I)
    return slugify(n) or "generic"


def device_slug(device: torch.device | str, name: str | None = None, cores: int | None = None) -> str:
    """File-name slug of a device: ``nvidia-h100-80gb-hbm3`` for a GPU, ``cpu-<model>-<N>c`` for a
    CPU (``cpu-generic-2c`` when the model name is unknown). ``name``/``cores`` override the
    detected values (used by tests and by results from other machines)."""
    device = torch.device(device)
    if device.type == "cuda":
        return slugify(name if name is not None else device_name(device)) or "cuda-generic"
    cpu_name = name if name is not None else cpu_model_name()
    return f"cpu-{_cpu_slug_name(cpu_name) if cpu_name else 'generic'}-{cores if cores is not None else cpu_cores()}c"


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def host_info(device: torch.device | str) -> dict:
    """Where the numbers came from: CPU model, cores, torch threads, versions, GPU name, load.

    Keys: ``cpu`` (model name, ``"unknown"`` if not found), ``cpu_id`` (family/model/stepping,
    where ``/proc/cpuinfo`` gives them), ``cpu_isa`` (vector ISA flags), ``cpu_count`` (``os.cpu_count()``),
    ``torch_threads``, ``torch``, ``python``, ``device``, ``gpu`` (CUDA devices only),
    ``load_average_1m`` (where the OS reports it). The record of the streaming and sampler
    benchmarks; :func:`machine_info` extends it for the suite.
    """
    device = torch.device(device)
    info = {"cpu": cpu_model_name() or "unknown", "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    ids = cpu_ids()
    if ids:
        info["cpu_id"] = {k: ids[k] for k in ("family", "model", "stepping") if k in ids}
        info["cpu_isa"] = ids.get("isa", [])
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def machine_info(device: torch.device) -> dict:
    """Device name, slug, versions, CPU facts, precision flags and the peak table entry.

    Builds on :func:`host_info` (the benchmarks' record of the host) and adds what the suite's
    tables need.
    """
    from fastlift import __version__

    info = host_info(device)
    info.update({
        "device_type": device.type,
        "device_name": device_name(device),
        "slug": device_slug(device),
        "cpu_cores": cpu_cores(),
        "fastlift": __version__,
        "git_commit": _git_commit(),
        "platform": platform.platform(),
    })
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({
            "cuda": torch.version.cuda,
            "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "gpu_memory_gb": round(props.total_memory / 1e9, 1),
            "cudnn": torch.backends.cudnn.version(),
        })
        peaks = lookup_peaks(info["device_name"])
        info["peaks"] = peaks if peaks is not None else "unknown"
    else:
        info["peaks"] = None  # CPUs: achieved GFLOP/s only
        from fastlift.precision import cpu_native

        # bf16/fp16 rows of a CPU without these are oneDNN emulation (slower than fp32).
        info["cpu_bf16_native"] = cpu_native(torch.bfloat16)
        info["cpu_fp16_native"] = cpu_native(torch.float16)
    return info
