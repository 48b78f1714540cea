"""Deploy a trained lifter without Python: ``torch.export`` + AOTInductor packages (``fastlift export``).

A package (one ``.pt2`` file, AOTInductor's PT2 archive) holds up to two compiled models:

``"model"`` — whole-sequence lifting, the exported form of :meth:`FusedInferenceLifter.forward_sequence`
    (:meth:`~FusedInferenceLifter.lift` without its NaN/inf checks):
    input ``keypoints`` float32 ``(B, T, J_in, F)``, output ``poses`` float32 ``(B, T, J_out, 3)``,
    with the reference's edge padding (symmetric models replicate ``pad`` frames on each side,
    causal ones ``2*pad`` on the left). ``B >= 1`` and ``T >= 1`` are dynamic (sequences shorter
    than the receptive field are fine).

``"step"`` — one streaming step (only with ``--stream`` / ``--causal-stream``), a pure function
    ``(frames, frame_index, *state) -> (poses, *new_state)`` for ``N >= 1`` lock-step streams
    (``N`` dynamic):

    * ``frames`` float32 ``(N, J_in, F)``: the next frame of every stream;
    * ``frame_index`` int64 ``(N,)``: frames already pushed to that stream (0 starts a stream:
      its history is filled with the response to this frame, exactly what the whole-sequence
      path's left edge replication computes);
    * ``state[r]`` ``(N, L_r, C_r)`` in the package dtype: the last ``L_r`` inputs of layer ``r``
      (oldest first; ``r = 0`` is the network input, ``r >= 1`` the input of block ``r``);
      shapes in the metadata (``fastlift.state_shapes``); start from zeros;
    * ``poses`` float32 ``(N, J_out, 3)``: the pose of frame ``frame_index - delay``, where
      ``delay = 0`` (causal) or ``pad`` (symmetric); outputs of steps with
      ``frame_index < delay`` are not poses and must be discarded. A symmetric stream of ``T``
      frames is finished by pushing its last frame ``delay`` more times (the whole-sequence
      path's right edge replication). :func:`stream_with_step` is the reference driver; the
      C++ runner (``cpp/fastlift_run.cpp``) does the same.

Every model carries string metadata (``AOTIModelPackageLoader::get_metadata()`` in C++,
:func:`read_metadata` in Python): ``fastlift.format``, ``fastlift.model_kind``, ``fastlift.device``,
``fastlift.dtype``, ``fastlift.impl``, ``fastlift.receptive_field``, ``fastlift.pad``,
``fastlift.delay``, ``fastlift.causal``, ``fastlift.dense``, ``fastlift.filter_widths``,
``fastlift.channels``, ``fastlift.joints_in``, ``fastlift.in_features``, ``fastlift.joints_out``,
``fastlift.has_step``, ``fastlift.state_shapes`` (``"LxC;LxC;..."``), ``fastlift.state_dtype``,
``fastlift.random_init``, ``fastlift.source``, ``fastlift.version``.

Implementation per device: a CPU package is built from the pure-torch folded math
(``impl="reference"``): the fused Triton op's CPU kernel is a Python registration that a C++
AOTInductor runtime cannot call, so an export that kept it would not run without Python
(:func:`check_python_free` rejects such graphs). In fp32/bf16 the traced math is the CPU
executor's (:func:`fastlift.cpu_infer.traceable_forward`: channels-last, one GEMM per layer on
the row-shifted slices, as ``fuse(model).lift`` runs it), compiled with Inductor's ``freezing`` so
every GEMM's weight is a constant that Inductor prepacks once, at compile time, into a oneDNN
linear (``mkldnn._linear_pointwise``, ReLU fused) -- no per-call weight work. On CUDA the whole-sequence model is exported
with ``impl="triton"``: ``torch.export`` keeps each ``fastlift::tconv_fwd`` call as a custom-op
node (no graph break), and AOTInductor decomposes that ``triton_op`` into its Triton kernels and
compiles them into the package; after compilation :func:`export_package` rejects any operator
left to AOTInductor's proxy executor (a runtime fallback). The streaming step is always exported
from torch ops (Inductor generates its kernels). Packages are device-specific: a CPU package
runs on CPU only, a CUDA package needs a CUDA build of libtorch (the CUDA path is untested on
the CPU-only development machines).

Dtypes: float32 (default), bfloat16 and float16 weights/activations (inputs and outputs stay
float32; BatchNorm is folded in fp32 before the cast). Limitation: export needs torch >= 2.6
(AOTInductor packaging).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from fastlift import reference as _ref
from fastlift.checkpoint import Architecture, architecture_from_state_dict, load_lifter
from fastlift.fold import FoldedLifter
from fastlift.stream_backends.step import StepOp, shift_register_step

__all__ = [
    "FORMAT", "DTYPES", "Architecture", "architecture_from_state_dict", "load_checkpoint", "build_random_model",
    "SequenceLifter", "StreamStep", "export_programs", "check_python_free", "export_package", "read_metadata",
    "load_package", "stream_with_step", "add_arguments", "run",
]

FORMAT = "fastlift-lifter/1"
#: ``fastlift export --precision`` values (``--dtype`` is the old name; auto: bf16 on CUDA, fp32 on CPU).
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
#: Accepted dtype spellings.
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
#: Verification tolerance (max abs error / max |pose|) of a package against the eager model.
VERIFY_TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


# ---------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path, *, key: str = "model_pos", trust: bool = False, causal: Optional[bool] = None,
                    dense: Optional[bool] = None, in_features: Optional[int] = None, **arch_overrides):
    """Load a lifter from a checkpoint: ``(reference TemporalModel in eval mode, Architecture)``.

    :func:`fastlift.checkpoint.load_lifter` with ``fastlift export``'s flag names in its messages
    (``--checkpoint``, ``--key``). ``path``: a ``torch.save``'d VideoPose3D-layout dict whose
    ``key`` entry (default ``"model_pos"``; ``"model_traj"`` for the trajectory model) is the
    lifter's state_dict, or a bare state_dict. A ``module.`` prefix (DataParallel) is stripped and
    missing BatchNorm ``num_batches_tracked`` counters (old PyTorch) are zero-filled. Loading is
    ``weights_only`` (numpy arrays and RandomState objects allowed) unless ``trust`` is set.

    ``causal``/``dense``/``in_features``: ``None`` means "not given": taken from the
    ``fastlift.architecture`` record that fastlift's training stack stores in its checkpoints,
    else False/False/2; a given value that contradicts the record raises ``ValueError``.
    ``arch_overrides`` (``filter_widths``, ``channels``, ``joints_in``, ``joints_out``) go to
    :func:`architecture_from_state_dict`. The 1f model's checkpoints load into the dilated model
    (same weights).
    """
    return load_lifter(path, key=key, trust=trust, what="--checkpoint", key_flag="--key", causal=causal, dense=dense,
                       in_features=in_features, **arch_overrides)


def build_random_model(arch: Architecture, seed: int = 0) -> _ref.TemporalModel:
    """A randomly initialised lifter (weights and BN statistics) for smoke tests; eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = arch.build()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return model.eval()


# ---------------------------------------------------------------------------------- exportable modules
class SequenceLifter(nn.Module):
    """Export-friendly whole-sequence lifting: ``(B, T, J_in, F)`` -> ``(B, T, J_out, 3)`` float32.

    Wraps a :class:`fastlift.model.FusedInferenceLifter` and calls its
    :meth:`~fastlift.model.FusedInferenceLifter.forward_sequence`: exactly ``lift``'s result (edge
    padding by concatenating expanded edge frames, or in the kernel's index math on the Triton
    path) with shape/dtype/device checks only — ``lift``'s data-dependent input checks (NaN/inf
    rejection) cannot be traced, so callers of an exported model validate inputs themselves (the
    C++ runner does).
    """

    def __init__(self, lifter):
        super().__init__()
        self.lifter = lifter

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        return self.lifter.forward_sequence(keypoints)


class StreamStep(nn.Module):
    """One streaming step of a folded lifter as a pure function (see the module docstring).

    ``forward(frames (N, J_in, F), frame_index int64 (N,), state: list of (N, L_r, C_r))`` returns
    ``(poses float32 (N, J_out, 3), new_state list)``. Each state tensor is a shift register of a
    layer's last ``L_r = (taps - 1) * dilation + 1`` inputs (oldest first), so a layer's output is
    one GEMM over its taps ``state[r][:, ::dilation]``; a block's residual is the tap at
    ``res_offset`` (centre for symmetric, newest for causal models). The step is the plan's
    :attr:`~fastlift.kernels.plan.LifterPlan.stream_program` run by
    :func:`fastlift.stream_backends.step.shift_register_step` -- the step definition that
    :class:`fastlift.streaming.StreamingLifter`'s backends execute over in-place rings.
    Computation and state are in the weights' dtype; inputs are cast to it, poses to float32.
    """

    def __init__(self, folded: FoldedLifter):
        super().__init__()
        plan = folded.plan
        self.plan = plan
        self.num_joints_in = plan.joints_in
        self.in_features = plan.in_features
        self.num_joints_out = plan.joints_out
        self.causal = plan.causal
        self.receptive_field = plan.receptive_field
        self.pad = plan.pad
        dtype = folded.layers[0].weight.dtype
        for i, l in enumerate(folded.layers):
            self.register_buffer(f"w_{i}", l.weight.detach().clone())
            # In the compute dtype: the layer GEMM is addmm(bias, a, w).
            self.register_buffer(f"b_{i}", l.bias.detach().to(dtype).clone())
        self.state_shapes = [(r.length, r.channels) for r in plan.stream_rings]

    @property
    def dtype(self) -> torch.dtype:
        return self.w_0.dtype

    @property
    def delay(self) -> int:
        return self.plan.delay

    def initial_state(self, n: int, device=None) -> list:
        """Zero state for ``n`` streams (any content works: a stream's first step overwrites it)."""
        device = self.w_0.device if device is None else device
        return [torch.zeros(n, length, c, dtype=self.dtype, device=device) for length, c in self.state_shapes]

    def _ops(self) -> list:
        """The step program with this module's weight/bias buffers (rebuilt per call: under
        ``torch.export`` the buffers are the traced ones)."""
        ops = []
        for sop in self.plan.stream_program:
            op = StepOp(self.plan.layers[sop.layer], sop.src, sop.dst, sop.lags, sop.res, sop.res_tap)
            op.w, op.b = getattr(self, f"w_{sop.layer}"), getattr(self, f"b_{sop.layer}")
            ops.append(op)
        return ops

    def _check(self, frames, frame_index, state) -> None:
        j, f = self.num_joints_in, self.in_features
        if not isinstance(frames, torch.Tensor) or frames.dim() != 3 or tuple(frames.shape[1:]) != (j, f):
            raise ValueError(f"frames: expected (streams, {j}, {f}), got "
                             f"{tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__}")
        if not frames.is_floating_point():
            raise TypeError(f"frames: expected a floating-point tensor, got {frames.dtype}")
        n = frames.shape[0]
        if (not isinstance(frame_index, torch.Tensor) or frame_index.dtype != torch.int64
                or tuple(frame_index.shape) != (n,)):
            raise ValueError(f"frame_index: expected an int64 tensor of shape ({n},), got "
                             f"{(frame_index.dtype, tuple(frame_index.shape)) if isinstance(frame_index, torch.Tensor) else type(frame_index).__name__}")
        if not isinstance(state, (list, tuple)) or len(state) != len(self.state_shapes):
            raise ValueError(f"state: expected a list of {len(self.state_shapes)} tensors (see state_shapes), got "
                             f"{len(state) if isinstance(state, (list, tuple)) else type(state).__name__}")
        for r, (st, (length, c)) in enumerate(zip(state, self.state_shapes)):
            if tuple(st.shape) != (n, length, c) or st.dtype != self.dtype:
                raise ValueError(f"state[{r}]: expected {self.dtype} of shape ({n}, {length}, {c}), got {st.dtype} "
                                 f"{tuple(st.shape)}")

    def forward(self, frames: torch.Tensor, frame_index: torch.Tensor, state: list):
        self._check(frames, frame_index, state)
        n = frames.shape[0]
        fresh = (frame_index == 0).reshape(n, 1, 1)
        out, new_state = shift_register_step(self._ops(), frames.reshape(n, -1).to(self.dtype), fresh, state)
        return out.float().reshape(n, self.num_joints_out, 3), new_state


# ---------------------------------------------------------------------------------- export
def _check_runtime():
    import importlib

    try:
        importlib.import_module("torch._inductor.package")
    except ImportError as exc:
        raise RuntimeError(f"fastlift export needs torch >= 2.6 (torch.export + AOTInductor packaging); this is "
                           f"torch {torch.__version__} ({exc})") from None


def check_python_free(ep, what: str, device="cpu") -> None:
    """Raise ``RuntimeError`` if an exported graph calls a fastlift operator a C++ runtime cannot run.

    fastlift's fused operators are ``torch.library.triton_op`` operators: ``torch.export`` keeps them as
    custom-op nodes and AOTInductor decomposes them into their Triton kernels, compiling those
    into the package -- on CUDA. Anywhere else (or for a fastlift op that is not a Triton op)
    the node would be executed through the dispatcher with a kernel registered from Python,
    so the package would need a Python process.
    """
    device = torch.device(device)
    try:
        from torch._library.triton import triton_ops_to_kernels
    except ImportError:  # older torch: treat every fastlift op as opaque
        triton_ops_to_kernels = {}
    bad = set()
    for node in ep.graph.nodes:
        if node.op != "call_function" or getattr(node.target, "namespace", None) != "fastlift":
            continue
        name = node.target.name() if hasattr(node.target, "name") else str(node.target)
        if device.type == "cuda" and name.split(".")[0] in triton_ops_to_kernels:
            continue
        bad.add(name)
    if bad:
        raise RuntimeError(f"{what}: the exported graph calls {sorted(bad)}, whose {device.type} kernel is registered "
                           f"from Python, so the package could not run without Python; export with impl='reference' "
                           f"on {device.type}")


def _check_compiled(files, what: str) -> None:
    """Raise if AOTInductor compiled a call through its proxy executor (an opaque custom-op fallback).

    Such calls dispatch to operators at run time instead of compiled kernels: Python-registered
    kernels would then be missing in a C++ process, and the numerics would be the fallback's.
    """
    import re

    ops = set()
    fallback = False
    for f in files:
        if not isinstance(f, str):
            continue
        if f.endswith(".cpp"):
            with open(f, encoding="utf-8", errors="replace") as fh:
                fallback |= "aoti_torch_proxy_executor_call_function(" in fh.read()
        elif f.endswith(".json") and not f.endswith("_metadata.json"):
            with open(f, encoding="utf-8", errors="replace") as fh:
                ops.update(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*::[A-Za-z0-9_.]+)"', fh.read()))
    if fallback:
        raise RuntimeError(f"{what}: AOTInductor compiled operator fallbacks through its proxy executor "
                           f"({sorted(ops) or 'custom operators'}); the package would not be self-contained")


def _resolve_impl(impl: str, device: torch.device) -> str:
    if impl not in ("auto", "reference", "triton"):
        raise ValueError(f"impl: expected 'auto', 'reference' or 'triton', got {impl!r}")
    if impl == "auto":
        return "triton" if device.type == "cuda" else "reference"
    if impl == "triton" and device.type != "cuda":
        raise ValueError(f"impl: 'triton' packages need a CUDA device (the Triton kernels are compiled into the "
                         f"package); on {device.type} the fused op's CPU kernel is Python-only, so use "
                         f"--impl reference (the default there)")
    return impl


def _check_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype: expected float32, bfloat16 or float16, got {dtype}")
    return dtype


def export_programs(model, *, dtype=torch.float32, device="cpu", impl: str = "auto", stream: bool = False):
    """``torch.export`` the whole-sequence model (and the streaming step).

    Args:
        model: a trained lifter (reference or fastlift ``TemporalModel``/1f); BatchNorm is folded
            with its running statistics. Not modified.
        dtype: weights/compute dtype (float32, bfloat16, float16); inputs/outputs stay float32.
        device: where the package will run (``"cpu"`` or a CUDA device).
        impl: ``"auto"`` (Triton kernels on CUDA, pure torch on CPU), ``"reference"`` or ``"triton"``.
        stream: also export the streaming step.

    Returns:
        ``(programs, info)``: ``{"model": ExportedProgram[, "step": ExportedProgram]}`` and a dict
        (``impl``, ``dtype``, ``device``, ``state_shapes``, the folded lifter's facts).
    """
    _check_runtime()
    from fastlift.model import fuse

    device = torch.device(device)
    dtype = _check_dtype(dtype)
    impl = _resolve_impl(impl, device)
    fused = fuse(model, dtype=dtype, device=device, impl=impl).eval()
    j, f, rf = fused.num_joints_in, fused.in_features, fused.receptive_field()
    batch = torch.export.Dim("batch", min=1)
    frames = torch.export.Dim("frames", min=1)
    # Example sizes other than 0/1 so nothing specialises; T beyond the receptive field.
    x = torch.randn(2, rf + 5, j, f, device=device)
    with torch.no_grad():
        programs = {"model": torch.export.export(SequenceLifter(fused).eval(), (x,),
                                                 dynamic_shapes={"keypoints": {0: batch, 1: frames}})}
    check_python_free(programs["model"], "model", device)
    step = StreamStep(fused.folded()).eval()
    if stream:
        n = torch.export.Dim("streams", min=1)
        args = (torch.randn(2, j, f, device=device), torch.tensor([0, 3], device=device), step.initial_state(2, device))
        with torch.no_grad():
            programs["step"] = torch.export.export(
                step, args, dynamic_shapes={"frames": {0: n}, "frame_index": {0: n},
                                            "state": [{0: n} for _ in step.state_shapes]})
        check_python_free(programs["step"], "step", device)
    info = {"impl": impl, "dtype": _DTYPE_NAMES[dtype], "device": device.type, "receptive_field": rf,
            "pad": fused.pad, "causal": bool(fused.causal), "delay": 0 if fused.causal else fused.pad,
            "joints_in": j, "in_features": f, "joints_out": fused.num_joints_out,
            "filter_widths": list(fused.filter_widths), "channels": int(fused.weights[0].shape[1]),
            "dense": bool(fused.extra.get("dense", False)), "state_shapes": [list(s) for s in step.state_shapes],
            "state_dtype": _DTYPE_NAMES[dtype], "has_step": bool(stream)}
    return programs, info


def _metadata(info: dict, kind: str, source: str, random_init: bool) -> dict:
    from fastlift import __version__

    meta = {
        "format": FORMAT, "version": __version__, "model_kind": kind, "device": info["device"], "dtype": info["dtype"],
        "impl": info["impl"] if kind == "model" else "torch", "receptive_field": info["receptive_field"],
        "pad": info["pad"], "delay": info["delay"], "causal": int(info["causal"]), "dense": int(info["dense"]),
        "filter_widths": ",".join(map(str, info["filter_widths"])), "channels": info["channels"],
        "joints_in": info["joints_in"], "in_features": info["in_features"], "joints_out": info["joints_out"],
        "has_step": int(info["has_step"]), "state_shapes": ";".join(f"{l}x{c}" for l, c in info["state_shapes"]),
        "state_dtype": info["state_dtype"], "random_init": int(random_init), "source": source,
        "input_dtype": "float32", "torch_version": torch.__version__,
    }
    return {f"fastlift.{k}": str(v) for k, v in meta.items()}


def _graph_module(ep):
    try:
        return ep.module(check_guards=False)
    except TypeError:  # torch without the check_guards argument
        return ep.module()


def export_package(model, out, *, dtype=torch.float32, device="cpu", impl: str = "auto", stream: bool = False,
                   source: str = "", random_init: bool = False, inductor_configs: Optional[dict] = None) -> dict:
    """Export ``model`` and compile it with AOTInductor into the package ``out`` (a ``.pt2`` path).

    Arguments as :func:`export_programs`; ``source`` and ``random_init`` are recorded in the
    metadata; ``inductor_configs`` are extra Inductor options (e.g. compile flags). The file is
    written atomically. Returns the metadata of the ``"model"`` entry (a ``dict[str, str]``).
    Compilation runs a C++ compiler and takes tens of seconds per model.
    """
    out = Path(out)
    if out.suffix != ".pt2":
        raise ValueError(f"--out: the package name must end in .pt2 (AOTInductor's archive format), got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"--out: {str(out)!r} is a directory; give a file name ending in .pt2")
    programs, info = export_programs(model, dtype=dtype, device=device, impl=impl, stream=stream)
    from torch._inductor.package import package_aoti

    files = {}
    metas = {}
    for kind, ep in programs.items():
        meta = _metadata(info, kind, source, random_init)
        # CPU: freeze the weights, so Inductor prepacks each constant-weight addmm of the traced
        # channels-last path into a oneDNN linear (blocked weight, ReLU post-op) at compile time;
        # unfrozen, the weights are graph inputs and every call would re-layout them (68 MB of
        # copies per call for the 243f model). Inductor freezes only with grad mode off.
        options = {"freezing": True} if info["device"] == "cpu" else {}
        if info["device"] == "cpu" and kind == "model":
            # Materialise each block's residual sum once (in place on its GEMM output, as the
            # executor does) instead of letting Inductor recompute it inside each of the next
            # layer's im2col slice copies: that inlining cost the 243f bf16 package ~6 % of
            # fuse(model).lift's speed (12 ms/call of bf16<->fp32 conversions on one thread).
            options["realize_reads_threshold"] = 1
        options.update(inductor_configs or {})
        options.update({"aot_inductor.package": True, "aot_inductor.metadata": meta})
        args, kwargs = ep.example_inputs
        with warnings.catch_warnings(), torch.no_grad():
            # torch-internal pytree deprecation noise raised while pickling the call spec.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            compiled = torch._inductor.aot_compile(_graph_module(ep), args, kwargs, options=options)
        if not isinstance(compiled, list):
            raise RuntimeError(f"AOTInductor returned {type(compiled).__name__} instead of a file list for {kind!r}")
        _check_compiled(compiled, kind)
        files[kind] = compiled
        metas[kind] = meta
    out.parent.mkdir(parents=True, exist_ok=True)
    # The archive's top-level folder is named after the file: package under the final name in a
    # private temporary folder next to ``out``, then move it into place atomically.
    with tempfile.TemporaryDirectory(prefix="." + out.stem + ".", dir=out.parent) as tmpdir:
        tmp = os.path.join(tmpdir, out.name)
        package_aoti(tmp, files)
        os.replace(tmp, out)
    return metas["model"]


# ---------------------------------------------------------------------------------- loading
def load_package(path, kind: str = "model"):
    """Load one model of a fastlift package with AOTInductor's Python loader: ``(callable, metadata)``.

    ``kind``: ``"model"`` (whole sequence) or ``"step"`` (streaming step; present only in
    packages exported with ``--stream``/``--causal-stream``). Raises ``FileNotFoundError`` /
    ``ValueError`` for a missing file, a non-fastlift package or a missing model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"package: no such file: {str(path)!r}")
    if kind not in ("model", "step"):
        raise ValueError(f"kind: expected 'model' or 'step', got {kind!r}")
    from torch._inductor.package import load_package as _load

    try:
        model = _load(str(path), kind)
    except Exception as exc:
        raise ValueError(f"package: cannot load {kind!r} from {str(path)!r} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300] if str(exc) else ''})") from None
    meta = model.get_metadata()
    if meta.get("fastlift.format") != FORMAT:
        raise ValueError(f"package: {str(path)!r} is not a fastlift package (metadata fastlift.format is "
                         f"{meta.get('fastlift.format')!r}, expected {FORMAT!r})")
    return model, meta


def read_metadata(path) -> dict:
    """The ``"model"`` entry's metadata of a package (``dict[str, str]``, keys ``fastlift.*``)."""
    return load_package(path, "model")[1]


def stream_with_step(step, frames: torch.Tensor, delay: int, state_shapes, state_dtype=torch.float32) -> torch.Tensor:
    """Drive a streaming step over whole sequences, as the C++ runner does.

    ``step``: a :class:`StreamStep` or a loaded ``"step"`` model; ``frames``: float32
    ``(N, T, J_in, F)`` (N lock-step streams); ``delay``/``state_shapes`` from the metadata.
    Pushes frame ``s`` (the last frame again for ``s >= T``) for ``s = 0 .. T - 1 + delay`` and
    keeps the outputs of steps ``s >= delay``. Returns float32 ``(N, T, J_out, 3)``.
    """
    n, t = frames.shape[:2]
    state = [torch.zeros(n, length, c, dtype=state_dtype, device=frames.device) for length, c in state_shapes]
    poses = []
    for s in range(t + delay):
        idx = torch.full((n,), s, dtype=torch.int64, device=frames.device)
        out = step(frames[:, min(s, t - 1)].contiguous(), idx, state)
        pose, state = out[0], list(out[1])
        if s >= delay:
            poses.append(pose)
    return torch.stack(poses, dim=1)


def _state_shapes(meta: dict) -> list:
    text = meta.get("fastlift.state_shapes", "")
    return [tuple(int(v) for v in item.split("x")) for item in text.split(";") if item]


# ---------------------------------------------------------------------------------- CLI
EPILOG = """The package holds the whole-sequence model ("model") and, with --stream/--causal-stream, the
streaming step ("step"); run it from C++ with the fastlift_run program (see docs/export.md):

  cmake -S . -B cpp_build -DCMAKE_PREFIX_PATH="$(python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  cmake --build cpp_build -j
  cpp_build/fastlift_run lifter.pt2 --input keypoints.npy --output poses.npy [--stream]

architecture: inferred from the checkpoint's shapes (channels, filter widths, joints); causal
and dense models are not recognisable from their weights: fastlift checkpoints record both,
for other checkpoints give --causal / --dense."""


def add_arguments(p) -> None:
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    from fastlift.cli_common import (add_checkpoint_dir_argument, add_model_argument, add_out_argument,
                                     add_overwrite_argument, add_precision_argument)

    add_model_argument(p, help_extra=" (torch.save'd dict with 'model_pos', or a bare lifter state_dict)")
    add_checkpoint_dir_argument(p, default=None, help_text="checkpoint folder where --model names are looked up "
                                                           "(a checkpoint file here is taken as --model)")
    add_out_argument(p, required=True, help_text="package to write (a .pt2 file)")
    add_overwrite_argument(p)
    p.add_argument("--key", default="model_pos", help="checkpoint entry holding the lifter (default model_pos; "
                                                       "model_traj for the trajectory model)")
    p.add_argument("-arc", "--architecture", help="filter widths, e.g. 3,3,3,3,3 (default: from the checkpoint)")
    p.add_argument("-ch", "--channels", type=int, help="hidden channels (default: from the checkpoint)")
    p.add_argument("--causal", action="store_true", help="the model is causal (not visible in its weights)")
    p.add_argument("--dense", action="store_true", help="the model has dense kernels (not visible in its weights)")
    p.add_argument("--joints-in", type=int, help="input joints (default: checkpoint input size / --in-features)")
    p.add_argument("--in-features", type=int, help="features per input joint (default: the checkpoint's record, "
                                                     "else 2)")
    p.add_argument("--joints-out", type=int, help="output joints (default: from the checkpoint)")
    p.add_argument("--stream", action="store_true", help="also export the streaming step")
    p.add_argument("--causal-stream", action="store_true",
                   help="the model is causal and the package includes the streaming step (= --causal --stream): "
                        "zero-delay frame-by-frame inference")
    add_precision_argument(p, PRECISIONS, "fp32", dtype_alias=True,
                           help_text="weights/compute precision: fp32, bf16, fp16, or auto (bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--device", default="cpu", help="device the package runs on: cpu (default) or a CUDA device")
    p.add_argument("--impl", default="auto", choices=["auto", "reference", "triton"],
                   help="auto (default): fused Triton kernels on CUDA, pure torch ops on CPU")
    p.add_argument("--random-init", action="store_true",
                   help="SMOKE TESTS ONLY: export a randomly initialised model (meaningless poses) instead of "
                        "a checkpoint; -arc/-ch/--joints-in/--joints-out default to 3,3,3,3,3/1024/17/17")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init (default 0)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle arbitrary objects in --model (only for files you trust)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip loading the package back and comparing it with the eager model")
    p.add_argument("--json", action="store_true", help="also print the metadata as JSON")


def _parse_widths(text):
    if text is None:
        return None
    from fastlift.info import parse_widths

    return _ref.validate_filter_widths(parse_widths(text))


def verify_package(path, model, dtype, device, stream: bool, frames: Sequence[int] = (1, 7)) -> dict:
    """Load ``path`` back and compare it with the eager model on random inputs (batch 2).

    The whole-sequence model is checked on ``frames`` and ``receptive_field + 2`` frames, the
    streaming step on ``frames`` (each streamed sequence also runs ``delay`` flush steps, which
    shift every state position). Returns ``{"model": err[, "step": err]}`` (max abs error / max
    |pose|); raises ``RuntimeError`` when an error exceeds :data:`VERIFY_TOL` for ``dtype``.
    """
    from fastlift.model import fuse

    device = torch.device(device)
    ref = fuse(model, dtype=dtype, device=device, impl="reference")
    g = torch.Generator().manual_seed(0)
    errs = {}
    kinds = ["model"] + (["step"] if stream else [])
    for kind in kinds:
        compiled, meta = load_package(path, kind)
        worst = 0.0
        lengths = {*frames, ref.receptive_field() + 2} if kind == "model" else set(frames)
        for t in sorted(lengths):
            x = (torch.randn(2, t, ref.num_joints_in, ref.in_features, generator=g) * 0.1).cumsum(1).to(device)
            want = ref.lift(x)
            if kind == "model":
                got = compiled(x)
            else:
                got = stream_with_step(compiled, x, int(meta["fastlift.delay"]), _state_shapes(meta),
                                       DTYPES[meta["fastlift.state_dtype"]])
            err = float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-6))
            worst = max(worst, err)
        errs[kind] = worst
        if not worst <= VERIFY_TOL[dtype]:
            raise RuntimeError(f"verify: the packaged {kind!r} differs from the eager model by {worst:.3g} "
                               f"(relative), more than the {_DTYPE_NAMES[dtype]} tolerance {VERIFY_TOL[dtype]}")
    return errs


def run(args) -> int:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: expected cpu or a CUDA device, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {args.device!r} requested but this torch sees no CUDA device")
    from fastlift.cli_common import check_output_file, check_precision, resolve_model_file

    precision = check_precision(args.precision, PRECISIONS)
    dtype = DTYPES[precision if precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")]
    model_file = resolve_model_file(args.model, args.checkpoint)
    if model_file is not None and args.random_init:
        raise ValueError("--random-init: give either --model or --random-init, not both")
    if model_file is None and not args.random_init:
        raise ValueError("--model: required (the checkpoint file of a trained lifter); for smoke tests only, "
                         "--random-init exports a random model")
    if not str(args.out).endswith(".pt2"):
        raise ValueError(f"-o/--out: the package name must end in .pt2, got {str(args.out)!r}")
    check_output_file(args.out, "-o/--out", inputs=[model_file], overwrite=args.overwrite)
    causal = bool(args.causal or args.causal_stream)
    stream = bool(args.stream or args.causal_stream)
    widths = _parse_widths(args.architecture)
    for name in ("channels", "joints_in", "joints_out", "in_features"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive integer, got {v}")
    if model_file is not None:
        model, arch = load_lifter(model_file, key=args.key, trust=args.trust_checkpoint, what="--model",
                                  key_flag="--key", filter_widths=widths, channels=args.channels,
                                  joints_in=args.joints_in, in_features=args.in_features, joints_out=args.joints_out,
                                  causal=True if causal else None, dense=True if args.dense else None)
        causal = arch.causal
        source = model_file.name
    elif args.random_init:
        arch = Architecture(args.joints_in or 17, args.in_features or 2, args.joints_out or args.joints_in or 17,
                            widths or [3, 3, 3, 3, 3], args.channels or 1024, causal, bool(args.dense))
        model = build_random_model(arch, args.seed)
        source = f"random-init(seed={args.seed})"
        print("fastlift export: warning: --random-init exports a RANDOMLY INITIALISED model; its poses are "
              "meaningless (smoke tests and timing only)", file=sys.stderr)
    t0 = time.perf_counter()
    meta = export_package(model, args.out, dtype=dtype, device=device, impl=args.impl, stream=stream, source=source,
                          random_init=model_file is None)
    t_export = time.perf_counter() - t0
    kinds = "model + streaming step" if stream else "model"
    print(f"fastlift export: wrote {args.out} ({kinds}; {meta['fastlift.device']} {meta['fastlift.dtype']}, "
          f"impl {meta['fastlift.impl']}) in {t_export:.1f} s")
    print(f"  architecture: filter widths {meta['fastlift.filter_widths']} (receptive field "
          f"{meta['fastlift.receptive_field']}), {meta['fastlift.channels']} channels, "
          f"{'causal' if causal else 'symmetric'}{', dense' if arch.dense else ''}; joints "
          f"{meta['fastlift.joints_in']}x{meta['fastlift.in_features']} -> {meta['fastlift.joints_out']}x3"
          + (f"; streaming delay {meta['fastlift.delay']} frames" if stream else ""))
    if not args.no_verify:
        try:
            errs = verify_package(args.out, model, dtype, device, stream)
        except RuntimeError as exc:
            print(f"fastlift export: error: {exc}", file=sys.stderr)
            return 1
        print("  verified against the eager model: " + ", ".join(f"{k} max rel. error {v:.2e}" for k, v in errs.items()))
    if args.json:
        print(json.dumps(meta, indent=2))
    return 0
