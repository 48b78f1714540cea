"""Datasets in the VideoPose3D file formats, their preparation, and embedded synthetic data.

Typical use (the reference ``run.py`` flow)::

    from fastlift import data
    ds, kp = data.load("h36m", "cpn_ft_h36m_dbb", data_dir="data")   # or "synthetic", "gt"/"det"
    train = data.fetch(ds, kp, data.H36M_TRAIN_SUBJECTS, subset=0.1)
    test = data.fetch(ds, kp, data.H36M_TEST_SUBJECTS)
    # train.cameras[i] (9,), train.poses_3d[i] (T, 17, 3), train.poses_2d[i] (T, 17, 2), train.labels[i]

Synthetic motion capture that needs no download::

    root = data.ensure_synthetic()          # generates once into ~/.cache/fastlift/synthetic-v1
    ds, kp = data.load("synthetic", "det", data_dir=root)

Modules: :mod:`~fastlift.data.io` (read/write the ``.npz`` layouts),
:mod:`~fastlift.data.datasets` (dataset classes), :mod:`~fastlift.data.prepare` (2D
preparation, ``fetch``, splits), :mod:`~fastlift.data.synthetic` (generator),
:mod:`~fastlift.data.cli` (``fastlift data``).
"""
from __future__ import annotations

import importlib

from fastlift.data.io import (
    COCO_METADATA,
    H36M_METADATA,
    HUMANEVA15_METADATA,
    DataKeyError,
    Keypoints2D,
    read_keypoints,
    read_positions_3d,
    save_positions_2d,
    save_positions_3d,
)
from fastlift.data.datasets import (
    CustomDataset,
    HumanEvaDataset,
    Human36mDataset,
    MocapDataset,
    default_intrinsics,
)
from fastlift.data.prepare import (
    H36M_TEST_SUBJECTS,
    H36M_TRAIN_SUBJECTS,
    HUMANEVA_TEST_SUBJECTS,
    HUMANEVA_TRAIN_SUBJECTS,
    SPLITS,
    FetchResult,
    action_matches,
    dataset_path,
    deterministic_crop,
    deterministic_random,
    fetch,
    keypoints_path,
    load,
    load_keypoints,
    open_dataset,
)

# The synthetic generator is imported on first use (it is not needed to read files).
_LAZY = {
    "synthetic": "fastlift.data.synthetic",
    "SyntheticData": "fastlift.data.synthetic",
    "generate": "fastlift.data.synthetic",
    "write": "fastlift.data.synthetic",
    "ensure_synthetic": "fastlift.data.synthetic",
}

__all__ = [
    "COCO_METADATA", "H36M_METADATA", "HUMANEVA15_METADATA", "DataKeyError", "Keypoints2D",
    "read_keypoints", "read_positions_3d", "save_positions_2d", "save_positions_3d",
    "CustomDataset", "HumanEvaDataset", "Human36mDataset", "MocapDataset", "default_intrinsics",
    "H36M_TEST_SUBJECTS", "H36M_TRAIN_SUBJECTS", "HUMANEVA_TEST_SUBJECTS", "HUMANEVA_TRAIN_SUBJECTS",
    "SPLITS", "FetchResult", "action_matches", "dataset_path", "deterministic_crop", "deterministic_random",
    "fetch", "keypoints_path", "load", "load_keypoints", "open_dataset",
] + sorted(_LAZY)


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'fastlift.data' has no attribute {name!r}")
    module = importlib.import_module(target)
    value = module if target.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value
