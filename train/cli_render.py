"""``fastlift render``: animate the 2D input, the 3D prediction and the ground truth of one video.

Same as ``fastlift train --render``: pick the video with ``--viz-subject``, ``--viz-action`` and
``--viz-camera``, the checkpoint with ``--evaluate`` (otherwise a model is trained first), and
write ``--viz-output`` (``.gif`` via pillow, ``.mp4`` via ffmpeg) and/or ``--viz-export``
(``.npy`` camera-space coordinates). Needs matplotlib (``pip install 'fastlift[viz]'``).
"""
from __future__ import annotations

from fastlift.train.args import add_train_arguments


def add_arguments(parser) -> None:
    add_train_arguments(parser, "render")


def run(args) -> int:
    from fastlift.train.runner import run_cli

    return run_cli(args, "render")
