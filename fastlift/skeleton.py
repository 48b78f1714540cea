"""Skeleton definitions: Human3.6M (32 and 17 joints), HumanEva-I (15 joints), COCO (17 keypoints).

A :class:`Skeleton` holds the kinematic tree (``parents[j]`` is the parent of joint ``j``, ``-1``
for the root), joint names and the left/right symmetry used by flip augmentation. Joint
indices follow the VideoPose3D data files, so arrays from ``data_3d_h36m.npz`` and
``data_2d_h36m_*.npz`` index into these skeletons directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = [
    "Skeleton",
    "H36M_32",
    "H36M_17",
    "H36M_REMOVED_JOINTS",
    "H36M_KEPT_JOINTS",
    "HUMANEVA_15",
    "COCO_17",
    "COCO_KEYPOINTS_SYMMETRY",
    "get_skeleton",
]


@dataclass(frozen=True)
class Skeleton:
    """An immutable kinematic tree.

    Attributes:
        name: short identifier (``"h36m17"`` ...).
        parents: tuple of length ``num_joints``; ``parents[j] < j`` is not required but the root
            has ``-1``.
        joint_names: one name per joint.
        joints_left / joints_right: paired joint indices swapped by horizontal flipping
            (``joints_left[i]`` mirrors ``joints_right[i]``).
    """

    name: str
    parents: tuple[int, ...]
    joint_names: tuple[str, ...]
    joints_left: tuple[int, ...]
    joints_right: tuple[int, ...]
    _children: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        n = len(self.parents)
        if len(self.joint_names) != n:
            raise ValueError(f"joint_names: expected {n} names, got {len(self.joint_names)}")
        if len(self.joints_left) != len(self.joints_right):
            raise ValueError("joints_left and joints_right must pair up (same length)")
        roots = [j for j, p in enumerate(self.parents) if p == -1]
        if len(roots) != 1:
            raise ValueError(f"parents: expected exactly one root (-1), got {len(roots)}")
        for j, p in enumerate(self.parents):
            if p != -1 and not (0 <= p < n):
                raise ValueError(f"parents[{j}] = {p} is out of range for {n} joints")
        children = [[] for _ in range(n)]
        for j, p in enumerate(self.parents):
            if p >= 0:
                children[p].append(j)
        object.__setattr__(self, "_children", tuple(tuple(c) for c in children))

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def root(self) -> int:
        return self.parents.index(-1)

    def children(self, joint: int) -> tuple[int, ...]:
        return self._children[joint]

    def has_children(self, joint: int) -> bool:
        return len(self._children[joint]) > 0

    def bones(self) -> list[tuple[int, int]]:
        """(child, parent) pairs, one per non-root joint, in joint order."""
        return [(j, p) for j, p in enumerate(self.parents) if p >= 0]

    def flip_permutation(self) -> np.ndarray:
        """Joint permutation that swaps left and right (apply after negating x)."""
        perm = np.arange(self.num_joints)
        perm[list(self.joints_left)] = self.joints_right
        perm[list(self.joints_right)] = self.joints_left
        return perm

    def index(self, name: str) -> int:
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(f"joint {name!r} is not in skeleton {self.name!r}; joints: {list(self.joint_names)}") from None

    def subset(self, keep: Sequence[int], name: str, joint_names: Sequence[str] | None = None,
               reparent: dict[int, int] | None = None) -> "Skeleton":
        """Skeleton restricted to ``keep`` (old indices); removed joints' children attach to
        their nearest kept ancestor. ``reparent`` maps new joint index -> new parent index to
        override the result (Human3.6M hangs the shoulders on the thorax)."""
        keep = list(keep)
        new_index = {old: i for i, old in enumerate(keep)}
        parents = []
        for old in keep:
            p = self.parents[old]
            while p != -1 and p not in new_index:
                p = self.parents[p]
            parents.append(-1 if p == -1 else new_index[p])
        for j, p in (reparent or {}).items():
            parents[j] = p
        left = [new_index[j] for j in self.joints_left if j in new_index]
        right = [new_index[j] for j in self.joints_right if j in new_index]
        names = tuple(joint_names) if joint_names is not None else tuple(self.joint_names[j] for j in keep)
        return Skeleton(name, tuple(parents), names, tuple(left), tuple(right))


H36M_32 = Skeleton(
    name="h36m32",
    parents=(-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19, 20, 19, 22,
             12, 24, 25, 26, 27, 28, 27, 30),
    joint_names=("Hips", "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase", "RightToeSite",
                 "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "LeftToeSite", "Spine", "Spine1",
                 "Neck", "Head", "HeadSite", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand",
                 "LeftHandThumb", "LeftThumbSite", "LeftWristEnd", "LeftWristSite", "RightShoulder",
                 "RightArm", "RightForeArm", "RightHand", "RightHandThumb", "RightThumbSite",
                 "RightWristEnd", "RightWristSite"),
    joints_left=(6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23),
    joints_right=(1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29, 30, 31),
)

#: Joints of the 32-joint Human3.6M skeleton that the 17-joint evaluation skeleton drops.
H36M_REMOVED_JOINTS = (4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31)
#: Indices into the 32-joint skeleton of the 17 joints kept (in order).
H36M_KEPT_JOINTS = tuple(j for j in range(32) if j not in H36M_REMOVED_JOINTS)

H36M_17 = H36M_32.subset(
    H36M_KEPT_JOINTS, "h36m17",
    joint_names=("Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax", "Neck",
                 "Head", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist"),
    # The published 17-joint skeleton attaches both shoulders to the thorax rather than the spine.
    reparent={11: 8, 14: 8},
)

HUMANEVA_15 = Skeleton(
    name="humaneva15",
    parents=(-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1),
    joint_names=("Pelvis", "Thorax", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist",
                 "LHip", "LKnee", "LAnkle", "RHip", "RKnee", "RAnkle", "Head"),
    joints_left=(2, 3, 4, 8, 9, 10),
    joints_right=(5, 6, 7, 11, 12, 13),
)

#: COCO keypoint order (as written by Detectron / the VideoPose3D in-the-wild pipeline).
COCO_17 = Skeleton(
    name="coco17",
    # A tree over the keypoints for drawing: face hangs off the nose, limbs off shoulders/hips.
    parents=(-1, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14),
    joint_names=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                 "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
                 "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    joints_left=(1, 3, 5, 7, 9, 11, 13, 15),
    joints_right=(2, 4, 6, 8, 10, 12, 14, 16),
)

#: ``metadata["keypoints_symmetry"]`` of COCO-layout 2D files: [left indices, right indices].
COCO_KEYPOINTS_SYMMETRY = [list(COCO_17.joints_left), list(COCO_17.joints_right)]

_SKELETONS = {s.name: s for s in (H36M_32, H36M_17, HUMANEVA_15, COCO_17)}


def get_skeleton(name: str) -> Skeleton:
    """Look up a skeleton by name: ``h36m32``, ``h36m17``, ``humaneva15``, ``coco17``."""
    try:
        return _SKELETONS[name]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; known: {sorted(_SKELETONS)}") from None
