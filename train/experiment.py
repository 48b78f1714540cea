"""Loading an experiment's data the way ``run.py`` does: dataset, 2D keypoints and splits.

:func:`load_experiment` turns parsed flags into an :class:`Experiment`: the 3D dataset, the
normalised 2D keypoints, the flip symmetry of both, and the train / test / unlabelled splits
selected with :func:`fastlift.data.fetch` (action filter, ``--subset`` deterministic crop,
``--downsample``) exactly as the reference selects them:

* training split: ``-str`` subjects, cropped by ``--subset``, downsampled;
* test split: ``-ste`` subjects (never cropped), downsampled;
* unlabelled split (semi-supervised): ``-sun`` subjects, 2D + cameras only, never cropped,
  downsampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastlift import data as fdata

__all__ = ["Experiment", "load_experiment", "resolve_data_dir", "parse_subjects"]


@dataclass
class Experiment:
    """Everything the training and evaluation code needs to know about the data.

    Attributes:
        dataset: the :class:`fastlift.data.MocapDataset` (3D motion capture, cameras, skeleton).
        keypoints: normalised :class:`fastlift.data.Keypoints2D` (screen coordinates in [-1, 1]).
        name / keypoints_name / data_dir: the ``-d`` / ``-k`` names and the folder read.
        kps_left / kps_right: 2D keypoint indices swapped by flipping (from the 2D file's metadata).
        joints_left / joints_right: 3D joint indices swapped by flipping (from the skeleton).
        parents: the 3D skeleton's parent indices (root = -1), for the bone-length term.
        train / test / semi: :class:`fastlift.data.FetchResult` splits (None when not needed).
        num_joints_in / in_features / num_joints_out: model sizes implied by the data.
    """

    dataset: object
    keypoints: object
    name: str
    keypoints_name: str
    data_dir: Path
    kps_left: list
    kps_right: list
    joints_left: list
    joints_right: list
    parents: list
    train: object = None
    test: object = None
    semi: object = None

    @property
    def num_joints_in(self) -> int:
        return self.keypoints.num_joints

    @property
    def in_features(self) -> int:
        return 2

    @property
    def num_joints_out(self) -> int:
        return self.dataset.skeleton().num_joints

    @property
    def layout_name(self) -> str:
        return self.keypoints.layout_name

    @property
    def fps(self):
        return self.dataset.fps


def parse_subjects(text: str, flag: str) -> list[str]:
    """``"S1,S5"`` -> ``["S1", "S5"]``; empty entries are dropped; raises naming ``flag`` if empty."""
    items = [t.strip() for t in str(text or "").split(",") if t.strip()]
    if not items:
        raise ValueError(f"{flag}: expected subject names separated by comma, got {text!r}")
    return items


def resolve_data_dir(args) -> Path:
    """Folder holding the data files; generates the synthetic data on first use."""
    if args.dataset.startswith("synthetic"):
        from fastlift.data.synthetic import ensure_synthetic

        if args.data_dir is not None and fdata.dataset_path(args.data_dir, args.dataset).is_file() \
                and fdata.keypoints_path(args.data_dir, args.dataset, args.keypoints).is_file():
            return Path(args.data_dir)  # an existing (possibly custom-generated) synthetic set: use as is
        progress = bool(args.progress) if args.progress is not None else False
        return Path(ensure_synthetic(args.data_dir, progress=progress))
    path = Path(args.data_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"--data-dir: no such folder: {str(path)!r} (it should hold data_3d_{args.dataset}.npz "
                                f"and data_2d_{args.dataset}_{args.keypoints}.npz)")
    return path


def _action_filter(text: str):
    return None if text.strip() in ("*", "") else [a.strip() for a in text.split(",") if a.strip()]


def load_experiment(args, need_train: bool = True, need_test: bool = True) -> Experiment:
    """Load dataset, keypoints and splits described by resolved/validated flags ``args``.

    ``need_train``: also fetch the training split (and the unlabelled one when ``-sun`` is set).
    ``need_test``: fetch the test split (``-ste`` subjects).
    """
    if args.keypoints is None:
        raise ValueError(f"-k/--keypoints: the {args.dataset!r} dataset needs the name of its 2D detections "
                         f"(data_2d_{args.dataset}_<name>.npz)")
    data_dir = resolve_data_dir(args)
    ds, kp = fdata.load(args.dataset, args.keypoints, data_dir=data_dir)
    skel = ds.skeleton()
    exp = Experiment(dataset=ds, keypoints=kp, name=args.dataset, keypoints_name=args.keypoints, data_dir=data_dir,
                     kps_left=kp.keypoints_left, kps_right=kp.keypoints_right,
                     joints_left=list(skel.joints_left), joints_right=list(skel.joints_right),
                     parents=list(skel.parents))
    actions = _action_filter(args.actions)
    has_3d = any(ds.has_3d(s, a) for s in ds.subjects() for a in ds.actions(s))
    if need_test:
        if not has_3d:
            raise ValueError(f"-d/--dataset: the {args.dataset!r} dataset has no 3D poses, so it cannot be used for "
                             f"training or evaluation (use --render with --evaluate, or `fastlift infer`)")
        exp.test = fdata.fetch(ds, kp, parse_subjects(args.subjects_test, "-ste/--subjects-test"), actions,
                               downsample=args.downsample)
    if need_train:
        if not has_3d:
            raise ValueError(f"-d/--dataset: the {args.dataset!r} dataset has no 3D poses to train on")
        exp.train = fdata.fetch(ds, kp, parse_subjects(args.subjects_train, "-str/--subjects-train"), actions,
                                subset=args.subset, downsample=args.downsample)
        if args.subjects_unlabeled.strip():
            if not ds.supports_semi_supervised():
                raise ValueError(f"-sun/--subjects-unlabeled: semi-supervised training needs camera intrinsics, which "
                                 f"the {args.dataset!r} dataset does not have")
            exp.semi = fdata.fetch(ds, kp, parse_subjects(args.subjects_unlabeled, "-sun/--subjects-unlabeled"),
                                   actions, downsample=args.downsample, with_3d=False)
            if exp.semi.cameras is None or exp.train.cameras is None:
                raise ValueError("-sun/--subjects-unlabeled: semi-supervised training needs the intrinsics of every "
                                 "camera of the labelled and unlabelled subjects")
    return exp


def frames_of(split) -> int:
    return int(sum(np.asarray(p).shape[0] for p in split.poses_2d)) if split is not None else 0
