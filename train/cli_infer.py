"""``fastlift infer``: lift in-the-wild 2D keypoints (``data_2d_custom_*.npz``, COCO layout) to 3D.

See :mod:`fastlift.train.infer`.
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    from fastlift.train.infer import add_arguments as add

    add(parser)


def run(args) -> int:
    from fastlift.train.infer import run as run_infer

    return run_infer(args)
