"""fastlift's training stack: VideoPose3D's ``run.py`` recipe, fast, on the device.

Command line (VideoPose3D flags, see :mod:`fastlift.train.args`)::

    fastlift train     # train (or resume with -r), then evaluate; --evaluate FILE / --render as run.py
    fastlift evaluate  # evaluate a checkpoint: per-action MPJPE / P-MPJPE / N-MPJPE / MPJVE, JSON
    fastlift render    # animated 2D input / 3D prediction / ground truth (.gif, or .mp4 with ffmpeg)
    fastlift infer     # lift in-the-wild keypoints (data_2d_custom_*.npz, COCO layout) to 3D

Quick recipe on the embedded synthetic data (no download; about a minute on 2 CPU cores)::

    fastlift train -arc 3,3,3 -ch 64 -e 3 -b 128 -c runs/quick --export-training-curves
    fastlift evaluate -c runs/quick --evaluate epoch_3.bin --by-subject
    fastlift render -c runs/quick --evaluate epoch_3.bin --viz-subject S9 --viz-action "Walking 1" \\
        --viz-output walk.gif --viz-limit 100

The paper's recipe (243 frames, 1024 channels, 60 epochs) needs a GPU:
``fastlift train -k cpn_ft_h36m_dbb -arc 3,3,3,3,3 --data-dir data``.

Modules: :mod:`~fastlift.train.args` (flags), :mod:`~fastlift.train.experiment` (data splits),
:mod:`~fastlift.train.sampler` (device-resident batches), :mod:`~fastlift.train.loop` (training),
:mod:`~fastlift.train.evaluate` (whole-sequence evaluation), :mod:`~fastlift.train.checkpoint`,
:mod:`~fastlift.train.render`, :mod:`~fastlift.train.infer`, :mod:`~fastlift.train.runner`.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Trainer": "fastlift.train.loop",
    "WindowSampler": "fastlift.train.sampler",
    "SequenceSet": "fastlift.train.evaluate",
    "final_evaluation": "fastlift.train.evaluate",
    "load_checkpoint": "fastlift.train.checkpoint",
    "save_checkpoint": "fastlift.train.checkpoint",
    "load_experiment": "fastlift.train.experiment",
    "parse_args": "fastlift.train.args",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'fastlift.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(target), name)
    globals()[name] = value
    return value
