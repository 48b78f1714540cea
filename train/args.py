"""Command-line flags of ``fastlift train`` / ``evaluate`` / ``render`` and their validation.

The flags are VideoPose3D's ``run.py`` flags (same short and long names, same defaults, same
meaning), so a reference command line works with only the program name changed::

    python run.py -k cpn_ft_h36m_dbb -arc 3,3,3,3,3 -c checkpoint --evaluate pretrained_h36m_cpn.bin
    fastlift train -k cpn_ft_h36m_dbb -arc 3,3,3,3,3 -c checkpoint --evaluate pretrained_h36m_cpn.bin

plus fastlift's own flags (``--data-dir``, ``--impl``, ``--precision``, ``--seed``, ``--device``,
``--output-json``, ``--trust-checkpoint``, ``--progress``/``--no-progress``, ``--eval-frames``).

Defaults that depend on other flags are left as ``None`` by the parser and filled in by
:func:`resolve_defaults`:

* ``-d/--dataset``: ``h36m`` when ``--data-dir`` is given or ``./data/data_3d_h36m.npz`` exists
  (the reference's layout, so reference users' commands keep working), otherwise ``synthetic``
  (generated once into the cache by :func:`fastlift.data.ensure_synthetic`).
* ``-k/--keypoints``: ``cpn_ft_h36m_dbb`` for Human3.6M (the reference default), ``det`` (the
  detector-like 2D) for the synthetic data; required for other datasets.
* ``--data-dir``: ``data`` (the reference's folder), or the synthetic cache directory.
* ``-arc``/``-ch``/``--causal``/``--dense``: ``3,3,3`` and ``1024`` as in the reference; when
  evaluating or rendering a fastlift checkpoint whose architecture flags were not given, the
  checkpoint's own architecture is used instead (reference checkpoints carry none).

:func:`validate` rejects bad values and bad combinations with a :class:`ValueError` that names the
flag, the expected and the actual value.
"""
from __future__ import annotations

import argparse
import math
import os
import warnings
from pathlib import Path

__all__ = [
    "add_train_arguments",
    "build_parser",
    "parse_args",
    "resolve_defaults",
    "validate",
    "parse_architecture",
    "default_device",
    "IMPLS",
    "PRECISIONS",
]

IMPLS = ("auto", "triton", "reference")
PRECISIONS = ("fp32", "bf16")
DEFAULT_ARCHITECTURE = "3,3,3"
DEFAULT_CHANNELS = 1024

EPILOG = """Quick CPU recipe on the embedded synthetic data (a minute or two on 2 cores):
  fastlift train -arc 3,3,3 -ch 64 -e 4 -b 512 --subset 0.5 -c runs/quick --export-training-curves
  fastlift evaluate -c runs/quick --model epoch_4.bin     # architecture from the checkpoint
Full recipe (VideoPose3D, 243 frames; needs a GPU):
  fastlift train -k cpn_ft_h36m_dbb -arc 3,3,3,3,3 -c checkpoint --data-dir data
Semi-supervised (S1 labelled, S5-S8 unlabelled):
  fastlift train -str S1 -sun S5,S6,S7,S8 -arc 3,3,3 -e 20 --warmup 5"""


class DefaultCheckpointDir(str):
    """run.py's default ``-c`` value (``"checkpoint"``), marked so that :func:`resolve_defaults`
    can tell it from a folder the user typed."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_train_arguments(p: argparse.ArgumentParser, mode: str = "train") -> None:
    """Add every ``run.py`` flag (same names and defaults) and fastlift's own flags to ``p``.

    ``mode`` (``train``, ``evaluate``, ``render``) picks what ``-o/--out`` means: the evaluation
    JSON (evaluate; alias of ``--output-json``) or the animation (render; alias of
    ``--viz-output``); ``train`` has no ``-o``.
    """
    from fastlift.cli_common import add_model_argument, add_overwrite_argument, add_precision_argument

    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    g = p.add_argument_group("data and run (VideoPose3D run.py flags)")
    g.add_argument("-d", "--dataset", default=None, metavar="NAME",
                   help="dataset: h36m, humaneva15, synthetic or custom... (default: h36m if --data-dir is given or "
                        "./data/data_3d_h36m.npz exists, else the embedded synthetic data)")
    g.add_argument("-k", "--keypoints", default=None, metavar="NAME",
                   help="2D detections to use (default cpn_ft_h36m_dbb for h36m, det for synthetic)")
    g.add_argument("-str", "--subjects-train", default="S1,S5,S6,S7,S8", metavar="LIST",
                   help="training subjects separated by comma (default S1,S5,S6,S7,S8)")
    g.add_argument("-ste", "--subjects-test", default="S9,S11", metavar="LIST",
                   help="test subjects separated by comma (default S9,S11)")
    g.add_argument("-sun", "--subjects-unlabeled", default="", metavar="LIST",
                   help="unlabeled subjects separated by comma for semi-supervised training (default: none)")
    g.add_argument("-a", "--actions", default="*", metavar="LIST",
                   help="actions to train/test on (name prefixes) separated by comma, or * for all")
    g.add_argument("-c", "--checkpoint", default=DefaultCheckpointDir("checkpoint"), metavar="DIR",
                   help="checkpoint folder (default: checkpoint; when evaluating/rendering a --model path and -c is "
                        "not given, the model file's folder)")
    g.add_argument("--checkpoint-frequency", default=10, type=_int, metavar="N",
                   help="create a checkpoint every N epochs (and after the last one)")
    g.add_argument("-r", "--resume", default="", metavar="FILENAME",
                   help="checkpoint to resume (file name in the checkpoint directory, or a path)")
    add_model_argument(g, run_py_alias=True, dest="evaluate",
                       help_extra=" (evaluate/render it; --evaluate is run.py's name)")
    g.add_argument("--render", action="store_true", help="visualize a particular video (see --viz-*)")
    g.add_argument("--by-subject", action="store_true", help="break down error by subject (on evaluation)")
    g.add_argument("--export-training-curves", action="store_true",
                   help="save training curves as .png images in the checkpoint directory")

    g = p.add_argument_group("model and optimisation (VideoPose3D run.py flags)")
    g.add_argument("-s", "--stride", default=1, type=_int, metavar="N",
                   help="chunk size (output frames per training example) to use during training (default 1)")
    g.add_argument("-e", "--epochs", default=60, type=_int, metavar="N", help="number of training epochs")
    g.add_argument("-b", "--batch-size", default=1024, type=_int, metavar="N",
                   help="batch size in terms of predicted frames (default 1024)")
    g.add_argument("-drop", "--dropout", default=0.25, type=_float, metavar="P", help="dropout probability")
    g.add_argument("-lr", "--learning-rate", default=0.001, type=_float, metavar="LR", help="initial learning rate")
    g.add_argument("-lrd", "--lr-decay", default=0.95, type=_float, metavar="LR",
                   help="learning rate decay per epoch")
    g.add_argument("-no-da", "--no-data-augmentation", dest="data_augmentation", action="store_false",
                   help="disable train-time flipping")
    g.add_argument("-no-tta", "--no-test-time-augmentation", dest="test_time_augmentation", action="store_false",
                   help="disable test-time flipping")
    g.add_argument("-arc", "--architecture", default=None, metavar="LAYERS",
                   help=f"filter widths separated by comma (default {DEFAULT_ARCHITECTURE}; 3,3,3,3,3 = 243 frames)")
    g.add_argument("--causal", action="store_true", default=None,
                   help="use causal convolutions for real-time processing")
    g.add_argument("-ch", "--channels", default=None, type=_int, metavar="N",
                   help=f"number of channels in convolution layers (default {DEFAULT_CHANNELS})")

    g = p.add_argument_group("experimental (VideoPose3D run.py flags)")
    g.add_argument("--subset", default=1, type=_float, metavar="FRACTION", help="reduce dataset size by fraction")
    g.add_argument("--downsample", default=1, type=_int, metavar="FACTOR",
                   help="downsample frame rate by factor (semi-supervised)")
    g.add_argument("--warmup", default=1, type=_int, metavar="N", help="warm-up epochs for semi-supervision")
    g.add_argument("--no-eval", action="store_true",
                   help="disable epoch evaluation while training (small speed-up)")
    g.add_argument("--dense", action="store_true", default=None,
                   help="use dense convolutions instead of dilated convolutions")
    g.add_argument("--disable-optimizations", action="store_true",
                   help="disable optimized model for single-frame predictions")
    g.add_argument("--linear-projection", action="store_true",
                   help="use only linear coefficients for semi-supervised projection")
    g.add_argument("--no-bone-length", action="store_false", dest="bone_length_term",
                   help="disable bone length term in semi-supervised settings")
    g.add_argument("--no-proj", action="store_true", help="disable projection for semi-supervised setting")

    g = p.add_argument_group("visualization (VideoPose3D run.py flags)")
    g.add_argument("--viz-subject", metavar="STR", help="subject to render")
    g.add_argument("--viz-action", metavar="STR", help="action to render")
    g.add_argument("--viz-camera", type=_int, default=0, metavar="N", help="camera to render")
    g.add_argument("--viz-video", metavar="PATH", help="path to input video (background of the 2D panel)")
    g.add_argument("--viz-skip", type=_int, default=0, metavar="N", help="skip first N frames of input video")
    if mode == "render":
        g.add_argument("-o", "--out", "--viz-output", dest="viz_output", metavar="PATH",
                       help="output file name (.gif or .mp4; --viz-output is run.py's name)")
    else:
        g.add_argument("--viz-output", metavar="PATH", help="output file name (.gif or .mp4)")
    g.add_argument("--viz-export", metavar="PATH", help="output file name for coordinates (.npy)")
    g.add_argument("--viz-bitrate", type=_int, default=3000, metavar="N", help="bitrate for mp4 videos")
    g.add_argument("--viz-no-ground-truth", action="store_true", help="do not show ground-truth poses")
    g.add_argument("--viz-limit", type=_int, default=-1, metavar="N", help="only render first N frames")
    g.add_argument("--viz-downsample", type=_int, default=1, metavar="N", help="downsample FPS by a factor N")
    g.add_argument("--viz-size", type=_int, default=5, metavar="N", help="image size")

    g = p.add_argument_group("fastlift")
    g.add_argument("--data-dir", default=None, metavar="PATH",
                   help="folder with data_3d_<dataset>.npz and data_2d_<dataset>_<keypoints>.npz (default: data, or "
                        "the synthetic cache for -d synthetic)")
    g.add_argument("--impl", default="auto", choices=IMPLS,
                   help="model implementation: auto (fused Triton kernels on CUDA, reference math elsewhere), "
                        "triton, reference (default auto)")
    add_precision_argument(g, PRECISIONS, "fp32", help_text="fp32, or bf16 autocast for the model")
    g.add_argument("--seed", default=0, type=_int, metavar="N",
                   help="seed of initialisation, shuffling and dropout (default 0)")
    g.add_argument("--device", default=None, metavar="DEV",
                   help="torch device (default: the available accelerator, else cpu)")
    json_names = ["-o", "--out", "--output-json"] if mode == "evaluate" else ["--output-json"]
    g.add_argument(*json_names, dest="output_json", default=None, metavar="PATH",
                   help="write all evaluation numbers as JSON here (default: <checkpoint dir>/evaluation.json after "
                        "training, <checkpoint dir>/<model name>_evaluation.json when evaluating a --model)")
    add_overwrite_argument(g)
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle arbitrary Python objects in checkpoints (only for files you trust)")
    g.add_argument("--trust-data", action="store_true",
                   help="unpickle arbitrary Python objects in the .npz data files (only for files you trust)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show progress bars (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    g.add_argument("--eval-frames", default=None, type=_int, metavar="N",
                   help="frames per forward call in whole-sequence evaluation (default 65536 on GPU, 16384 on CPU)")
    p.set_defaults(bone_length_term=True, data_augmentation=True, test_time_augmentation=True)


def build_parser(prog: str = "fastlift train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train or evaluate a VideoPose3D lifter (run.py flags).")
    add_train_arguments(p)
    return p


def parse_args(argv: list[str], prog: str = "fastlift train") -> argparse.Namespace:
    """Parse ``argv`` (a list of strings) with the train flags; returns the raw namespace."""
    return build_parser(prog).parse_args(list(argv))


# ----------------------------------------------------------------------------------------- defaults
def default_device() -> str:
    """The current accelerator (e.g. a GPU) if torch sees one, else ``"cpu"``."""
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is not None and acc.is_available():
        return str(acc.current_accelerator())
    return "cpu"


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the flag-dependent defaults in place (see the module docstring); returns ``args``.

    Idempotent. Architecture defaults are only filled by :func:`finalize_architecture`, because a
    checkpoint may supply them.
    """
    if getattr(args, "_resolved", False):
        return args
    if args.dataset is None:
        if args.data_dir is not None or Path("data", "data_3d_h36m.npz").is_file():
            args.dataset = "h36m"
        else:
            args.dataset = "synthetic"
    if args.keypoints is None:
        if args.dataset == "h36m":
            args.keypoints = "cpn_ft_h36m_dbb"
        elif args.dataset.startswith("synthetic"):
            args.keypoints = "det"
    if args.data_dir is None and not args.dataset.startswith("synthetic"):
        args.data_dir = "data"
    if args.device is None:
        args.device = default_device()
    if args.checkpoint is None or isinstance(args.checkpoint, DefaultCheckpointDir):
        # run.py's default folder, except that a --model/--evaluate path given without -c is
        # its own folder (so its evaluation.json lands next to it, not in ./checkpoint).
        name = Path(args.evaluate or args.resume or "")
        if (args.evaluate or args.resume) and name.parent != Path(".") and not Path("checkpoint", name).exists():
            args.checkpoint = str(name.parent)
            if args.evaluate:
                args.evaluate = name.name
            else:
                args.resume = name.name
        else:
            args.checkpoint = "checkpoint"
    args._resolved = True
    return args


def finalize_architecture(args: argparse.Namespace, meta: dict | None = None) -> argparse.Namespace:
    """Fill ``-arc``/``-ch``/``--causal``/``--dense`` left unset: from ``meta`` (a fastlift
    checkpoint's architecture record) when given, else the reference defaults."""
    meta = meta or {}
    if args.architecture is None:
        args.architecture = ",".join(str(w) for w in meta["filter_widths"]) if "filter_widths" in meta \
            else DEFAULT_ARCHITECTURE
    if args.channels is None:
        args.channels = int(meta.get("channels", DEFAULT_CHANNELS))
    if args.causal is None:
        args.causal = bool(meta.get("causal", False))
    if args.dense is None:
        args.dense = bool(meta.get("dense", False))
    parse_architecture(args.architecture)
    if args.channels < 1:
        raise ValueError(f"-ch/--channels: expected a positive integer, got {args.channels}")
    return args


def parse_architecture(text) -> list[int]:
    """``"3,3,3"`` -> ``[3, 3, 3]``; raises ValueError naming ``-arc`` for anything else."""
    from fastlift.reference import validate_filter_widths

    if text is None:
        text = DEFAULT_ARCHITECTURE
    items = [t.strip() for t in str(text).split(",")]
    try:
        widths = [int(t) for t in items if t]
    except ValueError:
        raise ValueError(f"-arc/--architecture: expected comma-separated odd integers such as 3,3,3,3,3, "
                         f"got {text!r}") from None
    try:
        return validate_filter_widths(widths)
    except ValueError as exc:
        raise ValueError(f"-arc/--architecture: {exc} (got {text!r})") from None


# ----------------------------------------------------------------------------------------- validation
def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def validate(args: argparse.Namespace, mode: str = "train") -> argparse.Namespace:
    """Check values and combinations; ``mode`` is ``"train"``, ``"evaluate"`` or ``"render"``.

    Raises ValueError naming the flag(s), what was expected and what was given. Flags that the
    reference silently ignores in a configuration (e.g. ``--warmup`` without ``-sun``) only warn,
    so reference command lines keep working.
    """
    resolve_defaults(args)
    _need(not (args.resume and args.evaluate),
          f"-r/--resume and --model (--evaluate) cannot be set at the same time (got --resume {args.resume!r} and "
          f"--evaluate {args.evaluate!r})")
    _need(not (args.export_training_curves and args.no_eval),
          "--export-training-curves and --no-eval cannot be set at the same time (the curves are the "
          "per-epoch evaluation losses)")
    if mode == "evaluate":
        _need(bool(args.evaluate), "--model (--evaluate): expected the checkpoint file to evaluate (a file name in "
                                   "-c/--checkpoint or a path), got none")
    if mode == "render" or args.render:
        out_flag = "-o/--out (--viz-output)" if mode == "render" else "--viz-output"
        _need(bool(args.viz_subject), "--viz-subject: expected the subject/video to render (e.g. S9), got none")
        _need(bool(args.viz_action), "--viz-action: expected the action to render (e.g. 'Walking 1'), got none")
        _need(bool(args.viz_output or args.viz_export),
              f"{out_flag}: expected a .gif or .mp4 file to write (and/or --viz-export, a .npy file), got neither")
        if args.viz_output:
            suffix = Path(args.viz_output).suffix.lower()
            _need(suffix in (".gif", ".mp4"), f"--viz-output: expected a .gif or .mp4 file name, got {args.viz_output!r}")
    _need(args.viz_camera >= 0, f"--viz-camera: expected a camera index >= 0, got {args.viz_camera}")
    _need(args.viz_skip >= 0, f"--viz-skip: expected a number of frames >= 0, got {args.viz_skip}")
    _need(args.viz_bitrate > 0, f"--viz-bitrate: expected a positive bitrate, got {args.viz_bitrate}")
    _need(args.viz_limit == -1 or args.viz_limit > 0,
          f"--viz-limit: expected -1 (all frames) or a positive number of frames, got {args.viz_limit}")
    _need(args.viz_downsample >= 1, f"--viz-downsample: expected a positive factor, got {args.viz_downsample}")
    _need(args.viz_size >= 1, f"--viz-size: expected a positive size, got {args.viz_size}")

    _need(args.stride >= 1, f"-s/--stride: expected a positive number of output frames per example, got {args.stride}")
    _need(args.epochs >= 1, f"-e/--epochs: expected a positive number of epochs, got {args.epochs}")
    _need(args.batch_size >= 1, f"-b/--batch-size: expected a positive number of frames, got {args.batch_size}")
    _need(args.batch_size >= args.stride,
          f"-b/--batch-size: must be at least -s/--stride (each example predicts {args.stride} frames), got "
          f"batch size {args.batch_size}")
    _need(0.0 <= args.dropout < 1.0, f"-drop/--dropout: expected a probability in [0, 1), got {args.dropout}")
    _need(math.isfinite(args.learning_rate) and args.learning_rate > 0,
          f"-lr/--learning-rate: expected a positive number, got {args.learning_rate}")
    _need(math.isfinite(args.lr_decay) and args.lr_decay > 0,
          f"-lrd/--lr-decay: expected a positive factor (e.g. 0.95), got {args.lr_decay}")
    _need(0.0 < args.subset <= 1.0, f"--subset: expected a fraction in (0, 1], got {args.subset}")
    _need(args.downsample >= 1, f"--downsample: expected a positive integer factor, got {args.downsample}")
    _need(args.warmup >= 0, f"--warmup: expected a number of epochs >= 0, got {args.warmup}")
    _need(args.checkpoint_frequency >= 1,
          f"--checkpoint-frequency: expected a positive number of epochs, got {args.checkpoint_frequency}")
    _need(args.seed >= 0, f"--seed: expected a non-negative integer, got {args.seed}")
    from fastlift.cli_common import check_precision

    check_precision(args.precision, PRECISIONS)
    if args.eval_frames is not None:
        _need(args.eval_frames >= 1, f"--eval-frames: expected a positive number of frames, got {args.eval_frames}")
    if args.architecture is not None:
        parse_architecture(args.architecture)
    if args.channels is not None:
        _need(args.channels >= 1, f"-ch/--channels: expected a positive integer, got {args.channels}")

    _check_device(args)
    if args.impl == "triton":
        import torch

        dev = torch.device(args.device)
        interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
        _need(dev.type == "cuda" or (dev.type == "cpu" and interp),
              f"--impl triton: the Triton kernels need a CUDA device (or TRITON_INTERPRET=1 on CPU); got --device "
              f"{args.device}. Use --impl auto or reference on this device")
    if args.precision == "bf16":
        import torch

        dev = torch.device(args.device)
        interp = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
        _need(not (args.impl == "triton" and dev.type == "cpu" and interp),
              "--precision bf16: the Triton CPU interpreter has no bfloat16; use --precision fp32 with --impl triton on "
              "CPU, or --impl reference (CPU autocast)")

    semi = bool(args.subjects_unlabeled.strip())
    if mode == "train" and not args.evaluate:
        if not semi:
            ignored = [f for f, on in (("--linear-projection", args.linear_projection), ("--no-proj", args.no_proj),
                                       ("--no-bone-length", not args.bone_length_term)) if on]
            if ignored:
                warnings.warn(f"{', '.join(ignored)} only affect semi-supervised training (-sun/--subjects-unlabeled), "
                              f"which is off; ignored", stacklevel=2)
    return args


def _check_device(args) -> None:
    from fastlift.cli_common import check_device

    check_device(args.device)


def evaluation_json_path(args) -> Path:
    """Where the evaluation JSON goes: ``--output-json``, else ``<-c>/evaluation.json`` after training
    and ``<-c>/<model stem>_evaluation.json`` for a ``--model`` (so evaluating a checkpoint of a
    training run does not collide with that run's own evaluation.json)."""
    if args.output_json:
        return Path(args.output_json)
    if args.evaluate:
        return Path(args.checkpoint) / f"{Path(args.evaluate).stem}_evaluation.json"
    return Path(args.checkpoint) / "evaluation.json"


def check_outputs(args, mode: str) -> None:
    """Check every file the run will write, before any data is loaded (see DESIGN.md's command-line
    conventions): no output over an input, existing outputs only with ``--overwrite`` (training:
    or ``-r/--resume``), output folders creatable. Raises :class:`fastlift.cli_common.CliError`."""
    from fastlift.cli_common import CliError, check_output_dir, check_output_file
    from fastlift.train.checkpoint import checkpoint_path

    model = checkpoint_path(args.checkpoint, args.evaluate) if args.evaluate else None
    resume = checkpoint_path(args.checkpoint, args.resume) if args.resume else None
    inputs = [p for p in (model, resume) if p is not None]
    overwrite = bool(getattr(args, "overwrite", False))
    for p, flag in ((model, "--model (--evaluate)"), (resume, "-r/--resume")):
        if p is not None and not p.is_file():
            typed = args.evaluate if p is model else args.resume
            raise FileNotFoundError(f"{flag}: no such file {typed!r} (looked for {str(p)!r}"
                                    + (f" in -c/--checkpoint {args.checkpoint!r})" if str(p) != typed else ")"))
    training = not args.evaluate
    if training:
        ckdir = check_output_dir(args.checkpoint, "-c/--checkpoint")
        if not overwrite and not args.resume and ckdir.is_dir():
            planned = [e for e in range(1, args.epochs + 1) if e % args.checkpoint_frequency == 0 or e == args.epochs]
            taken = [f"epoch_{e}.bin" for e in planned if (ckdir / f"epoch_{e}.bin").exists()]
            if taken:
                raise CliError(f"-c/--checkpoint: {str(ckdir)!r} already holds {', '.join(taken[:3])}"
                               f"{' ...' if len(taken) > 3 else ''} from an earlier run; pass --overwrite to replace "
                               f"them, -r/--resume FILE to continue that run, or choose another -c folder")
    if args.render:
        if args.viz_output:
            check_output_file(args.viz_output, "-o/--out" if mode == "render" else "--viz-output", inputs=inputs,
                              overwrite=overwrite, suffixes=(".gif", ".mp4"))
        if args.viz_export:
            export = Path(args.viz_export)
            export = export if export.suffix == ".npy" else export.with_name(export.name + ".npy")
            check_output_file(export, "--viz-export", inputs=inputs, overwrite=overwrite)
        return
    json_path = evaluation_json_path(args)
    flag = "-o/--out" if mode == "evaluate" and args.output_json else "--output-json"
    check_output_file(json_path, flag, inputs=inputs, overwrite=overwrite or (training and bool(args.resume)))
