"""Loading lifter checkpoints: one implementation for training, export, inference and streaming.

Every command that reads a checkpoint (``fastlift train/evaluate/render/infer`` through
:mod:`fastlift.train.checkpoint`, ``fastlift export``, ``fastlift stream``) goes through this
module, so they accept the same files and explain a refusal the same way.

* **Safe loading** — :func:`load_checkpoint` reads a ``torch.save``'d dict with
  ``weights_only=True`` inside a :func:`torch.serialization.safe_globals` context holding
  :func:`safe_globals_for_reference`: the published VideoPose3D checkpoints pickle
  ``numpy.random.RandomState`` objects (the data generator's ``random_state``), so only numpy's
  RandomState/MT19937 constructors and plain ``ndarray``/``dtype``/scalar reconstruction (under
  their numpy 1.x and 2.x names) are allow-listed — safe loading is never disabled globally.
  Files needing anything else are refused with a message that names the offending global,
  unless ``trust=True`` (the commands' ``--trust-checkpoint``).
* **State-dict fix-up** — :func:`fix_state_dict` strips a ``module.`` prefix
  (``nn.DataParallel``) and zero-fills BatchNorm ``num_batches_tracked`` counters missing from
  files written by old PyTorch versions; :func:`load_model_state` loads strictly with a message
  naming the mismatching tensors.
* **Architecture from the weights** — :func:`architecture_from_state_dict` infers channels, input
  joints, filter widths and output joints from the tensor shapes. ``causal`` and ``dense`` are
  not visible in the weights: callers give them, or fastlift's own checkpoints supply them from
  the architecture record that the training stack stores (``ckpt["fastlift"]["architecture"]``,
  see :func:`stored_architecture`).
* :func:`load_lifter` / :func:`lifter_from_checkpoint` combine the three: file (or loaded dict)
  -> ``(lifter in eval mode, Architecture)``.

Error messages start with ``what`` — the flag or name the user knows the file by (``checkpoint``,
``--checkpoint``, ``--model``) — and are ``FileNotFoundError`` (no such file) or ``ValueError``.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from fastlift import reference as _ref
from fastlift.kernels.plan import LifterPlan

__all__ = ["safe_globals_for_reference", "load_checkpoint", "lifter_state_dict", "stored_architecture",
           "fix_state_dict", "load_model_state", "Architecture", "architecture_from_state_dict",
           "lifter_from_checkpoint", "load_lifter"]

#: The message part of :func:`load_model_state` errors for models built from the training flags.
FLAGS_SOURCE = "the flags (-arc, -ch, --dense, --causal, dataset joints)"

# Numeric dtype classes (``numpy.dtypes``, numpy >= 1.25) that arrays rebuild their dtype from.
_NUMERIC_DTYPES = ("Bool", "Byte", "UByte", "Short", "UShort", "Int", "UInt", "Long", "ULong", "LongLong",
                   "ULongLong", "Float16", "Float32", "Float64", "LongDouble", "Complex64", "Complex128")


# ----------------------------------------------------------------------------------------- files
def safe_globals_for_reference() -> list:
    """The allow-list that lets ``weights_only=True`` read the reference's numpy RNG pickles.

    Only constructors of numpy's legacy ``RandomState``/``MT19937`` bit generator, plain
    ``ndarray``/``dtype``/scalar reconstruction under both the numpy 1.x (``numpy.core``) and 2.x
    (``numpy._core``) module names, the numeric dtype classes, and the pre-1.17
    ``numpy.random.__RandomState_ctor``.
    """
    import numpy.random._pickle as rpickle

    try:
        import numpy._core.multiarray as multiarray
    except ImportError:  # numpy < 2
        import numpy.core.multiarray as multiarray
    out = [np.random.mtrand.RandomState, np.random.MT19937, np.ndarray, np.dtype]
    for name in ("_reconstruct", "scalar"):
        fn = getattr(multiarray, name)
        out += [(fn, f"numpy.core.multiarray.{name}"), (fn, f"numpy._core.multiarray.{name}")]
    for name in ("__randomstate_ctor", "__bit_generator_ctor"):
        if hasattr(rpickle, name):
            out.append(getattr(rpickle, name))
    legacy = getattr(np.random, "__RandomState_ctor", None)
    if legacy is not None:
        out.append((legacy, "numpy.random.__RandomState_ctor"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        names = {n + "DType" for n in _NUMERIC_DTYPES}
        names |= {n for n in dir(dtypes) if n.startswith(("Int", "UInt")) and n.endswith("DType")}
        out += [getattr(dtypes, n) for n in sorted(names) if hasattr(dtypes, n)]
    return out


def load_checkpoint(path, map_location="cpu", trust: bool = False, *, what: str = "checkpoint") -> dict:
    """Load a reference or fastlift checkpoint without executing arbitrary pickled code.

    Args:
        path: the checkpoint file.
        map_location: where tensors go (default CPU).
        trust: fall back to full unpickling (``weights_only=False``) for files that need more
            than the allow-list — only for files from a trusted source.
        what: how error messages name the file (``"checkpoint"``, or the command's flag).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a checkpoint, not a dict, or needs globals outside the allow-list
            (and ``trust`` is False); the message names the file and the offending global.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file: {str(path)!r}")
    damage = damaged_reason(path)
    if damage is not None:
        raise ValueError(f"{what}: {str(path)!r} is damaged or not a checkpoint: {damage}")
    try:
        with torch.serialization.safe_globals(safe_globals_for_reference()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError, KeyError,
            IndexError, OverflowError, MemoryError, zipfile.BadZipFile) as exc:
        refused = _refused_global(exc)
        if refused is None:  # the file itself is broken: trusting it cannot help
            raise ValueError(f"{what}: {str(path)!r} is damaged or not a checkpoint ({type(exc).__name__}: "
                             f"{_clip(_first_line(exc))})") from None
        if not trust:
            raise ValueError(f"{what}: cannot load {str(path)!r} safely: it needs the Python object {refused}, which "
                             f"is outside the allow-list; if you trust the file, pass --trust-checkpoint") from None
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc2:
            raise ValueError(f"{what}: {str(path)!r} is damaged or not a checkpoint ({type(exc2).__name__}: "
                             f"{_clip(_first_line(exc2))})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{what}: {str(path)!r} holds a {type(ckpt).__name__}, expected a dict (a checkpoint with "
                         f"'model_pos', or a bare state_dict)")
    return ckpt


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _clip(text: str, limit: int = 160) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary (never mid-word)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " ..."


def _refused_global(exc: BaseException) -> Optional[str]:
    """The global that ``weights_only`` loading refused (e.g. ``pathlib.PosixPath``), or None when
    the error is something else (a damaged file)."""
    import re

    text = str(exc)
    if "Weights only load failed" not in text and "Unsupported global" not in text:
        return None
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"GLOBAL ([\w.]+)", text)
    if m:
        return m.group(1)
    m = re.search(r"Unsupported operand \d+|Unsupported class ([\w.]+)", text)
    return (m.group(1) or m.group(0)) if m else "an object outside the allow-list"


def damaged_reason(path) -> Optional[str]:
    """Why ``path`` cannot be a ``torch.save`` file, judged from its bytes without unpickling, or
    None when it looks like one: empty, truncated zip archive, damaged member, or neither a zip
    archive (torch >= 1.6) nor a legacy pickle stream (older torch, e.g. the published VideoPose3D
    checkpoints)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if not any(n.endswith("data.pkl") for n in names):
                    return f"a zip archive without torch's data.pkl (entries: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''})"
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            return f"the zip archive is damaged ({_clip(_first_line(exc), 80)})"
        if bad is not None:
            return f"the zip member {bad!r} is damaged (CRC mismatch)"
        return None
    if head[:2] == b"PK":
        return f"a zip archive cut short ({size} bytes; its directory at the end is missing): the file is truncated"
    if head[:1] != b"\x80":  # every pickle protocol >= 2 stream starts with PROTO
        return f"neither a zip archive nor a pickle stream (starts with {head!r})"
    return None


def lifter_state_dict(ckpt: dict, key: str = "model_pos", *, what: str = "checkpoint", path=None,
                      key_flag: Optional[str] = None) -> dict:
    """The lifter state_dict in a loaded checkpoint: its ``key`` entry, or ``ckpt`` itself when
    that is a bare lifter state_dict; a ``module.`` prefix (``nn.DataParallel``) is stripped.

    ``key_flag``: the command's flag that picks another entry, named in the error message.
    """
    if key in ckpt:
        sd = ckpt[key]
    elif "expand_conv.weight" in ckpt or "module.expand_conv.weight" in ckpt:
        sd = ckpt
    else:
        where = f"{str(path)!r}" if path is not None else "the checkpoint"
        raise ValueError(f"{what}: {where} has no {key!r} entry and is not a lifter state_dict (entries: "
                         f"{sorted(map(str, ckpt))})" + (f"; pick the lifter with {key_flag}" if key_flag else ""))
    if not isinstance(sd, dict):
        raise ValueError(f"{what}: {key!r} should be a state_dict, got {type(sd).__name__}")
    if sd and all(str(k).startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def stored_architecture(ckpt: Optional[dict]) -> dict:
    """The architecture record of a fastlift checkpoint (``ckpt["fastlift"]["architecture"]``:
    filter widths, channels, causal, dense, joints, keypoint layout, ...), or ``{}`` for other files."""
    record = ckpt.get("fastlift") if isinstance(ckpt, dict) else None
    record = record.get("architecture") if isinstance(record, dict) else None
    return record if isinstance(record, dict) else {}


# ----------------------------------------------------------------------------------------- state dicts
def fix_state_dict(sd: dict, model: torch.nn.Module) -> dict:
    """A copy of ``sd`` that ``model.load_state_dict`` accepts from old/wrapped checkpoints:
    ``module.`` prefixes stripped; missing BatchNorm ``num_batches_tracked`` set to 0."""
    if not isinstance(sd, dict):
        raise ValueError(f"state_dict: expected a dict of tensors, got {type(sd).__name__}")
    out = dict(sd)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in out:
            out[name] = torch.zeros_like(buf)
    return out


def load_model_state(model: torch.nn.Module, sd: dict, what: str = "model_pos", *, label: str = "checkpoint",
                     source: str = FLAGS_SOURCE) -> None:
    """``model.load_state_dict(fix_state_dict(sd))`` with a message naming the mismatch.

    ``what``: the checkpoint entry; ``label``: how the file is named (see :func:`load_checkpoint`);
    ``source``: what the model was built from (default: the training flags).
    """
    if sd is None:
        raise ValueError(f"{label}: {what!r} is empty (None)")
    fixed = fix_state_dict(sd, model)
    try:
        model.load_state_dict(fixed, strict=True)
    except RuntimeError as exc:
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in fixed.items() if hasattr(v, "shape")}
        diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)][:4]
        hint = "; ".join(f"{k}: model {mine.get(k)} vs checkpoint {theirs.get(k)}" for k in diff)
        raise ValueError(f"{label}: {what!r} does not fit the model built from {source}: {hint or exc}") from None


# ----------------------------------------------------------------------------------------- architecture
@dataclass
class Architecture:
    """Constructor arguments of a :class:`fastlift.reference.TemporalModel`."""

    joints_in: int
    in_features: int
    joints_out: int
    filter_widths: list
    channels: int
    causal: bool = False
    dense: bool = False

    @property
    def plan(self) -> LifterPlan:
        """The layer geometry of this architecture (:class:`fastlift.kernels.plan.LifterPlan`)."""
        return LifterPlan.build(self.joints_in, self.in_features, self.joints_out, self.filter_widths,
                                channels=self.channels, causal=self.causal, dense=self.dense)

    @property
    def receptive_field(self) -> int:
        return self.plan.receptive_field

    def build(self, impl: Optional[str] = None) -> torch.nn.Module:
        """An inference lifter of this architecture (dropout 0): the reference
        :class:`fastlift.reference.TemporalModel`, or with ``impl`` (``"auto"``, ``"reference"``,
        ``"triton"``) fastlift's drop-in :class:`fastlift.model.TemporalModel`."""
        args = (self.joints_in, self.in_features, self.joints_out, self.filter_widths)
        kwargs = dict(causal=self.causal, dropout=0.0, channels=self.channels, dense=self.dense)
        if impl is None:
            return _ref.TemporalModel(*args, **kwargs)
        from fastlift.model import TemporalModel

        return TemporalModel(*args, impl=impl, **kwargs)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return value


def architecture_from_state_dict(sd: dict, *, filter_widths: Optional[Sequence[int]] = None,
                                 channels: Optional[int] = None, joints_in: Optional[int] = None,
                                 in_features: Optional[int] = None, joints_out: Optional[int] = None,
                                 causal: Optional[bool] = None, dense: Optional[bool] = None,
                                 record: Optional[dict] = None) -> Architecture:
    """Infer a lifter's architecture from its state_dict shapes; explicit arguments override/complete it.

    Inferred: channels (``expand_conv.weight`` rows), input values per frame (``J_in * F``; ``J_in``
    follows from ``in_features``), filter widths (kernel widths of ``expand_conv`` and
    ``layers_conv.{2i}``; for ``dense`` checkpoints a kernel of width ``(w - 1) * d + 1`` at
    dilation ``d`` is filter width ``w``), ``J_out`` (``shrink.weight`` rows / 3). Not visible in
    the weights: ``causal``, ``dense`` and ``in_features``. ``None`` means "not given": the value
    comes from ``record`` (a fastlift checkpoint's architecture record, see
    :func:`stored_architecture`) when it has one, else False/False/2; a given value that
    contradicts the record raises ``ValueError``. Raises ``ValueError`` naming the argument when
    a given value contradicts the weights.
    """
    record = record or {}

    def resolve(name: str, given, default):
        stored = record.get(name)
        if given is not None and stored is not None and given != stored:
            raise ValueError(f"--{name.replace('_', '-')}: the checkpoint records {name}={stored!r}, got {given!r}")
        return given if given is not None else (stored if stored is not None else default)

    causal = bool(resolve("causal", causal, False))
    dense = bool(resolve("dense", dense, False))
    in_features = resolve("in_features", in_features, 2)
    for key in ("expand_conv.weight", "shrink.weight"):
        if key not in sd:
            raise ValueError(f"checkpoint: the state_dict has no {key!r}; expected a VideoPose3D lifter "
                             f"(expand_conv, layers_conv, layers_bn, shrink), got keys {sorted(sd)[:8]}...")
    ew = sd["expand_conv.weight"]
    if ew.dim() != 3:
        raise ValueError(f"checkpoint: expand_conv.weight should be [channels, joints*features, width], got "
                         f"{tuple(ew.shape)}")
    c, k0, w0 = (int(s) for s in ew.shape)
    if channels is not None and _positive("channels", channels) != c:
        raise ValueError(f"channels: the checkpoint has {c} channels, got -ch {channels}")
    in_features = _positive("in_features", in_features)
    if joints_in is None:
        if k0 % in_features:
            raise ValueError(f"in_features: the checkpoint takes {k0} values per frame, not a multiple of "
                             f"in_features={in_features}; give --joints-in/--in-features")
        joints_in = k0 // in_features
    elif _positive("joints_in", joints_in) * in_features != k0:
        raise ValueError(f"joints_in: the checkpoint takes {k0} values per frame, got --joints-in {joints_in} x "
                         f"--in-features {in_features} = {joints_in * in_features}")
    j3 = int(sd["shrink.weight"].shape[0])
    if j3 % 3:
        raise ValueError(f"checkpoint: shrink.weight has {j3} output channels, not a multiple of 3")
    if joints_out is not None and _positive("joints_out", joints_out) != j3 // 3:
        raise ValueError(f"joints_out: the checkpoint predicts {j3 // 3} joints, got --joints-out {joints_out}")
    plan = LifterPlan.from_state_dict(sd, in_features=in_features, causal=causal, dense=dense)
    inferred = list(plan.filter_widths)
    if filter_widths is not None:
        fw = _ref.validate_filter_widths(filter_widths)
        if fw != inferred:
            hint = ""
            if not dense and len(fw) == len(plan.kernel_widths):
                as_dense = plan.with_(filter_widths=tuple(fw), dense=True)
                if as_dense.kernel_widths == plan.kernel_widths:
                    hint = "; the checkpoint's kernels are dense: add --dense"
            raise ValueError(f"architecture: -arc {','.join(map(str, fw))} does not match the checkpoint, whose "
                             f"layers imply filter widths {','.join(map(str, inferred))} (dense={dense}){hint}")
    return Architecture(joints_in, in_features, j3 // 3, inferred, c, causal, dense)


# ----------------------------------------------------------------------------------------- lifters
def lifter_from_checkpoint(ckpt: dict, *, key: str = "model_pos", path=None, what: str = "checkpoint",
                           key_flag: Optional[str] = None, impl: Optional[str] = None, **arch):
    """``(lifter in eval mode on the CPU, Architecture)`` from a loaded checkpoint (see :func:`load_lifter`)."""
    sd = lifter_state_dict(ckpt, key, what=what, path=path, key_flag=key_flag)
    architecture = architecture_from_state_dict(sd, record=stored_architecture(ckpt), **arch)
    model = architecture.build(impl)
    load_model_state(model, sd, key, label=what, source=f"its weights' shapes ({architecture})")
    return model.eval(), architecture


def load_lifter(path, *, key: str = "model_pos", trust: bool = False, what: str = "checkpoint",
                key_flag: Optional[str] = None, impl: Optional[str] = None, **arch):
    """Load a lifter from a checkpoint file: ``(lifter in eval mode on the CPU, Architecture)``.

    ``path``: a ``torch.save``'d VideoPose3D-layout dict whose ``key`` entry (default
    ``"model_pos"``; ``"model_traj"`` for the trajectory model) is the lifter's state_dict, or a
    bare state_dict; loaded with :func:`load_checkpoint` (``trust``, ``what``) and fixed up with
    :func:`fix_state_dict`. ``arch`` (``filter_widths``, ``channels``, ``joints_in``,
    ``in_features``, ``joints_out``, ``causal``, ``dense``) goes to
    :func:`architecture_from_state_dict` together with the checkpoint's architecture record.
    ``impl``: ``None`` builds the reference model, otherwise fastlift's fused
    :class:`fastlift.model.TemporalModel` with that implementation. The 1f model's checkpoints
    load into the dilated model (same weights).
    """
    ckpt = load_checkpoint(path, trust=trust, what=what)
    return lifter_from_checkpoint(ckpt, key=key, path=path, what=what, key_flag=key_flag, impl=impl, **arch)
