"""Skeleton definitions: published parent arrays, kept joints, left/right symmetry, lookups."""
from __future__ import annotations

import numpy as np
import pytest

from fastlift.skeleton import (
    COCO_17,
    COCO_KEYPOINTS_SYMMETRY,
    H36M_17,
    H36M_32,
    H36M_KEPT_JOINTS,
    H36M_REMOVED_JOINTS,
    HUMANEVA_15,
    Skeleton,
    get_skeleton,
)

ALL = [H36M_32, H36M_17, HUMANEVA_15, COCO_17]

# Facts of the published data layout (VideoPose3D common/h36m_dataset.py, humaneva_dataset.py).
H36M_32_PARENTS = [-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19, 20, 19, 22,
                   12, 24, 25, 26, 27, 28, 27, 30]
H36M_17_PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15]
H36M_17_LEFT = [4, 5, 6, 11, 12, 13]
H36M_17_RIGHT = [1, 2, 3, 14, 15, 16]
HUMANEVA_PARENTS = [-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1]


def test_h36m_32():
    assert H36M_32.num_joints == 32
    assert list(H36M_32.parents) == H36M_32_PARENTS
    assert list(H36M_32.joints_left) == [6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23]
    assert list(H36M_32.joints_right) == [1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29, 30, 31]
    assert H36M_32.root == 0


def test_h36m_17_kept_joints_and_parents():
    assert H36M_REMOVED_JOINTS == (4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31)
    assert H36M_KEPT_JOINTS == (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
    assert H36M_17.num_joints == 17
    assert list(H36M_17.parents) == H36M_17_PARENTS
    assert list(H36M_17.joints_left) == H36M_17_LEFT
    assert list(H36M_17.joints_right) == H36M_17_RIGHT
    # Shoulders hang on the thorax (index 8), as in the published 17-joint skeleton.
    assert H36M_17.parents[H36M_17.index("LShoulder")] == H36M_17.index("Thorax") == 8
    assert H36M_17.parents[H36M_17.index("RShoulder")] == 8
    # Every kept joint keeps its name's side: the 17-joint left joints came from 32-joint left joints.
    assert [H36M_KEPT_JOINTS[j] for j in H36M_17.joints_left] == [6, 7, 8, 17, 18, 19]
    assert [H36M_KEPT_JOINTS[j] for j in H36M_17.joints_right] == [1, 2, 3, 25, 26, 27]


def test_subset_reattaches_to_nearest_kept_ancestor():
    # Without the shoulder override, removing 11 (Spine) and 16/24 (shoulders) hangs the arms on Spine1.
    s = H36M_32.subset(H36M_KEPT_JOINTS, "plain")
    assert s.parents[11] == 7 and s.parents[14] == 7  # LArm/RArm -> Spine1 (new index 7)
    assert s.parents[7] == 0  # Spine1 -> Hips (Spine removed)
    assert s.joint_names[7] == "Spine1"


def test_humaneva_15():
    assert HUMANEVA_15.num_joints == 15
    assert list(HUMANEVA_15.parents) == HUMANEVA_PARENTS
    assert list(HUMANEVA_15.joints_left) == [2, 3, 4, 8, 9, 10]
    assert list(HUMANEVA_15.joints_right) == [5, 6, 7, 11, 12, 13]


def test_coco_17():
    assert COCO_17.num_joints == 17
    assert COCO_KEYPOINTS_SYMMETRY == [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]]
    assert COCO_17.joint_names[0] == "nose" and COCO_17.joint_names[16] == "right_ankle"


def _side(name: str) -> str | None:
    n = name.lower()
    for prefix, side in (("left", "L"), ("right", "R")):
        if n.startswith(prefix):
            return side
    if name[:1] in ("L", "R") and name[1:2].isupper():
        return name[0]
    return None


@pytest.mark.parametrize("sk", ALL, ids=lambda s: s.name)
def test_left_right_symmetry(sk):
    left, right = list(sk.joints_left), list(sk.joints_right)
    assert len(left) == len(right) and not set(left) & set(right)
    assert len(set(left)) == len(left) and len(set(right)) == len(right)
    # Names say which side a joint is on, and pairs have mirrored names.
    for l, r in zip(left, right):
        assert _side(sk.joint_names[l]) == "L", sk.joint_names[l]
        assert _side(sk.joint_names[r]) == "R", sk.joint_names[r]
    middle = set(range(sk.num_joints)) - set(left) - set(right)
    assert all(_side(sk.joint_names[j]) is None for j in middle)
    # The flip permutation is an involution mapping left to right and fixing the middle.
    perm = sk.flip_permutation()
    assert sorted(perm.tolist()) == list(range(sk.num_joints))
    np.testing.assert_array_equal(perm[perm], np.arange(sk.num_joints))
    np.testing.assert_array_equal(perm[left], right)
    np.testing.assert_array_equal(perm[right], left)
    assert all(perm[j] == j for j in middle)
    # Mirroring the tree: the parent of a flipped joint is the flipped parent.
    for j, p in enumerate(sk.parents):
        if p >= 0:
            assert sk.parents[perm[j]] == perm[p], (sk.name, j)


@pytest.mark.parametrize("sk", ALL, ids=lambda s: s.name)
def test_tree_structure(sk):
    assert sk.parents.count(-1) == 1 and sk.parents[sk.root] == -1
    assert len(sk.bones()) == sk.num_joints - 1
    # Every joint reaches the root (no cycles).
    for j in range(sk.num_joints):
        seen, k = set(), j
        while k != -1:
            assert k not in seen
            seen.add(k)
            k = sk.parents[k]
    for j, p in sk.bones():
        assert j in sk.children(p) and sk.has_children(p)
    assert len(set(sk.joint_names)) == sk.num_joints


def test_get_skeleton_and_errors():
    for sk in ALL:
        assert get_skeleton(sk.name) is sk
    with pytest.raises(KeyError, match="unknown skeleton 'h36m'.*h36m17"):
        get_skeleton("h36m")
    with pytest.raises(KeyError, match="not in skeleton"):
        H36M_17.index("Tail")
    assert H36M_17.index("Head") == 10


def test_skeleton_validation():
    with pytest.raises(ValueError, match="exactly one root"):
        Skeleton("x", (-1, -1), ("a", "b"), (), ())
    with pytest.raises(ValueError, match="expected 2 names"):
        Skeleton("x", (-1, 0), ("a",), (), ())
    with pytest.raises(ValueError, match="out of range"):
        Skeleton("x", (-1, 5), ("a", "b"), (), ())
    with pytest.raises(ValueError, match="pair up"):
        Skeleton("x", (-1, 0), ("a", "b"), (1,), ())
