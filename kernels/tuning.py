"""Tile autotuning of the GEMM kernels: a small config space per kernel, pruned by what the compiler
made (no spills, fits shared memory), timed at warm-up with the real launchers, cached.

Every tunable launcher asks :func:`pick` for its launch configuration, passing the deterministic
heuristic of :mod:`fastlift.kernels._common` (``gemm_config``/``dgrad_config``/``wgrad_config``),
its problem size and the flags that select its code path. :func:`pick` returns

* during :func:`tune`, the candidate being measured (for the one launch site being measured);
* on a GPU, the winner cached for that launch site (see :func:`site_key`), merged over the heuristic;
* otherwise (CPU, the Triton interpreter, an untuned site, or :func:`enabled` turned off) the
  heuristic itself.

Tuned configurations can be saved (:func:`save`, ``fastlift kernels tune -o FILE``) and are loaded from
the file named by ``$FASTLIFT_TILE_CACHE`` at the first GPU launch.

Only parameters that change neither the outputs' shapes nor the numerics are tuned: the column tile,
the reduction step, warps and pipeline stages. ``BLOCK_M`` of the forward kernel is also the tiling of
the BatchNorm partial statistics, and wgrad's split of the row reduction decides its summation order,
so both stay with the heuristic; the fused shrink epilogue writes one partial per column tile, so its
column tile is not tuned either.

:func:`tune` runs a warm-up callable (e.g. one training step) once to find the launch sites, then,
per site not yet cached, once per candidate of the site's space (:func:`space`). In those runs the
site's launches are first compiled and checked (:func:`cuda_facts`: ``n_spills`` and shared memory
of the compiled kernel), candidates that spill or exceed the target's shared memory are dropped
(the heuristic is kept as the fallback whatever it reports: the compile check holds it to the
targets), and the rest are timed (:func:`cuda_timer`, CUDA events) with the real launcher and
arguments. The fastest is cached per (kernel, code path, bucketed shape, dtype, dot precision,
device). Run it before any CUDA-graph capture: capture then replays the tuned configurations.
The callable runs many times, so it must tolerate repetition (use :func:`tune_model` for a module:
it restores parameters, buffers and gradients afterwards).
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import triton

from fastlift.kernels.target import Target, resolve

__all__ = ["TUNABLE", "space", "site_key", "bucket", "pick", "tune", "tune_model", "cuda_facts", "cuda_timer",
           "cached", "clear", "save", "load", "enabled", "set_enabled", "disabled", "Site", "CACHE_ENV"]

# Launch keywords each kernel may have tuned (everything else comes from the heuristic).
TUNABLE = {
    "tconv_fwd": ("BLOCK_N", "BLOCK_K", "num_warps", "num_stages"),
    "tconv_dgrad": ("BLOCK_N", "BLOCK_K", "num_warps", "num_stages"),
    "tconv_wgrad": ("BLOCK_C", "BLOCK_N", "BLOCK_R", "num_warps", "num_stages"),
}
MAX_SPACE = 8

_CACHE: dict[tuple, dict] = {}
_ENABLED = [True]
CACHE_ENV = "FASTLIFT_TILE_CACHE"  # a JSON written by save() / `fastlift kernels tune`, loaded at first GPU launch
_AUTOLOADED = [False]


def _autoload() -> None:
    _AUTOLOADED[0] = True
    path = os.environ.get(CACHE_ENV)
    if path and not os.path.exists(path):
        raise FileNotFoundError(f"{CACHE_ENV}: no tuning cache at {path} (write one with `fastlift kernels tune -o`)")
    if path:
        load(path)


def enabled() -> bool:
    """Whether :func:`pick` uses cached tuned configurations (default True)."""
    return _ENABLED[0]


def set_enabled(on: bool) -> None:
    """Turn the use of tuned configurations on or off (off: every launch uses the heuristic)."""
    _ENABLED[0] = bool(on)


def bucket(v: int) -> int:
    """Shape bucket of a problem dimension: the next power of two (at least 16). Launch sites whose
    sizes fall in the same buckets share one tuned configuration."""
    v = int(v) if isinstance(v, int) else 1 << 20  # symbolic sizes while tracing: one bucket
    return max(16, triton.next_power_of_2(max(1, v)))


def _dot_mode(dtype: torch.dtype) -> str:
    from fastlift.kernels._common import dot_precision

    return dot_precision(dtype)


def site_key(kernel: str, flags: dict, dims: tuple, dtype: torch.dtype, target: Target) -> tuple:
    """Cache key of a launch site: kernel, the code-path flags (sorted), the shape buckets of
    ``dims``, the dtype, the dot precision (IEEE and TF32 fp32 are different kernels) and the
    device (name and compute capability)."""
    fl = tuple(sorted((k, v if isinstance(v, (bool, str)) else int(v)) for k, v in flags.items()))
    return (kernel, fl, tuple(bucket(d) for d in dims), str(dtype).replace("torch.", ""), _dot_mode(dtype),
            f"{target.backend}:{target.arch}:{target.name}")


def space(kernel: str, heuristic: dict, flags: dict, target: Target) -> list[dict]:
    """The candidate configurations of one launch site (2-8 dicts of :data:`TUNABLE` keywords), the
    heuristic's first: its neighbours in warps, column tile, reduction step and pipeline depth.
    Shared memory and spills are not judged here: :func:`tune` prunes by what the compiler made."""
    if kernel not in TUNABLE:
        raise ValueError(f"kernel: expected one of {sorted(TUNABLE)}, got {kernel!r}")
    keys = TUNABLE[kernel]
    base = {k: heuristic[k] for k in keys}
    out = [base]

    def add(**kw):
        c = dict(base, **kw)
        if c not in out and len(out) < MAX_SPACE:
            out.append(c)

    add(num_warps=4 if base["num_warps"] == 8 else 8)
    if base["num_stages"] > 2:
        add(num_stages=base["num_stages"] - 1)
    add(num_stages=base["num_stages"] + 1)
    if kernel == "tconv_wgrad":
        if base["BLOCK_C"] >= 64:
            add(BLOCK_C=base["BLOCK_C"] // 2)
        if base["BLOCK_N"] >= 64:
            add(BLOCK_N=base["BLOCK_N"] // 2)
        add(BLOCK_R=base["BLOCK_R"] * 2 if base["BLOCK_R"] < 64 else base["BLOCK_R"] // 2)
    else:
        if base["BLOCK_N"] >= 64 and not flags.get("SHRINK"):
            add(BLOCK_N=base["BLOCK_N"] // 2)
        if base["BLOCK_K"] >= 32:
            add(BLOCK_K=base["BLOCK_K"] // 2)
        if base["BLOCK_K"] <= 32:
            add(BLOCK_K=base["BLOCK_K"] * 2)
    return out


@dataclass
class Site:
    """A launch site seen during :func:`tune`: its key, heuristic and candidate space."""

    key: tuple
    kernel: str
    heuristic: dict
    space: list
    target: Target
    results: list = field(default_factory=list)  # (config, status, seconds or None, facts)


class _Session:
    def __init__(self, timer, facts):
        self.timer = timer
        self.facts = facts
        self.sites: dict[tuple, Site] = {}
        self.measure: Optional[tuple] = None  # key being measured
        self.candidate: Optional[dict] = None
        self.time = 0.0
        self.pruned: Optional[str] = None
        self.facts_seen: Optional[dict] = None
        self.pending: dict[str, tuple] = {}


_SESSIONS: list[_Session] = []


def pick(kernel: str, heuristic: dict, flags: dict, dims: tuple, dtype: torch.dtype, where) -> dict:
    """The launch configuration of one launch: ``heuristic`` updated with the tuned (or, during
    :func:`tune`, the measured) values of this launch site; the heuristic unchanged on a CPU target,
    for an untuned site or when tuning is disabled."""
    target = resolve(where)
    if not target.gpu:
        return heuristic
    if not _AUTOLOADED[0]:
        _autoload()
    sess = _SESSIONS[-1] if _SESSIONS else None
    if sess is None and not _CACHE:
        return heuristic
    key = site_key(kernel, flags, dims, dtype, target)
    if sess is not None:
        if key not in sess.sites:
            sess.sites[key] = Site(key, kernel, dict(heuristic), space(kernel, heuristic, flags, target), target)
        sess.pending[kernel] = key
        if sess.measure == key:
            return {**heuristic, **sess.candidate}
    tuned = _CACHE.get(key) if _ENABLED[0] else None
    return {**heuristic, **tuned} if tuned else heuristic


def on_launch(name: str, kernel, grid, args, kwargs, run: Callable[[], object]):
    """Called by :func:`fastlift.kernels.launch.launch` for every launch; returns ``(handled, result)``.
    Outside :func:`tune` (or for launches of other sites) it does nothing."""
    if not _SESSIONS:
        return False, None
    sess = _SESSIONS[-1]
    key = sess.pending.pop(name, None)
    if key is None or key != sess.measure:
        return False, None
    site = sess.sites[key]
    is_heuristic = sess.candidate == {k: site.heuristic[k] for k in TUNABLE[site.kernel]}
    try:
        facts = sess.facts(kernel, grid, args, kwargs)
    except Exception as e:  # a candidate that does not compile is pruned, not an error
        facts = {"error": f"{type(e).__name__}: {e}"[:300]}
    sess.facts_seen = facts
    why = _prune_reason(facts, site.target)
    if why and not is_heuristic:
        sess.pruned = why
        return True, None  # skipped: this warm-up run's outputs are not used
    meta = {k: v for k, v in kwargs.items() if isinstance(v, (bool, int, float, str))}
    sess.time += float(sess.timer(run, meta))
    return True, None


def _prune_reason(facts: dict, target: Target) -> Optional[str]:
    if facts.get("error"):
        return "compile error: " + facts["error"]
    if facts.get("spill_bytes", 0) > 0:
        return f"spills {facts['spill_bytes']} B"
    if facts.get("shared_bytes", 0) > target.shared_bytes:
        return f"shared memory {facts['shared_bytes']} B > {target.shared_bytes} B"
    return None


def cuda_facts(kernel, grid, args, kwargs) -> dict:
    """Compile one launch (without running it) and read the compiled kernel's resources:
    ``spill_bytes`` (``n_spills``, the local memory per thread), ``registers``, ``shared_bytes``."""
    compiled = kernel.run(*args, grid=grid, warmup=True, **kwargs)
    # Loading the module fills n_regs/n_spills (and raises when shared memory does not fit).
    init = getattr(compiled, "_init_handles", None)
    if init is not None:
        init()
    return dict(spill_bytes=int(getattr(compiled, "n_spills", 0) or 0), registers=int(getattr(compiled, "n_regs", 0) or 0),
                shared_bytes=int(compiled.metadata.shared))


def cuda_timer(run: Callable[[], object], meta: dict, reps: int = 20) -> float:
    """Seconds per call of ``run`` (one launch) after one warm-up call, timed with CUDA events."""
    run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps / 1e3


def tune(fn: Callable[[], object], timer=None, facts=None, retune: bool = False) -> list[Site]:
    """Tune every tunable launch site ``fn()`` makes and cache the winners (see the module docstring).

    Args:
        fn: the warm-up workload, called once to find the sites and once per candidate of each
            uncached site; its results are discarded.
        timer: ``timer(run, meta) -> seconds`` for one launch (``run()`` launches it, ``meta`` its
            launch keywords); default :func:`cuda_timer`.
        facts: ``facts(kernel, grid, args, kwargs) -> dict`` with ``spill_bytes``/``shared_bytes`` (or
            raising when the candidate does not compile); default :func:`cuda_facts`.
        retune: also re-measure sites already in the cache.

    Returns:
        the sites with, per candidate, ``(config, status, seconds, facts)``; status ``"ok"``,
        ``"pruned: <why>"`` or ``"unused"`` (the site was not launched with it).

    Tunes nothing on a CPU target (the heuristic is always used there) and refuses during CUDA-graph
    capture (timing would be captured, not run).
    """
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError("tune: called during CUDA-graph capture; tune (warm up) before capturing")
    sess = _Session(timer or cuda_timer, facts or cuda_facts)
    _SESSIONS.append(sess)
    try:
        fn()  # discover the sites (heuristic or cached configurations)
        for key, site in list(sess.sites.items()):
            if key in _CACHE and not retune:
                continue
            best = None
            for cand in site.space:
                sess.measure, sess.candidate = key, cand
                sess.time, sess.pruned, sess.facts_seen = 0.0, None, None
                fn()
                if sess.facts_seen is None:
                    site.results.append((cand, "unused", None, None))
                elif sess.pruned:
                    site.results.append((cand, "pruned: " + sess.pruned, None, sess.facts_seen))
                else:
                    site.results.append((cand, "ok", sess.time, sess.facts_seen))
                    if best is None or sess.time < best[1]:
                        best = (cand, sess.time)
            sess.measure = sess.candidate = None
            if best is not None:
                _CACHE[key] = dict(best[0])
    finally:
        _SESSIONS.pop()
    return list(sess.sites.values())


def tune_model(model: torch.nn.Module, *inputs, backward: bool = True, timer=None, facts=None) -> list[Site]:
    """:func:`tune` for a module: the warm-up is ``model(*inputs)`` (and a backward of its sum when
    ``backward``), in the module's current train/eval mode; parameters, buffers (BatchNorm running
    statistics) and gradients are restored afterwards."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {n: (p.grad.detach().clone() if p.grad is not None else None) for n, p in model.named_parameters()}

    def step():
        if backward:
            out = model(*inputs)
            out.float().sum().backward()
        else:
            with torch.no_grad():
                model(*inputs)

    try:
        return tune(step, timer=timer, facts=facts)
    finally:
        with torch.no_grad():
            model.load_state_dict(state)
            for n, p in model.named_parameters():
                p.grad = grads[n]


def cached() -> dict:
    """A copy of the tuned configurations: ``{site key: config}``."""
    return {k: dict(v) for k, v in _CACHE.items()}


def clear() -> None:
    """Forget every tuned configuration (launches use the heuristic again)."""
    _CACHE.clear()


def _key_to_json(key: tuple) -> str:
    return json.dumps([key[0], [list(f) for f in key[1]], list(key[2]), key[3], key[4], key[5]])


def _key_from_json(s: str) -> tuple:
    k = json.loads(s)
    return (k[0], tuple(tuple(f) for f in k[1]), tuple(k[2]), k[3], k[4], k[5])


def save(path: str) -> None:
    """Write the tuned configurations to a JSON file (reloaded with :func:`load`)."""
    text = json.dumps({_key_to_json(k): v for k, v in sorted(_CACHE.items(), key=str)}, indent=1) + "\n"
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # readers never see a half-written cache


def load(path: str) -> int:
    """Add the tuned configurations of a JSON file written by :func:`save`; returns how many.
    Entries for other devices are kept but never match a launch here (the key names the device)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no tuning cache at {path}")
    data = json.loads(open(path).read())
    n = 0
    for ks, cfg in data.items():
        key = _key_from_json(ks)
        if key[0] not in TUNABLE or set(cfg) - set(TUNABLE[key[0]]):
            raise ValueError(f"{path}: entry {ks} has keywords {sorted(cfg)}, expected a subset of "
                             f"{list(TUNABLE.get(key[0], ()))}")
        _CACHE[key] = dict(cfg)
        n += 1
    return n


@contextlib.contextmanager
def disabled():
    """Within the block every launch uses the heuristic."""
    old = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = old
