"""The one command-line vocabulary every ``fastlift`` subcommand uses, and its checks.

One name per concept (see ``docs`` / DESIGN.md "Command-line conventions"):

============================  ==========================================================
checkpoint file               ``--model FILE`` (``--evaluate`` stays an alias in train /
                              evaluate / render / infer, as in VideoPose3D's ``run.py``)
checkpoint folder             ``-c/--checkpoint DIR`` (``run.py``'s meaning)
output path                   ``-o/--out PATH`` (``--output`` stays an alias where it existed)
precision                     ``--precision`` from :data:`PRECISIONS` (``--dtype`` stays an
                              alias where it existed; ``float32``/``bfloat16``/``float16``
                              are accepted spellings of fp32/bf16/fp16)
implementation                ``--impl`` (``auto``, ``triton``, ``reference``)
device                        ``--device`` (checked by :func:`check_device`)
safety switches               ``--overwrite``, ``--resume``, ``--trust-checkpoint``,
                              ``--trust-data``, ``--debug``
============================  ==========================================================

Output rules (:func:`check_output_file`, :func:`check_output_dir`): no command writes over one
of its own inputs; an existing output is replaced only with ``--overwrite``; the location is
checked (parent folder creatable, not a file where a folder is needed) before any work starts.
User errors are :class:`CliError` (a ``ValueError``): one line naming the flag, the expected and
the actual value. This module imports only the standard library at import time (``--help``
stays fast); torch is imported only by :func:`check_device`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

__all__ = [
    "CliError", "PRECISIONS", "IMPLS", "PRECISION_ALIASES", "normalize_precision", "add_model_argument",
    "add_checkpoint_dir_argument", "add_out_argument", "add_precision_argument", "add_impl_argument",
    "add_device_argument", "add_overwrite_argument", "add_trust_arguments", "check_precision", "check_device",
    "check_output_file", "check_output_dir", "same_file", "FLAG_HINTS", "resolve_model_file", "check_impl",
]

#: Every precision name the project knows; each command accepts the subset it implements.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "auto")
#: Other spellings accepted for the same values (the old ``--dtype`` values of stream/export).
PRECISION_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
IMPLS = ("auto", "triton", "reference")

#: Flags of one command that users carry over to another: what this vocabulary calls them.
FLAG_HINTS = {
    "--evaluate": "--model FILE (the checkpoint file)",
    "--output": "-o/--out PATH",
    "--dtype": "--precision",
    "--backend": "--impl",
    "--checkpoint": "-c/--checkpoint DIR (a folder) or --model FILE (a checkpoint file)",
}


class CliError(ValueError):
    """A user error: reported by ``fastlift`` as one line, without a traceback."""


# ----------------------------------------------------------------------------------- arguments
def normalize_precision(text: str) -> str:
    """argparse ``type``: ``"BF16"``/``"bfloat16"`` -> ``"bf16"``; unknown names pass through
    (the command's :func:`check_precision` names the accepted ones)."""
    t = str(text).strip().lower()
    return PRECISION_ALIASES.get(t, t)


def add_model_argument(p, *, required: bool = False, run_py_alias: bool = False, dest: str = "model",
                       help_extra: str = "") -> None:
    """``--model FILE``: the checkpoint file (a name inside ``-c/--checkpoint`` or a path).

    ``run_py_alias``: also accept ``--evaluate`` (VideoPose3D's ``run.py`` name)."""
    names = ["--model"] + (["--evaluate"] if run_py_alias else [])
    p.add_argument(*names, dest=dest, required=required, default=None if not run_py_alias else "", metavar="FILE",
                   help="checkpoint file: a name inside -c/--checkpoint or a path" + help_extra)


def add_checkpoint_dir_argument(p, *, default: Optional[str] = "checkpoint", help_text: Optional[str] = None) -> None:
    """``-c/--checkpoint DIR``: the checkpoint folder (``run.py``'s meaning)."""
    p.add_argument("-c", "--checkpoint", default=default, metavar="DIR",
                   help=help_text or "checkpoint folder (where --model names are looked up)")


def add_out_argument(p, *, help_text: str, required: bool = False, output_alias: bool = False,
                     dest: str = "out", metavar: str = "PATH") -> None:
    """``-o/--out PATH`` (plus ``--output`` where a command had that name)."""
    names = ["-o", "--out"] + (["--output"] if output_alias else [])
    p.add_argument(*names, dest=dest, required=required, default=None, metavar=metavar, help=help_text)


def add_precision_argument(p, supported: Sequence[str], default: str, *, dtype_alias: bool = False,
                           help_text: str = "") -> None:
    """``--precision`` (and ``--dtype`` where a command had that name) limited to ``supported``."""
    names = ["--precision"] + (["--dtype"] if dtype_alias else [])
    p.add_argument(*names, dest="precision", default=default, type=normalize_precision, metavar="{" +
                   ",".join(supported) + "}", help=(help_text or "numeric precision") + f" (default {default})")
    p.set_defaults(_precision_supported=tuple(supported))


def add_impl_argument(p, *, backend_alias: bool = False, help_text: Optional[str] = None) -> None:
    names = ["--impl"] + (["--backend"] if backend_alias else [])
    p.add_argument(*names, dest="impl", default="auto", metavar="{" + ",".join(IMPLS) + "}",
                   type=lambda s: {"torch": "reference"}.get(s.strip().lower(), s.strip().lower()),
                   help=help_text or "implementation: auto (fused Triton kernels on CUDA, reference math "
                                     "elsewhere), triton, reference (default auto)")


def add_device_argument(p, default: Optional[str] = None) -> None:
    p.add_argument("--device", default=default, metavar="DEV",
                   help="torch device: cpu, cuda, cuda:1 ... (default: "
                        + (default if default else "the available accelerator, else cpu") + ")")


def add_overwrite_argument(p) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (default: refuse)")


def add_trust_arguments(p, *, checkpoint: bool = True, data: bool = True) -> None:
    if checkpoint:
        p.add_argument("--trust-checkpoint", action="store_true",
                       help="unpickle arbitrary Python objects in checkpoints (only for files you trust)")
    if data:
        p.add_argument("--trust-data", action="store_true",
                       help="unpickle arbitrary Python objects in .npz data files (only for files you trust; by "
                            "default only dicts, lists, strings, numbers and numpy arrays are accepted)")


# ----------------------------------------------------------------------------------- checks
def check_precision(value: str, supported: Iterable[str], flag: str = "--precision") -> str:
    supported = tuple(supported)
    if value not in supported:
        raise CliError(f"{flag}: expected one of {', '.join(supported)}, got {value!r}")
    return value


def check_impl(value: str, flag: str = "--impl") -> str:
    if value not in IMPLS:
        raise CliError(f"{flag}: expected one of {', '.join(IMPLS)}, got {value!r}")
    return value


def check_device(spec: Optional[str], flag: str = "--device"):
    """Parse and check a device string; returns a ``torch.device`` that exists on this machine."""
    import torch

    if spec is None:
        acc = getattr(torch, "accelerator", None)
        if acc is not None and acc.is_available():
            return torch.device(acc.current_accelerator())
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise CliError(f"{flag}: expected a torch device such as cpu or cuda:0, got {spec!r}") from None
    if dev.type != "cpu":
        mod = getattr(torch, dev.type, None)
        available = bool(mod is not None and hasattr(mod, "is_available") and mod.is_available())
        if not available:
            raise CliError(f"{flag}: {spec!r} is not available on this machine (torch sees no {dev.type} device); "
                           f"use --device cpu")
        count = mod.device_count() if hasattr(mod, "device_count") else 1
        if dev.index is not None and dev.index >= count:
            raise CliError(f"{flag}: {spec!r} does not exist (this machine has {count} {dev.type} device(s))")
    return dev


def same_file(a, b) -> bool:
    """Whether two paths name the same file (following links; False when either does not exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_parent_writable(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable folder (so the output can be created)."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise CliError(f"{flag}: cannot create {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"{flag}: cannot create {str(path)!r}: folder {str(parent)!r} is not writable")


def check_output_file(path, flag: str, *, inputs: Iterable = (), overwrite: bool = False,
                      suffixes: Optional[Sequence[str]] = None) -> Path:
    """Check an output file before any work starts; returns it as a ``Path``.

    Refuses (``CliError``, one line): an output that is one of ``inputs`` (with or without
    ``--overwrite``); an existing folder; an existing file unless ``overwrite``; a path whose
    parent cannot be created; a suffix outside ``suffixes`` when given.
    """
    path = Path(path)
    for inp in inputs:
        if inp is not None and (same_file(path, inp) or Path(inp).resolve() == path.resolve()):
            raise CliError(f"{flag}: {str(path)!r} is also an input of this command; refusing to write over it "
                           f"(choose another output path)")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise CliError(f"{flag}: expected a {' or '.join(suffixes)} file name, got {str(path)!r}")
    if path.is_dir():
        raise CliError(f"{flag}: {str(path)!r} is a folder, expected a file name")
    if path.exists() and not overwrite:
        raise CliError(f"{flag}: {str(path)!r} already exists; pass --overwrite to replace it")
    _check_parent_writable(path, flag)
    return path


def check_output_dir(path, flag: str, *, inputs: Iterable = ()) -> Path:
    """Check an output folder before any work starts: not a file, creatable, not an input file."""
    path = Path(path)
    for inp in inputs:
        if inp is not None and same_file(path, inp):
            raise CliError(f"{flag}: {str(path)!r} is also an input of this command")
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag}: expected a folder, got the file {str(path)!r}")
    if not path.exists():
        _check_parent_writable(path, flag)
    elif not os.access(path, os.W_OK | os.X_OK):
        raise CliError(f"{flag}: folder {str(path)!r} is not writable")
    return path


def resolve_model_file(model: Optional[str], checkpoint_dir: Optional[str], flag: str = "--model") -> Optional[Path]:
    """The checkpoint file named by ``--model`` (inside ``-c/--checkpoint DIR`` when that holds it,
    else the path as typed); a ``-c`` that names a file while ``--model`` is absent is that file
    (the old ``export --checkpoint FILE`` spelling). None when neither is given. Raises
    ``FileNotFoundError`` naming what the user typed."""
    if not model:
        if checkpoint_dir and Path(checkpoint_dir).is_file():
            return Path(checkpoint_dir)
        if checkpoint_dir and not Path(checkpoint_dir).exists():
            raise FileNotFoundError(f"-c/--checkpoint: no such folder or file {checkpoint_dir!r}")
        return None
    candidates = [Path(checkpoint_dir) / model] if checkpoint_dir and not Path(model).is_absolute() else []
    candidates.append(Path(model))
    for c in candidates:
        if c.is_file():
            return c
    looked = " or ".join(repr(str(c)) for c in candidates)
    raise FileNotFoundError(f"{flag}: no such file {model!r}" + (f" (looked for {looked})" if len(candidates) > 1
                                                                  or str(candidates[0]) != model else ""))


def unknown_argument_hint(extra: Sequence[str]) -> str:
    """A hint for flags that another command spells differently (``--evaluate`` -> ``--model`` ...)."""
    hints = [f"{a.split('=')[0]} is {FLAG_HINTS[a.split('=')[0]]} here" for a in extra
             if a.split("=")[0] in FLAG_HINTS]
    return ("; " + "; ".join(hints)) if hints else ""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line with the subcommand's name (no usage block)."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
