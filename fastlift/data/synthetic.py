"""Synthetic motion capture in the Human3.6M layout: fastlift's embedded default data.

A procedural generator that needs no download and no licence: bodies with Human3.6M bone
lengths, forward kinematics over the 32-joint Human3.6M tree with anatomical joint-angle
limits, several motion families, rendered through each subject's real Human3.6M cameras (lens
distortion included) with detector-like 2D noise.

* Bodies: the Human3.6M skeleton's bone lengths (the offsets of its motion-capture rig: thigh
  443 mm, shin 454 mm, upper arm 279 mm, forearm 252 mm, ...), scaled per subject by a body
  size factor (about 0.9-1.1, i.e. 1.6-1.9 m tall) with small per-segment variation.
* Motion families (action names in Human3.6M style, ``"<Family> <n>"``): ``Walking`` and
  ``Jogging`` along smooth paths with turns (gait-phase driven hips/knees/ankles, arm swing,
  pelvis rotation, lean into turns), ``Waving`` (one or both arms, weight shifts),
  ``Squats``, ``Reaching`` (forward/up/side/down reaches with trunk and knees), ``Jumping``
  (counter-movement jumps with a ballistic flight, or jumping jacks) and ``Boxing`` (guard,
  jabs and crosses, bouncing). Speed, amplitude, timing and style are randomised per sequence.
* Free-form families (:data:`FREEFORM_FAMILIES`, not in the default action list): ``Freestyle``
  (upright everyday and sports motion from keyframes of random postures within the joint limits:
  lunges, kicks, twists, reaches, squats, turns on the spot, jumps), ``Floor`` (standing,
  squatting, kneeling, sitting, crawling, lying on the back/front/side and the transitions
  between them: sitting down, lying down, getting up, rolling over) and ``Acrobatics`` (rolls,
  flips, cartwheels, handstands, spins). Keyframes are interpolated with minimum jerk at a
  per-sequence tempo; the lowest point of the whole body touches the floor; each sequence stands
  at a random place in the capture volume (varied distances to the cameras).
* Ground contact: the lowest foot point (heels, toes) is placed on the floor ``z = 0`` every
  frame (except in a jump's flight), stationary actions keep the feet's centre fixed, and paths
  stay inside the region every camera sees (around the world origin, as in Human3.6M).
* 2D: exact projection (:func:`fastlift.camera.project_to_2d`) of the 17 kept joints in pixels
  (``gt``), and a detector-like version (``det``): per-joint Gaussian jitter of a few pixels,
  temporally correlated (AR(1)), small per-joint bias, occasional left/right limb swaps and
  outliers, and per-joint confidence scores.

Everything is deterministic given the seed: each (subject, action) draws from its own
``numpy`` random stream derived from ``(seed, subject, action)``, so generating a subset of
subjects or actions gives the same arrays for those sequences.

Files (VideoPose3D layouts, see :mod:`fastlift.data.io`): ``data_3d_synthetic.npz`` (32 joints,
world coordinates in metres, + ``cameras``), ``data_2d_synthetic_gt.npz`` and
``data_2d_synthetic_det.npz`` (17 joints, pixels; ``det`` adds ``confidence``), plus
``manifest.json`` (generator version and parameters).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fastlift import camera as cam_mod
from fastlift._files import atomic_write_text
from fastlift.data.io import H36M_METADATA, save_positions_2d, save_positions_3d
from fastlift.skeleton import H36M_32, H36M_KEPT_JOINTS

__all__ = [
    "SyntheticData",
    "generate",
    "write",
    "ensure_synthetic",
    "default_data_dir",
    "body_offsets",
    "forward_kinematics",
    "SUBJECTS",
    "FAMILIES",
    "FREEFORM_FAMILIES",
    "DEFAULT_ACTIONS",
    "DEFAULT_FRAMES",
    "FPS",
    "JOINT_LIMITS_DEG",
    "FOOT_JOINTS",
    "VERSION",
    "FILE_3D",
    "FILE_2D_GT",
    "FILE_2D_DET",
    "FILE_2D_DETCOCO",
    "coco_derived_joints",
]

#: Generator version; bumped whenever the generated numbers change (cache directories carry it).
VERSION = 1
FPS = 50
#: Human3.6M subject names, so the standard split (train S1,S5-S8 / test S9,S11) applies.
SUBJECTS = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
#: Scripted motion families (feet on the floor, upright).
FAMILIES = ("Walking", "Jogging", "Waving", "Squats", "Reaching", "Jumping", "Boxing")
#: Free-form families: keyframes of random postures within the joint limits, whole-body rotations,
#: floor contact with any body part (see "free-form families" below). Not in DEFAULT_ACTIONS.
FREEFORM_FAMILIES = ("Freestyle", "Floor", "Acrobatics")
DEFAULT_ACTIONS = ("Walking 1", "Walking 2", "Jogging 1", "Waving 1", "Squats 1", "Reaching 1", "Jumping 1",
                   "Boxing 1")
DEFAULT_FRAMES = 500
FILE_3D = "data_3d_synthetic.npz"
FILE_2D_GT = "data_2d_synthetic_gt.npz"
FILE_2D_DET = "data_2d_synthetic_det.npz"
#: Optional fourth file (``write(..., coco_layout=True)``): the ``det`` keypoints with the four
#: joints a COCO-17 detector does not see (pelvis, spine, thorax, head top) rebuilt from the others
#: the way :func:`fastlift.train.infer.coco_to_h36m` builds them -- what ``fastlift video`` feeds
#: its lifter. Train on it with ``-k detcoco``.
FILE_2D_DETCOCO = "data_2d_synthetic_detcoco.npz"
MANIFEST = "manifest.json"

#: Foot joints of the 32-joint skeleton (ankles, toe bases, toe tips).
FOOT_JOINTS = (3, 4, 5, 8, 9, 10)

# ----------------------------------------------------------------------------- body model
# Rest pose: standing, arms hanging, facing +x; body axes x forward, y left, z up. Offsets
# (metres) from the parent joint; their lengths are the Human3.6M rig's bone lengths.
_G = 9.81
_FOOT_DROP = 0.075  # toe base below the ankle when the foot is flat (= heel below the ankle)
_BASE_OFFSETS = np.array([
    [0.0, 0.0, 0.0],                                   # 0 Hips (root)
    [0.0, -0.132949, 0.0],                             # 1 RightUpLeg (hip joint)
    [0.0, 0.0, -0.442895],                             # 2 RightLeg (knee)
    [0.0, 0.0, -0.454206],                             # 3 RightFoot (ankle)
    [math.sqrt(0.162767 ** 2 - _FOOT_DROP ** 2), 0.0, -_FOOT_DROP],  # 4 RightToeBase
    [0.074999, 0.0, 0.0],                              # 5 RightToeSite
    [0.0, 0.132949, 0.0],                              # 6 LeftUpLeg
    [0.0, 0.0, -0.442894],                             # 7 LeftLeg
    [0.0, 0.0, -0.454207],                             # 8 LeftFoot
    [math.sqrt(0.162767 ** 2 - _FOOT_DROP ** 2), 0.0, -_FOOT_DROP],  # 9 LeftToeBase
    [0.074999, 0.0, 0.0],                              # 10 LeftToeSite
    [0.0, 0.0, 0.0001],                                # 11 Spine (coincides with the hips in H36M)
    [0.0, 0.0, 0.233383],                              # 12 Spine1
    [0.0, 0.0, 0.257078],                              # 13 Neck (thorax)
    [0.030, 0.0, math.sqrt(0.121135 ** 2 - 0.030 ** 2)],  # 14 Head (neck/nose point, a little forward)
    [-0.010, 0.0, math.sqrt(0.115002 ** 2 - 0.010 ** 2)],  # 15 HeadSite (top of the head)
    [0.0, 0.0, 0.257078],                              # 16 LeftShoulder (clavicle root, at the thorax)
    [0.0, math.sqrt(0.151034 ** 2 - 0.012 ** 2), -0.012],  # 17 LeftArm (shoulder joint)
    [0.0, 0.0, -0.278883],                             # 18 LeftForeArm (elbow)
    [0.0, 0.0, -0.251733],                             # 19 LeftHand (wrist)
    [0.0, 0.0, 0.0],                                   # 20 LeftHandThumb
    [0.070711, 0.0, -0.070711],                        # 21 LeftThumbSite
    [0.0, 0.0, -0.100000],                             # 22 LeftWristEnd
    [0.0, 0.0, 0.0],                                   # 23 LeftWristSite
    [0.0, 0.0, 0.257078],                              # 24 RightShoulder
    [0.0, -math.sqrt(0.151031 ** 2 - 0.012 ** 2), -0.012],  # 25 RightArm
    [0.0, 0.0, -0.278893],                             # 26 RightForeArm
    [0.0, 0.0, -0.251729],                             # 27 RightHand
    [0.0, 0.0, 0.0],                                   # 28 RightHandThumb
    [0.070711, 0.0, -0.070711],                        # 29 RightThumbSite
    [0.0, 0.0, -0.137500],                             # 30 RightWristEnd
    [0.0, 0.0, 0.0],                                   # 31 RightWristSite
])
_HEEL = np.array([-0.050, 0.0, -_FOOT_DROP])  # heel point in the ankle's frame
_SEGMENT_GROUP = np.array([0, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 2, 2, 4, 4, 4, 4, 4, 4, 2, 2, 4, 4, 4, 4,
                           4, 4])  # 0 pelvis, 1 legs, 2 trunk, 3 head, 4 arms

# Anatomical degrees of freedom per joint: (flexion, abduction, twist), each mapped to a rotation
# about a body axis ('x' forward, 'y' left, 'z' up) with a sign, or None. Local rotation
# L = Ry(ry) Rx(rx) Rz(rz). Conventions: hip/shoulder flexion moves the limb forward, abduction
# away from the midline, twist is internal rotation; knee/elbow flexion is positive (knee bends
# backwards, elbow forwards); ankle "flexion" is plantarflexion (toes down); toe "flexion" is
# extension (toes up); spine/neck flexion leans forward, abduction bends to the left, twist
# turns left; clavicle flexion is protraction (shoulder forward), abduction is elevation.
_L, _R = 1.0, -1.0


def _dof_table():
    t = {}
    for side, hip, knee, ankle, toe in ((_R, 1, 2, 3, 4), (_L, 6, 7, 8, 9)):
        t[hip] = (("y", -1), ("x", side), ("z", -side))
        t[knee] = (("y", 1), None, None)
        t[ankle] = (("y", 1), None, None)
        t[toe] = (("y", -1), None, None)
    for j in (11, 12, 13, 14):
        t[j] = (("y", 1), ("x", -1), ("z", 1))
    for side, clav, sho, elb, wri in ((_L, 16, 17, 18, 19), (_R, 24, 25, 26, 27)):
        t[clav] = (("z", -side), ("x", side), None)
        t[sho] = (("y", -1), ("x", side), ("z", -side))
        t[elb] = (("y", -1), None, ("z", -side))
        t[wri] = (("y", -1), None, None)
    return t


_DOF = _dof_table()
_AXIS = {"x": 0, "y": 1, "z": 2}
# M[j] maps anatomical (flex, abd, twist) to Euler (rx, ry, rz).
_DOF_MATRIX = np.zeros((32, 3, 3))
for _j, _dofs in _DOF.items():
    for _k, _d in enumerate(_dofs):
        if _d is not None:
            _DOF_MATRIX[_j, _AXIS[_d[0]], _k] = _d[1]

#: Joint-angle limits in degrees: joint index -> ((flex lo, hi), (abd lo, hi), (twist lo, hi)),
#: None for a locked degree of freedom. Joints not listed have no rotation of their own.
JOINT_LIMITS_DEG: dict[int, tuple] = {}
for _hip, _knee, _ankle, _toe in ((1, 2, 3, 4), (6, 7, 8, 9)):
    JOINT_LIMITS_DEG[_hip] = ((-30, 125), (-25, 50), (-40, 45))
    JOINT_LIMITS_DEG[_knee] = ((0, 150), None, None)
    JOINT_LIMITS_DEG[_ankle] = ((-30, 50), None, None)
    JOINT_LIMITS_DEG[_toe] = ((0, 60), None, None)
JOINT_LIMITS_DEG[11] = ((-20, 50), (-25, 25), (-25, 25))
JOINT_LIMITS_DEG[12] = ((-20, 40), (-20, 20), (-25, 25))
JOINT_LIMITS_DEG[13] = ((-30, 45), (-30, 30), (-40, 40))
JOINT_LIMITS_DEG[14] = ((-30, 30), (-20, 20), (-40, 40))
for _clav, _sho, _elb, _wri in ((16, 17, 18, 19), (24, 25, 26, 27)):
    JOINT_LIMITS_DEG[_clav] = ((-15, 25), (-10, 30), None)
    JOINT_LIMITS_DEG[_sho] = ((-50, 180), (-15, 180), (-70, 80))
    JOINT_LIMITS_DEG[_elb] = ((0, 150), None, (-80, 80))
    JOINT_LIMITS_DEG[_wri] = ((-60, 60), None, None)

_LIMIT_LO = np.zeros((32, 3))
_LIMIT_HI = np.zeros((32, 3))
for _j, _lims in JOINT_LIMITS_DEG.items():
    for _k, _lim in enumerate(_lims):
        if _lim is not None:
            _LIMIT_LO[_j, _k], _LIMIT_HI[_j, _k] = np.radians(_lim)


def _rot(axis: int, a: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` about body axis ``axis`` by angles ``a`` (radians)."""
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    if axis == 0:
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis == 1:
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _local_rotations(angles: np.ndarray) -> np.ndarray:
    """Anatomical angles ``(T, 32, 3)`` (radians) -> local rotations ``(T, 32, 3, 3)``."""
    euler = np.einsum("jea,tja->tje", _DOF_MATRIX, angles)
    return _rot(1, euler[..., 1]) @ _rot(0, euler[..., 0]) @ _rot(2, euler[..., 2])


def forward_kinematics(offsets: np.ndarray, angles: np.ndarray, root_rotation: np.ndarray,
                       root_position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions of the 32-joint Human3.6M tree.

    Args:
        offsets: ``(32, 3)`` rest-pose offsets from each joint's parent (metres, body axes
            x forward, y left, z up).
        angles: ``(T, 32, 3)`` anatomical angles (flexion, abduction, twist) in radians.
        root_rotation: ``(T, 3, 3)`` pelvis orientation in the world.
        root_position: ``(T, 3)`` pelvis position in the world (metres).

    Returns:
        ``(positions (T, 32, 3), global_rotations (T, 32, 3, 3))``.
    """
    local = _local_rotations(angles)
    t = angles.shape[0]
    pos = np.empty((t, 32, 3))
    rot = np.empty((t, 32, 3, 3))
    rot[:, 0] = root_rotation @ local[:, 0]
    pos[:, 0] = root_position
    for j in range(1, 32):
        p = H36M_32.parents[j]
        pos[:, j] = pos[:, p] + rot[:, p] @ offsets[j]
        rot[:, j] = rot[:, p] @ local[:, j]
    return pos, rot


def body_offsets(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Rest offsets ``(32, 3)`` of one subject: Human3.6M bone lengths x ``scale`` x a small
    per-segment factor (pelvis, legs, trunk, head, arms; left and right alike)."""
    factors = rng.uniform(0.96, 1.04, size=5)
    return _BASE_OFFSETS * (scale * factors[_SEGMENT_GROUP])[:, None]


# ----------------------------------------------------------------------------- signal helpers
def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def _bump(phase, center, width):
    """Periodic Gaussian bump of ``phase`` around ``center`` (radians)."""
    return np.exp(-0.5 * (_wrap(phase - center) / width) ** 2)


def _smooth_noise(rng, t, shape=(), amp=1.0, fmin=0.05, fmax=0.5, k=3):
    """Smooth random signal ``(T, *shape)``: sum of ``k`` sinusoids per channel with random
    frequencies in ``[fmin, fmax]`` Hz; standard deviation about ``amp``."""
    shape = tuple(shape)
    f = rng.uniform(fmin, fmax, size=(k,) + shape)
    ph = rng.uniform(0, 2 * np.pi, size=(k,) + shape)
    w = rng.uniform(0.5, 1.0, size=(k,) + shape)
    tt = t.reshape((-1,) + (1,) * (len(shape) + 1))
    sig = np.sum(w * np.sin(2 * np.pi * f * tt + ph), axis=1)
    return amp * sig / np.sqrt(np.sum(w ** 2, axis=0) / 2)


def _minjerk(x):
    x = np.clip(x, 0.0, 1.0)
    return x ** 3 * (10 - 15 * x + 6 * x ** 2)


def _keyframes(t, times, values):
    """Min-jerk interpolation through keyframes: ``times`` (K,) seconds, ``values`` (K, ...)."""
    times = np.asarray(times, dtype=float)
    values = np.asarray(values, dtype=float)
    idx = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
    span = np.maximum(times[idx + 1] - times[idx], 1e-9)
    s = _minjerk((t - times[idx]) / span)
    s = s.reshape((-1,) + (1,) * (values.ndim - 1))
    return values[idx] + s * (values[idx + 1] - values[idx])


def _schedule(rng, duration, move=(0.4, 1.0), hold=(0.1, 0.6)):
    """Alternating move/hold keyframe times covering ``duration`` seconds: returns a list of
    (t_start_of_move, t_end_of_move, t_end_of_hold)."""
    out, t = [], rng.uniform(0.0, 0.5)
    while t < duration + 1.0:
        m = rng.uniform(*move)
        h = rng.uniform(*hold)
        out.append((t, t + m, t + m + h))
        t += m + h
    return out


@dataclass
class _Motion:
    """One sequence's kinematic description (radians, metres, seconds)."""

    angles: np.ndarray              # (T, 32, 3) anatomical angles
    heading: np.ndarray             # (T,) pelvis yaw in the world
    pitch: np.ndarray               # (T,) pelvis forward tilt
    roll: np.ndarray                # (T,) pelvis sideways tilt (positive: top to the right)
    root_xy: np.ndarray | None      # (T, 2) pelvis floor position, or None: keep the feet's centre fixed
    lift: np.ndarray                # (T,) height of the lowest foot point above the floor (flight)
    anchor: np.ndarray = field(default_factory=lambda: np.zeros(2))  # feet centre for root_xy None
    # "feet": the lowest foot point is on the floor and root_xy None keeps the feet's centre at
    # the anchor (scripted families); "body": the lowest point of the whole body touches the floor
    # (lying, crawling, rolling) and the body's centroid stays at the anchor.
    contact: str = "feet"


def _deg(x):
    return np.radians(x)


def _idle(rng, t, angles, amp_deg=2.0, joints=None):
    """Add small smooth noise to every degree of freedom (of ``joints``, a (32,) mask)."""
    noise = _smooth_noise(rng, t, (32, 3), amp=_deg(amp_deg), fmax=0.6)
    mask = np.abs(_DOF_MATRIX).sum(axis=1) > 0
    if joints is not None:
        mask = mask & np.asarray(joints)[:, None]
    return angles + noise * mask


# Floor region (world x, y in metres) in which a person, arms and a standing reach included, is
# seen whole by all four Human3.6M cameras of every subject: roughly x in [-0.9, 1.4],
# y in [0.0, 1.3] around the origin of the capture volume.
_REGION_CENTER = np.array([0.25, 0.65])
_REGION_RADII = np.array([0.75, 0.45])


def _stand_anchor(rng):
    # Stationary actions stand near the centre of the region.
    return _REGION_CENTER + rng.uniform(-0.25, 0.25, size=2) * np.array([1.0, 0.6])


# ----------------------------------------------------------------------------- families


def _path(rng, t, speed, turn_radius):
    """Smooth floor path (T, 2) and heading (T,) that pursues random waypoints inside the
    region every camera sees, with a bounded turn rate (``speed / turn_radius``)."""
    n = len(t)
    dt = 1.0 / FPS

    def waypoint(prev):
        for _ in range(100):
            r = np.sqrt(rng.uniform(0.0, 1.0))
            a = rng.uniform(0, 2 * np.pi)
            p = _REGION_CENTER + _REGION_RADII * r * np.array([np.cos(a), np.sin(a)])
            if prev is None or np.linalg.norm(p - prev) > 0.7:
                return p
        return p

    pos = _REGION_CENTER + _REGION_RADII * rng.uniform(-0.3, 0.3, size=2)
    target = waypoint(pos)
    heading = math.atan2(*(target - pos)[::-1]) + rng.uniform(-0.5, 0.5)
    omega = 0.0
    omega_max = speed / turn_radius
    speed_var = 1.0 + 0.08 * _smooth_noise(rng, t, (), fmax=0.3)
    xy = np.empty((n, 2))
    hd = np.empty(n)
    for i in range(n):
        d = target - pos
        if np.hypot(*d) < 0.3:
            target = waypoint(target)
            d = target - pos
        err = math.remainder(math.atan2(d[1], d[0]) - heading, 2 * math.pi)
        omega_des = float(np.clip(2.5 * err, -omega_max, omega_max))
        omega += (omega_des - omega) * min(1.0, dt / 0.25)
        heading += omega * dt
        v = speed * speed_var[i] * (1.0 - 0.35 * abs(omega) / omega_max)
        pos = pos + v * dt * np.array([math.cos(heading), math.sin(heading)])
        xy[i] = pos
        hd[i] = heading
    return xy, hd


def _hermite(tau, p0, p1, m0, m1):
    t2, t3 = tau * tau, tau * tau * tau
    return (2 * t3 - 3 * t2 + 1) * p0 + (t3 - 2 * t2 + tau) * m0 + (-2 * t3 + 3 * t2) * p1 + (t3 - t2) * m1


def _gait(rng, t, body, jog: bool) -> _Motion:
    """Walking / jogging along a path. Each leg's ankle moves relative to its hip at the body's
    speed while in stance (so the stance foot stays planted) and swings forward on a smooth
    curve; hip flexion is solved from that ankle position (two-link planar inverse kinematics)
    for the knee flexion of the gait phase."""
    n = len(t)
    if jog:
        speed, freq, duty = rng.uniform(1.7, 2.3), rng.uniform(1.30, 1.50), rng.uniform(0.36, 0.42)
        # knee (deg) over the cycle from heel strike (u = 0), ankle extra plantarflexion
        knee_keys = ([0.0, 0.12, duty, duty + 0.35 * (1 - duty), 0.93, 1.0], [18, 40, 22, 95, 20, 18])
        ankle_keys = ([0.0, 0.2, duty - 0.02, duty + 0.15 * (1 - duty), 0.9, 1.0], [0, 0, 20, -5, -5, 0])
        lean, arm_amp, elbow0, turn_radius, flight = 9.0, 32.0, 85.0, 0.55, rng.uniform(0.03, 0.06)
    else:
        speed, freq, duty = rng.uniform(0.9, 1.35), rng.uniform(0.85, 1.0), rng.uniform(0.58, 0.63)
        knee_keys = ([0.0, 0.15, 0.4, duty - 0.1, duty, duty + 0.3 * (1 - duty), 0.95, 1.0],
                     [3, 15, 4, 8, 35, 60, 4, 3])
        ankle_keys = ([0.0, 0.12, duty - 0.1, duty, duty + 0.15 * (1 - duty), 0.9, 1.0],
                      [-10, 0, 0, 15, -5, -5, -10])
        lean, arm_amp, elbow0, turn_radius, flight = 3.0, 18.0, 18.0, 0.4, 0.0
    speed *= rng.uniform(0.95, 1.05)
    arm_amp *= rng.uniform(0.7, 1.3)
    xy, path_heading = _path(rng, t, speed, turn_radius)
    # The gait phase follows the distance actually travelled (cadence scales with speed).
    step = np.hypot(*np.diff(xy, axis=0, prepend=xy[:1]).T)
    stride = speed / freq
    cycles = rng.uniform() + np.cumsum(step) / stride
    excursion = duty * stride                 # ankle travel relative to the hip during stance
    thigh, shin = np.linalg.norm(body["offsets"][2]), np.linalg.norm(body["offsets"][3])
    pitch_deg = lean * 0.4

    a = np.zeros((n, 32, 3))
    lift = np.zeros(n)
    for side, (hip, knee, ankle, toe, sho, elb), shift in ((_R, (1, 2, 3, 4, 25, 26), 0.0),
                                                            (_L, (6, 7, 8, 9, 17, 18), 0.5)):
        u = (cycles + shift) % 1.0                 # 0 = heel strike of this leg
        stance = u < duty
        tau_st = u / duty
        tau_sw = np.clip((u - duty) / (1 - duty), 0, 1)
        m = -excursion * (1 - duty) / duty      # stance velocity in swing-time units
        x = np.where(stance, excursion / 2 - excursion * tau_st,
                     _hermite(tau_sw, -excursion / 2, excursion / 2, m, m))
        kappa = np.radians(_keyframes(u, *knee_keys))
        r = np.sqrt((thigh + shin * np.cos(kappa)) ** 2 + (shin * np.sin(kappa)) ** 2)
        delta = np.arctan2(shin * np.sin(kappa), thigh + shin * np.cos(kappa))
        h_global = np.degrees(delta + np.arcsin(np.clip(x / r, -0.98, 0.98)))
        knee_flex = np.degrees(kappa)
        hip_flex = h_global + pitch_deg
        # Ankle: foot flat on the floor in stance (see _squat_angles), parallel to it in swing,
        # heel rising for push-off (toes extend), toes up at heel strike.
        plantar = h_global - knee_flex + _keyframes(u, *ankle_keys)
        a[:, hip, 0] = _deg(hip_flex)
        a[:, hip, 1] = _deg(3.0)
        a[:, hip, 2] = _deg(3.0)
        a[:, knee, 0] = _deg(knee_flex)
        a[:, ankle, 0] = _deg(plantar)
        a[:, toe, 0] = _deg(25.0 * np.exp(-0.5 * ((u - duty + 0.03) / 0.05) ** 2))
        # The arm swings against the leg of the same side (most backward at its heel strike).
        a[:, sho, 0] = _deg(-arm_amp * np.cos(2 * np.pi * u) + (6.0 if jog else 2.0))
        a[:, sho, 1] = _deg(8.0 + (6.0 if jog else 0.0))
        a[:, elb, 0] = _deg(elbow0 + 10.0 * (1 + np.cos(2 * np.pi * u)) / 2 * (1.5 if jog else 1.0))
        if flight > 0:  # jogging: both feet off the floor after this leg's toe-off
            window = (u >= duty) & (u < 0.5)
            lift[window] = flight * np.sin(np.pi * (u[window] - duty) / (0.5 - duty))
    u_r = cycles % 1.0
    # Shoulders counter-rotate against the legs (the pelvis itself keeps the path heading so the
    # stance foot stays planted).
    a[:, 12, 2] = -_deg(4.0) * np.cos(2 * np.pi * u_r)
    a[:, 11, 0] = _deg(lean * 0.3)
    a[:, 12, 0] = _deg(lean * 0.3)
    a[:, 13, 0] = -_deg(lean * 0.4)                      # keep looking ahead
    upper = np.zeros(32, dtype=bool)
    upper[11:] = True
    a = _idle(rng, t, a, 1.5, upper)
    omega = np.gradient(np.unwrap(path_heading), 1.0 / FPS)
    roll = -0.6 * np.arctan(speed * omega / _G) + _deg(2.0) * np.sin(2 * np.pi * u_r)
    # The hips cancel the pelvis roll (the legs stay in their vertical planes: no foot sliding).
    a[:, 1, 1] += roll
    a[:, 6, 1] -= roll
    pitch = np.full(n, _deg(pitch_deg))
    return _Motion(a, path_heading, pitch, roll, xy, lift)


def _walking(rng, t, body):
    return _gait(rng, t, body, jog=False)


def _jogging(rng, t, body):
    return _gait(rng, t, body, jog=True)


def _standing_base(rng, t, knee=5.0):
    n = len(t)
    a = np.zeros((n, 32, 3))
    for hip, kn, ank in ((1, 2, 3), (6, 7, 8)):
        a[:, hip, 0] = _deg(knee * 0.5)
        a[:, hip, 1] = _deg(rng.uniform(2, 7))
        a[:, hip, 2] = _deg(rng.uniform(0, 10))
        a[:, kn, 0] = _deg(knee)
        a[:, ank, 0] = _deg(-knee * 0.5)
    for sho, elb in ((17, 18), (25, 26)):
        a[:, sho, 1] = _deg(rng.uniform(3, 10))
        a[:, elb, 0] = _deg(rng.uniform(8, 20))
    return a


def _slow_heading(rng, t, amp_deg=35.0):
    return rng.uniform(-np.pi, np.pi) + _deg(amp_deg) * _smooth_noise(rng, t, (), fmax=0.08, k=2)


def _waving(rng, t, body):
    n = len(t)
    a = _standing_base(rng, t)
    duration = t[-1] + 1.0 / FPS
    events = _schedule(rng, duration, move=(0.5, 0.9), hold=(1.5, 3.5))
    times, vals = [0.0], [(0.0, 0.0)]
    for i, (t0, t1, t2) in enumerate(events):
        up = i % 2 == 0
        which = rng.choice(3) if up else None                   # 0 left, 1 right, 2 both
        target = (0.0, 0.0) if not up else ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0))[which]
        times += [t0, t1, t2]
        vals += [vals[-1], target, target]
    env = _keyframes(t, times, vals)
    raise_l, raise_r = env[:, 0], env[:, 1]
    freq = rng.uniform(1.5, 2.8)
    wave = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    overhead = rng.uniform() < 0.5
    for side, env_s, (clav, sho, elb, wri) in ((_L, raise_l, (16, 17, 18, 19)), (_R, raise_r, (24, 25, 26, 27))):
        if overhead:       # big arm wave above the head
            abd = 150.0 + 15.0 * wave
            flex, elbow = 15.0, 20.0 + 10.0 * wave
        else:              # hand wave next to the head: forearm up, swinging from the elbow
            abd = 85.0 + 5.0 * wave
            flex, elbow = 10.0, 95.0 + 30.0 * wave
        a[:, sho, 1] = (1 - env_s) * a[:, sho, 1] + env_s * _deg(abd)
        a[:, sho, 0] = env_s * _deg(flex)
        # Internal rotation of -80 (external 80) turns the bent forearm up when the arm is abducted.
        a[:, sho, 2] = env_s * _deg(-65.0 if not overhead else 0.0)
        a[:, elb, 0] = (1 - env_s) * a[:, elb, 0] + env_s * _deg(elbow)
        a[:, clav, 1] = env_s * _deg(12.0)
        a[:, 11, 1] += side * -env_s * _deg(4.0)            # lean away from the raised arm
    shift = _smooth_noise(rng, t, (), amp=_deg(3.0), fmax=0.25)
    a = _idle(rng, t, a, 2.0)
    return _Motion(a, _slow_heading(rng, t), np.full(n, _deg(2.0)), shift, None, np.zeros(n), _stand_anchor(rng))


def _squat_angles(a, s, depth_thigh=85.0, shank=28.0, pelvis=35.0):
    """Set leg angles for squat depth ``s`` in [0, 1] with flat feet; returns the pelvis pitch."""
    thigh = depth_thigh * s
    shank_a = shank * s
    pitch = pelvis * s
    for hip, knee, ankle in ((1, 2, 3), (6, 7, 8)):
        hip_flex = pitch + thigh
        knee_flex = thigh + shank_a
        a[:, hip, 0] = _deg(hip_flex)
        a[:, knee, 0] = _deg(knee_flex)
        a[:, ankle, 0] = _deg(hip_flex - knee_flex - pitch)
    return _deg(pitch)


def _squats(rng, t, body):
    n = len(t)
    a = _standing_base(rng, t, knee=3.0)
    duration = t[-1] + 1.0 / FPS
    times, vals = [0.0], [0.0]
    tc = rng.uniform(0.2, 1.0)
    while tc < duration + 1:
        down, hold, up, rest = rng.uniform(0.9, 1.5), rng.uniform(0.0, 0.6), rng.uniform(0.8, 1.3), rng.uniform(0.3, 1.2)
        d = rng.uniform(0.55, 1.0)
        times += [tc, tc + down, tc + down + hold, tc + down + hold + up]
        vals += [0.0, d, d, 0.0]
        tc += down + hold + up + rest
    s = _keyframes(t, times, vals)
    pitch = _squat_angles(a, s, depth_thigh=rng.uniform(75, 90), shank=rng.uniform(22, 30))
    a[:, 11, 0] = _deg(6.0) * s
    a[:, 12, 0] = _deg(4.0) * s
    a[:, 13, 0] = -_deg(20.0) * s                         # keep the head up
    arms_forward = rng.uniform() < 0.6
    for sho, elb in ((17, 18), (25, 26)):
        if arms_forward:
            a[:, sho, 0] = _deg(85.0) * s
            a[:, elb, 0] = a[:, elb, 0] * (1 - s) + _deg(5.0) * s
        else:  # hands in front of the chest
            a[:, sho, 0] = _deg(35.0) + _deg(15.0) * s
            a[:, sho, 2] = _deg(35.0)
            a[:, elb, 0] = _deg(125.0)
    for hip in (1, 6):
        a[:, hip, 1] += _deg(8.0) * s                     # knees out
    a = _idle(rng, t, a, 1.5)
    return _Motion(a, _slow_heading(rng, t, 20.0), pitch, np.zeros(n), None, np.zeros(n), _stand_anchor(rng))


def _reaching(rng, t, body):
    n = len(t)
    a = _standing_base(rng, t)
    duration = t[-1] + 1.0 / FPS
    # Channels: [l_flex, l_abd, l_elbow, r_flex, r_abd, r_elbow, trunk_lean, trunk_twist, squat]
    rest = np.array([0, 6, 15, 0, 6, 15, 0, 0, 0], dtype=float)
    times, vals = [0.0], [rest]
    tc = rng.uniform(0.2, 0.8)
    while tc < duration + 1:
        kind = rng.choice(["forward", "up", "side", "down"])
        arm = rng.choice(3)  # 0 left, 1 right, 2 both
        v = rest.copy()
        if kind == "forward":
            flex, abd, lean, squat = rng.uniform(70, 110), rng.uniform(0, 30), rng.uniform(0, 15), 0.0
        elif kind == "up":
            flex, abd, lean, squat = rng.uniform(140, 170), rng.uniform(5, 30), rng.uniform(-8, 0), 0.0
        elif kind == "side":
            flex, abd, lean, squat = rng.uniform(0, 30), rng.uniform(70, 100), rng.uniform(0, 8), 0.0
        else:
            flex, abd, lean, squat = rng.uniform(40, 75), rng.uniform(0, 20), rng.uniform(20, 45), rng.uniform(0.2, 0.5)
        elbow = rng.uniform(3, 25)
        if arm in (0, 2):
            v[0:3] = (flex, abd, elbow)
        if arm in (1, 2):
            v[3:6] = (flex, abd, elbow)
        twist = 0.0 if arm == 2 else (1 if arm == 1 else -1) * rng.uniform(5, 20)
        v[6:9] = (lean, twist, squat)
        move, hold, back, pause = rng.uniform(0.6, 1.2), rng.uniform(0.2, 0.8), rng.uniform(0.6, 1.1), rng.uniform(0.2, 1.0)
        times += [tc, tc + move, tc + move + hold, tc + move + hold + back]
        vals += [rest, v, v, rest]
        tc += move + hold + back + pause
    k = _keyframes(t, times, np.array(vals))
    pitch = _squat_angles(a, k[:, 8], depth_thigh=60.0, shank=20.0, pelvis=30.0)
    for (sho, elb), off in (((17, 18), 0), ((25, 26), 3)):
        a[:, sho, 0] = _deg(k[:, off])
        a[:, sho, 1] = _deg(k[:, off + 1])
        a[:, elb, 0] = _deg(k[:, off + 2])
    a[:, 11, 0] = _deg(k[:, 6]) * 0.6
    a[:, 12, 0] = _deg(k[:, 6]) * 0.4
    a[:, 11, 2] = _deg(k[:, 7]) * 0.5
    a[:, 12, 2] = _deg(k[:, 7]) * 0.5
    a[:, 13, 0] = -_deg(k[:, 6]) * 0.3
    a = _idle(rng, t, a, 2.0)
    return _Motion(a, _slow_heading(rng, t, 45.0), pitch, np.zeros(n), None, np.zeros(n), _stand_anchor(rng))


def _jumping(rng, t, body):
    n = len(t)
    a = _standing_base(rng, t, knee=3.0)
    duration = t[-1] + 1.0 / FPS
    lift = np.zeros(n)
    if rng.uniform() < 0.6:
        # Counter-movement jumps: crouch, extend, fly, land, recover.
        # Channels: [squat depth, plantarflexion]; the arms have their own keyframes (their swing
        # starts at the bottom of the crouch and ends in flight).
        times, vals = [0.0], [(0.0, 0.0)]
        arm_t, arm_v = [0.0], [0.0]
        tc = rng.uniform(0.2, 0.8)
        while tc < duration + 1:
            h = rng.uniform(0.08, 0.25)
            t_flight = 2 * math.sqrt(2 * h / _G)
            crouch, push, recover, rest = rng.uniform(0.35, 0.6), rng.uniform(0.12, 0.18), rng.uniform(0.35, 0.6), rng.uniform(0.3, 1.0)
            d = rng.uniform(0.35, 0.55)
            t_up = tc + crouch + push
            t_land = t_up + t_flight
            times += [tc, tc + crouch, t_up, t_land - 0.05, t_land + 0.2, t_land + 0.2 + recover]
            vals += [(0, 0), (d, 0), (0, 35), (0, 25), (d * 0.7, 0), (0, 0)]
            arm_t += [tc, tc + 0.8 * crouch, t_up + 0.15, t_land + 0.1, t_land + 0.2 + recover]
            arm_v += [0.0, -35.0, rng.uniform(90, 120), 40.0, 0.0]
            flight = (t >= t_up) & (t < t_land)
            tau = (t[flight] - t_up) / t_flight
            lift[flight] = 4 * h * tau * (1 - tau)
            tc = t_land + 0.2 + recover + rest
        k = _keyframes(t, times, np.array(vals, dtype=float))
        arms = _keyframes(t, arm_t, np.array(arm_v))
        pitch = _squat_angles(a, k[:, 0], depth_thigh=80.0, shank=28.0, pelvis=40.0)
        for ank in (3, 8):
            a[:, ank, 0] += _deg(k[:, 1])
        for sho, elb in ((17, 18), (25, 26)):
            a[:, sho, 0] = _deg(arms)
            a[:, elb, 0] = _deg(10.0)
        a[:, 13, 0] = -_deg(25.0) * k[:, 0]
        roll = np.zeros(n)
    else:
        # Jumping jacks: small hops, legs and arms out and in.
        freq = rng.uniform(0.9, 1.3)   # jacks per second
        ph = 2 * np.pi * freq * t
        out = 0.5 - 0.5 * np.cos(ph)   # 0 closed, 1 open
        start = rng.uniform(0.3, 1.0)
        on = np.clip((t - start) / 0.5, 0, 1)
        h = rng.uniform(0.04, 0.09)
        hop = np.maximum(0.0, np.sin(2 * ph))              # two hops per jack
        air = (hop > 0.25) & (on > 0.99)
        lift[air] = h * (hop[air] - 0.25) / 0.75
        for hip, ank in ((1, 3), (6, 8)):
            a[:, hip, 1] = _deg(3.0 + 15.0 * out * on)
            a[:, ank, 0] = _deg(20.0) * hop * on
        for sho, elb in ((17, 18), (25, 26)):
            a[:, sho, 1] = _deg(8.0 + 150.0 * out * on)
            a[:, elb, 0] = _deg(12.0)
        pitch = np.zeros(n)
        roll = np.zeros(n)
    a = _idle(rng, t, a, 1.5)
    return _Motion(a, _slow_heading(rng, t, 15.0), pitch, roll, None, lift, _stand_anchor(rng))


def _boxing(rng, t, body):
    n = len(t)
    a = _standing_base(rng, t, knee=15.0)
    duration = t[-1] + 1.0 / FPS
    lead = _L if rng.uniform() < 0.7 else _R            # orthodox stance: left leg/hand forward
    for side, hip in ((_L, 6), (_R, 1)):
        a[:, hip, 0] += _deg(12.0 if side == lead else -8.0)
    bounce = _deg(6.0) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1.6, 2.2) * t))
    for knee, ank, hip in ((2, 3, 1), (7, 8, 6)):
        a[:, knee, 0] += bounce
        a[:, hip, 0] += bounce * 0.5
        a[:, ank, 0] -= bounce * 0.5
    # Channels per arm: punch extension in [0, 1]; plus trunk twist (degrees).
    times, vals = [0.0], [(0.0, 0.0, 0.0)]
    tc = rng.uniform(0.2, 0.6)
    while tc < duration + 1:
        combo = rng.integers(1, 4)
        for _ in range(combo):
            hand = rng.choice(2)  # 0 left, 1 right
            is_lead = (hand == 0) == (lead == _L)
            twist = (1 if hand == 1 else -1) * (rng.uniform(5, 10) if is_lead else rng.uniform(15, 25))
            ext = [0.0, 0.0]
            ext[hand] = 1.0
            out, back = rng.uniform(0.1, 0.18), rng.uniform(0.15, 0.25)
            times += [tc, tc + out, tc + out + back]
            vals += [(0.0, 0.0, 0.0), (ext[0], ext[1], twist), (0.0, 0.0, 0.0)]
            tc += out + back + rng.uniform(0.02, 0.15)
        tc += rng.uniform(0.5, 1.5)
    k = _keyframes(t, times, np.array(vals, dtype=float))
    for idx, (clav, sho, elb) in enumerate(((16, 17, 18), (24, 25, 26))):
        e = k[:, idx]
        a[:, sho, 0] = _deg(45.0 + 45.0 * e)           # guard -> arm forward at shoulder height
        a[:, sho, 1] = _deg(25.0 - 15.0 * e)
        a[:, sho, 2] = _deg(20.0 * (1 - e))
        a[:, elb, 0] = _deg(125.0 - 115.0 * e)          # fist at the chin -> arm straight
        a[:, clav, 0] = _deg(15.0) * e                  # shoulder follows the punch
    a[:, 11, 2] = _deg(k[:, 2]) * 0.5
    a[:, 12, 2] = _deg(k[:, 2]) * 0.5
    a[:, 11, 0] = _deg(8.0)
    a[:, 13, 0] = -_deg(5.0)
    a = _idle(rng, t, a, 1.5)
    heading = _slow_heading(rng, t, 25.0) + (_deg(25.0) if lead == _L else -_deg(25.0))
    return _Motion(a, heading, np.full(n, _deg(5.0)), np.zeros(n), None, np.zeros(n), _stand_anchor(rng))


# ----------------------------------------------------------------------------- free-form families
# Motion beyond the scripted families: keyframes of random postures within the joint limits,
# interpolated (minimum jerk) at varied speeds, with whole-body rotations and floor contact.
# Real footage contains everything (turning on the spot, lunges, twists, kicks, sitting, lying,
# crawling, getting up, rolls, cartwheels), and a lifter trained only on the scripted families
# lifts such motion worse than a constant mean pose.
_LEG_DOFS = ((1, 2, 3, 4), (6, 7, 8, 9))            # right, left: hip, knee, ankle, toe
_ARM_DOFS = ((24, 25, 26, 27), (16, 17, 18, 19))    # right, left: clavicle, shoulder, elbow, wrist


def _random_posture(rng) -> np.ndarray:
    """A random posture ``(32, 3)`` in degrees: every degree of freedom drawn inside its limits,
    pulled towards neutral by a random factor (so extreme and relaxed postures both occur);
    sometimes left and right legs or arms mirror each other (squats, both arms up)."""
    lo, hi = np.degrees(_LIMIT_LO), np.degrees(_LIMIT_HI)
    neutral = np.clip(0.0, lo, hi)
    spread = rng.uniform(0.15, 1.0, size=(32, 1)) * rng.uniform(0.5, 1.0)
    a = neutral + spread * (rng.uniform(lo, hi) - neutral)
    if rng.uniform() < 0.35:
        a[list(_LEG_DOFS[1])] = a[list(_LEG_DOFS[0])]
    if rng.uniform() < 0.35:
        a[list(_ARM_DOFS[1])] = a[list(_ARM_DOFS[0])]
    for j in (11, 12, 13, 14):  # the trunk and neck rarely use their full range at once
        a[j] *= rng.uniform(0.3, 0.9)
    return a


def _support_leg(rng, a, pitch_deg, side):
    """Make leg ``side`` (0 right, 1 left) a standing leg: moderate hip/knee flexion, foot flat
    on the floor for the pelvis pitch (see :func:`_squat_angles`)."""
    hip, knee, ankle, toe = _LEG_DOFS[side]
    a[knee, 0] = rng.uniform(0, 70) if rng.uniform() < 0.7 else rng.uniform(70, 130)
    a[hip, 0] = -pitch_deg + a[knee, 0] * rng.uniform(0.3, 0.7) + rng.uniform(-10, 15)
    a[hip, 1] = rng.uniform(-5, 25)
    a[ankle, 0] = a[hip, 0] - a[knee, 0] + pitch_deg
    a[toe, 0] = rng.uniform(0, 10)


def _keyframe_times(rng, duration, slow=(0.5, 1.6), fast=(0.2, 0.6)):
    """Keyframe times covering ``duration`` seconds; each sequence has its own tempo and mixes
    slow moves, fast moves and holds."""
    tempo = rng.uniform(0.6, 1.5)
    times, tc = [0.0], 0.0
    while tc < duration + 1.0:
        r = rng.uniform()
        step = rng.uniform(*fast) if r < 0.3 else rng.uniform(*slow)
        tc += step * tempo
        times.append(tc)
    return np.array(times)


def _random_anchor(rng):
    # Anywhere in the region every camera sees: varied distances to each camera.
    r, ang = np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    return _REGION_CENTER + 0.8 * _REGION_RADII * r * np.array([np.cos(ang), np.sin(ang)])


def _freestyle(rng, t, body):
    """Upright everyday and sports motion from random keyframe postures: one or both legs
    standing (lunges, kicks, steps, squats), free arms (punches, reaches, stretches), trunk
    bends and twists, turns on the spot, occasional jumps."""
    n = len(t)
    duration = t[-1] + 1.0 / FPS
    times = _keyframe_times(rng, duration)
    k = len(times)
    poses = np.empty((k, 32, 3))
    pitch = np.empty(k)
    roll = np.empty(k)
    heading = np.empty(k)
    h = rng.uniform(-np.pi, np.pi)
    lift = np.zeros(n)
    for i in range(k):
        hold = i > 0 and rng.uniform() < 0.2
        if hold:
            poses[i], pitch[i], roll[i] = poses[i - 1], pitch[i - 1], roll[i - 1]
        else:
            a = _random_posture(rng)
            pitch[i] = rng.uniform(-10, 25) if rng.uniform() < 0.75 else rng.uniform(25, 60)
            roll[i] = rng.normal(0, 6)
            stance = rng.choice(3)  # 0 right leg stands, 1 left, 2 both
            for side in range(2):
                if stance in (side, 2):
                    _support_leg(rng, a, pitch[i], side)
            if stance == 2 and rng.uniform() < 0.5:
                a[list(_LEG_DOFS[1])] = a[list(_LEG_DOFS[0])]
            if rng.uniform() < 0.35:  # a strong trunk twist (and side bend), spread over the spine
                twist = rng.choice([-1.0, 1.0]) * rng.uniform(35, 90)
                a[[11, 12, 13], 2] = twist * np.array([0.3, 0.3, 0.4])
                a[[11, 12, 13], 1] = rng.uniform(-25, 25) * np.array([0.4, 0.3, 0.3])
            poses[i] = a
        turn = rng.normal(0, 0.5) if rng.uniform() < 0.8 else rng.uniform(-np.pi, np.pi)
        h += turn
        heading[i] = h
        if i > 0 and rng.uniform() < 0.12:  # a jump from this keyframe to the next
            t0 = times[i]
            hgt = rng.uniform(0.05, 0.35)
            tf = 2 * math.sqrt(2 * hgt / _G)
            fl = (t >= t0) & (t < t0 + tf)
            tau = (t[fl] - t0) / tf
            lift[fl] = 4 * hgt * tau * (1 - tau)
    a = np.radians(_keyframes(t, times, poses))
    a = _idle(rng, t, a, 1.5)
    return _Motion(a, _keyframes(t, times, heading), _deg(_keyframes(t, times, pitch)),
                   _deg(_keyframes(t, times, roll)), None, lift, _random_anchor(rng), contact="body")


# Floor-level states: (pelvis pitch range, pelvis roll range) in degrees and a posture shaper.
def _floor_state(rng, state):
    a = _random_posture(rng)
    pitch, roll = rng.uniform(-10, 20), rng.normal(0, 5)
    if state == "stand":
        for side in range(2):
            _support_leg(rng, a, pitch, side)
    elif state == "squat":  # deep squat / getting up from the floor
        pitch = rng.uniform(25, 50)
        for side in range(2):
            hip, knee, ankle, _ = _LEG_DOFS[side]
            a[knee, 0] = rng.uniform(110, 150)
            a[hip, 0] = rng.uniform(90, 125) - pitch * 0.3
            a[ankle, 0] = rng.uniform(-30, -10)
    elif state == "kneel":
        pitch = rng.uniform(-10, 40)
        for side in range(2):
            hip, knee, ankle, _ = _LEG_DOFS[side]
            one_knee_up = side == 0 and rng.uniform() < 0.4
            a[knee, 0] = rng.uniform(80, 100) if one_knee_up else rng.uniform(85, 150)
            a[hip, 0] = rng.uniform(70, 100) if one_knee_up else rng.uniform(-10, 40)
            a[ankle, 0] = rng.uniform(-10, 10) if one_knee_up else rng.uniform(30, 50)
    elif state == "sit":  # sitting on the floor, legs straight, crossed or bent
        pitch = rng.uniform(-30, 15)
        for side in range(2):
            hip, knee, _, _ = _LEG_DOFS[side]
            a[hip, 0] = rng.uniform(60, 120)
            a[knee, 0] = rng.uniform(0, 140)
    elif state == "crawl":  # hands and knees (or hands and feet)
        pitch = rng.uniform(65, 100)
        for side in range(2):
            hip, knee, ankle, _ = _LEG_DOFS[side]
            clav, sho, elb, _ = _ARM_DOFS[side]
            a[hip, 0] = rng.uniform(60, 110)
            a[knee, 0] = rng.uniform(70, 120)
            a[sho, 0] = rng.uniform(60, 110)
            a[sho, 1] = rng.uniform(0, 25)
            a[elb, 0] = rng.uniform(0, 25)
        a[13, 0] = rng.uniform(-30, 0)
    elif state in ("lie_back", "lie_front"):
        # Limbs move in or above the floor plane: on the back nothing extends backwards (the
        # knees bend only as far as the hips lift the thighs), on the front nothing flexes forwards.
        back = state == "lie_back"
        pitch, roll = (rng.uniform(-100, -80) if back else rng.uniform(80, 100)), rng.normal(0, 8)
        for side in range(2):
            hip, knee, _, _ = _LEG_DOFS[side]
            _, sho, _, _ = _ARM_DOFS[side]
            if back:
                a[hip, 0] = rng.uniform(0, 90) * rng.uniform() ** 2
                a[knee, 0] = min(a[knee, 0], 1.6 * a[hip, 0] + 5)
                a[sho, 0] = abs(a[sho, 0])
            else:
                a[hip, 0] = -rng.uniform(0, 20)
                a[sho, 0] = rng.choice([rng.uniform(-30, 0), rng.uniform(150, 180)])
        for j in (11, 12, 13):
            a[j, 0] = abs(a[j, 0]) * (0.3 if back else -0.3)
    else:  # lie on a side: the lower limbs stay near the body's plane
        pitch, roll = rng.uniform(-20, 30), rng.choice([-1, 1]) * rng.uniform(75, 95)
        for side in range(2):
            a[_LEG_DOFS[side][0], 1] = rng.uniform(-10, 15)
            a[_ARM_DOFS[side][1], 1] = rng.uniform(-10, 20)
        a[11:15, 1] *= 0.2
    return a, pitch, roll


_FLOOR_STATES = ("stand", "squat", "kneel", "sit", "crawl", "lie_back", "lie_front", "lie_side")


def _floor(rng, t, body):
    """Floor-level motion: a random walk over standing, squatting, kneeling, sitting, crawling
    and lying (back, front, side), with transitions between them (sitting down, lying down,
    getting up, rolling over) at varied speeds and small limb motion within each state."""
    duration = t[-1] + 1.0 / FPS
    times = _keyframe_times(rng, duration, slow=(0.6, 2.2), fast=(0.3, 0.8))
    k = len(times)
    poses, pitch, roll, heading = np.empty((k, 32, 3)), np.empty(k), np.empty(k), np.empty(k)
    state = rng.choice(_FLOOR_STATES)
    h = rng.uniform(-np.pi, np.pi)
    for i in range(k):
        if i > 0 and rng.uniform() < 0.45:
            state = rng.choice(_FLOOR_STATES)
        if i > 0 and state == "crawl" and rng.uniform() < 0.7:
            # crawling: swap the limbs' phases from the previous keyframe
            poses[i] = poses[i - 1].copy()
            for a_, b_ in (_LEG_DOFS, _ARM_DOFS):
                poses[i][list(a_)], poses[i][list(b_)] = poses[i - 1][list(b_)], poses[i - 1][list(a_)]
            pitch[i], roll[i] = pitch[i - 1], roll[i - 1]
        else:
            poses[i], pitch[i], roll[i] = _floor_state(rng, state)
        h += rng.normal(0, 0.4)
        heading[i] = h
    a = np.radians(_keyframes(t, times, poses))
    a = _idle(rng, t, a, 2.0)
    return _Motion(a, _keyframes(t, times, heading), _deg(_keyframes(t, times, pitch)),
                   _deg(_keyframes(t, times, roll)), None, np.zeros(len(t)), _random_anchor(rng), contact="body")


def _acrobatics(rng, t, body):
    """Whole-body rotations: forward/backward rolls and flips (pelvis pitch through 360 degrees,
    tucked), cartwheels (roll through 360 degrees, limbs spread), handstands and spins, with
    upright random postures in between."""
    n = len(t)
    duration = t[-1] + 1.0 / FPS
    times, poses, pitch, roll, heading = [0.0], [], [], [], []
    a0 = _random_posture(rng)
    for side in range(2):
        _support_leg(rng, a0, 0.0, side)
    p_acc, r_acc, h = 0.0, 0.0, rng.uniform(-np.pi, np.pi)
    poses.append(a0)
    pitch.append(0.0)
    roll.append(0.0)
    heading.append(h)
    lift = np.zeros(n)
    tc = 0.0
    while tc < duration + 1.0:
        kind = rng.choice(["roll", "flip", "cartwheel", "handstand", "spin", "pose"])
        d = rng.uniform(0.6, 1.8) if kind != "flip" else rng.uniform(0.5, 0.9)
        sign = rng.choice([-1.0, 1.0])
        a = _random_posture(rng)
        if kind in ("roll", "flip"):
            for side in range(2):
                hip, knee, _, _ = _LEG_DOFS[side]
                a[hip, 0], a[knee, 0] = rng.uniform(90, 125), rng.uniform(110, 150)
            steps = [(0.5, p_acc + sign * 180.0), (1.0, p_acc + sign * 360.0)]
            if kind == "flip":
                hgt = rng.uniform(0.3, 0.7)
                fl = (t >= tc) & (t < tc + d)
                tau = (t[fl] - tc) / d
                lift[fl] = 4 * hgt * tau * (1 - tau)
            for frac, p in steps:
                times.append(tc + frac * d)
                poses.append(a)
                pitch.append(p)
                roll.append(r_acc)
                heading.append(h)
            p_acc += sign * 360.0
        elif kind == "cartwheel":
            for side in range(2):
                hip, knee, _, _ = _LEG_DOFS[side]
                _, sho, elb, _ = _ARM_DOFS[side]
                a[hip, 1], a[knee, 0] = rng.uniform(25, 50), rng.uniform(0, 20)
                a[sho, 1], a[elb, 0] = rng.uniform(150, 180), rng.uniform(0, 15)
            for frac, r in ((0.25, 90.0), (0.5, 180.0), (0.75, 270.0), (1.0, 360.0)):
                times.append(tc + frac * d)
                poses.append(a)
                pitch.append(p_acc)
                roll.append(r_acc + sign * r)
                heading.append(h)
            r_acc += sign * 360.0
        elif kind == "handstand":
            for side in range(2):
                _, sho, elb, _ = _ARM_DOFS[side]
                a[sho, 0], a[elb, 0] = rng.uniform(160, 180), rng.uniform(0, 10)
            for frac, p in ((0.5, p_acc + sign * 180.0), (1.5, p_acc + sign * 180.0), (2.0, p_acc)):
                times.append(tc + frac * d)
                poses.append(a)
                pitch.append(p)
                roll.append(r_acc)
                heading.append(h)
            d *= 2.0
        else:  # spin on the spot, or a new upright pose
            for side in range(2):
                _support_leg(rng, a, 0.0, side)
            h += sign * (rng.uniform(np.pi, 2.5 * np.pi) if kind == "spin" else rng.uniform(0, 0.8))
            times.append(tc + d)
            poses.append(a)
            pitch.append(p_acc + rng.uniform(-5, 20))
            roll.append(r_acc)
            heading.append(h)
        tc += d + rng.uniform(0.1, 0.8)
        times.append(tc)
        poses.append(poses[-1])
        pitch.append(pitch[-1])
        roll.append(roll[-1])
        heading.append(heading[-1])
    times = np.array(times)
    a = np.radians(_keyframes(t, times, np.array(poses)))
    a = _idle(rng, t, a, 1.5)
    return _Motion(a, _keyframes(t, times, np.array(heading)), _deg(_keyframes(t, times, np.array(pitch))),
                   _deg(_keyframes(t, times, np.array(roll))), None, lift, _random_anchor(rng), contact="body")


_FAMILY_FUNCS = {
    "Walking": _walking,
    "Jogging": _jogging,
    "Waving": _waving,
    "Squats": _squats,
    "Reaching": _reaching,
    "Jumping": _jumping,
    "Boxing": _boxing,
    "Freestyle": _freestyle,
    "Floor": _floor,
    "Acrobatics": _acrobatics,
}


def _family(action: str) -> str:
    fam = action.split(" ")[0]
    if fam not in _FAMILY_FUNCS:
        raise ValueError(f"actions: {action!r} does not name a motion family; expected '<Family>' or '<Family> <n>' "
                         f"with Family one of {list(_FAMILY_FUNCS)}")
    return fam


# ----------------------------------------------------------------------------- assembly
def _stream(seed: int, *names, purpose: int) -> np.random.Generator:
    """Independent random stream keyed by (seed, names..., purpose), stable across runs/platforms."""
    keys = [zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *keys, purpose]))


def _subject_body(seed: int, subject: str) -> dict:
    rng = _stream(seed, subject, purpose=0)
    scale = rng.uniform(0.9, 1.1)
    offsets = body_offsets(rng, scale)
    leg = float(np.linalg.norm(offsets[2]) + np.linalg.norm(offsets[3]))
    return {"scale": scale, "offsets": offsets, "leg": leg}


def _animate(motion: _Motion, offsets: np.ndarray) -> np.ndarray:
    """Clip angles to the limits, run FK, put the feet on the floor; world positions (T, 32, 3)."""
    angles = np.clip(motion.angles, _LIMIT_LO, _LIMIT_HI)
    motion.angles = angles
    n = angles.shape[0]
    root_rot = _rot(2, motion.heading) @ _rot(1, motion.pitch) @ _rot(0, motion.roll)
    pos, rot = forward_kinematics(offsets, angles, root_rot, np.zeros((n, 3)))
    heel_off = _HEEL * (np.linalg.norm(offsets[4]) / np.linalg.norm(_BASE_OFFSETS[4]))
    heels = pos[:, [3, 8]] + np.einsum("tjab,b->tja", rot[:, [3, 8]], heel_off)
    feet = np.concatenate([pos[:, list(FOOT_JOINTS)], heels], axis=1)
    root = np.zeros((n, 3))
    if motion.contact == "body":
        root[:, 2] = -np.minimum(feet[..., 2].min(axis=1), pos[..., 2].min(axis=1)) + motion.lift
    else:
        root[:, 2] = -feet[..., 2].min(axis=1) + motion.lift
    if motion.root_xy is not None:
        root[:, :2] = motion.root_xy
    elif motion.contact == "body":
        root[:, :2] = motion.anchor - pos[:, :, :2].mean(axis=1)
    else:
        root[:, :2] = motion.anchor - 0.5 * (pos[:, 3, :2] + pos[:, 8, :2])
    return pos + root[:, None, :]


def _render(world: np.ndarray, cam: dict) -> np.ndarray:
    """World positions (T, 32, 3) -> pixel coordinates (T, 17, 2) of the kept joints."""
    kept = world[:, list(H36M_KEPT_JOINTS)].astype(np.float64)
    x_cam = cam_mod.world_to_camera(kept, R=cam["orientation"].astype(np.float64),
                                    t=cam["translation"].astype(np.float64))
    uv = cam_mod.project_to_2d(x_cam, cam["intrinsic"].astype(np.float64))
    return cam_mod.image_coordinates(uv, w=cam["res_w"], h=cam["res_h"])


# Detector noise: relative jitter per 17-joint keypoint (hips and extremities are harder).
_JITTER_SCALE = np.array([1.2, 1.3, 1.1, 1.25, 1.3, 1.1, 1.25, 1.0, 0.9, 0.8, 0.9, 1.0, 1.3, 1.6, 1.0, 1.3, 1.6])
_SWAP_GROUPS = (((2, 3), (5, 6)), ((15, 16), (12, 13)), ((1,), (4,)))  # legs, arms, hips: right <-> left


def _detect(rng, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detector-like keypoints and confidences from exact projections ``(T, 17, 2)`` pixels."""
    n, j, _ = clean.shape
    sigma = rng.uniform(1.5, 3.0) * _JITTER_SCALE[:, None]       # (17, 1) pixels
    rho = rng.uniform(0.5, 0.75)
    white = rng.standard_normal((n, j, 2))
    noise = np.empty_like(white)
    noise[0] = white[0]
    c = math.sqrt(1 - rho * rho)
    for i in range(1, n):
        noise[i] = rho * noise[i - 1] + c * white[i]
    noise *= sigma
    noise += rng.normal(0.0, 1.0, size=(1, j, 2))                # per-joint detector bias
    det = clean + noise
    conf = 0.95 * np.exp(-0.5 * (np.linalg.norm(noise, axis=-1) / (4 * sigma[:, 0])) ** 2)
    conf += rng.normal(0.0, 0.03, size=(n, j))
    # Occasional left/right confusions of a limb for a few frames (confidently wrong).
    for right, left in _SWAP_GROUPS:
        for _ in range(rng.poisson(0.6 * n / 500)):
            start = int(rng.integers(0, n))
            sl = slice(start, min(n, start + int(rng.integers(2, 9))))
            r, l = list(right), list(left)
            det[sl, r + l] = det[sl, l + r]
            conf[sl, r + l] = rng.uniform(0.45, 0.8, size=conf[sl, r + l].shape)
    # Rare outliers: a keypoint tens of pixels off, with a low score.
    out = rng.uniform(size=(n, j)) < 0.002
    k = int(out.sum())
    if k:
        ang = rng.uniform(0, 2 * np.pi, size=k)
        dist = rng.uniform(20, 80, size=k)
        det[out] += np.stack([np.cos(ang), np.sin(ang)], axis=-1) * dist[:, None]
        conf[out] = rng.uniform(0.05, 0.4, size=k)
    return det, np.clip(conf, 0.02, 1.0)


# Human3.6M-17 joints that COCO-17 has (H36M index -> COCO index), as in fastlift.train.infer.
_H36M_FROM_COCO = {1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 9: 0, 11: 5, 12: 7, 13: 9, 14: 6, 15: 8, 16: 10}
_HEAD_TOP_FACTOR = 0.95


def coco_derived_joints(kps: np.ndarray) -> np.ndarray:
    """Human3.6M-17 keypoints ``(..., 17, D)`` with pelvis (0), spine (7), thorax (8) and head top
    (10) replaced by what a COCO-17 detector's keypoints give after
    :func:`fastlift.train.infer.coco_to_h36m`: mid-hip, mid-point of pelvis and thorax,
    mid-shoulder, ``nose + 0.95 * (nose - thorax)``. Training on this makes the lifter's input
    match the video pipeline's (tests check the two stay identical)."""
    k = np.array(kps, dtype=np.float32, copy=True)
    if k.ndim < 2 or k.shape[-2] != 17:
        raise ValueError(f"keypoints: expected Human3.6M-17 keypoints of shape (..., 17, D), got shape {k.shape}")
    pelvis = (k[..., 1, :] + k[..., 4, :]) / 2
    thorax = (k[..., 11, :] + k[..., 14, :]) / 2
    k[..., 0, :] = pelvis
    k[..., 7, :] = (pelvis + thorax) / 2
    k[..., 8, :] = thorax
    k[..., 10, :] = k[..., 9, :] + _HEAD_TOP_FACTOR * (k[..., 9, :] - thorax)
    return k


@dataclass
class SyntheticData:
    """Generated data in the published layouts (in memory).

    Attributes:
        positions_3d: subject -> action -> ``(T, 32, 3)`` float32 world coordinates, metres
            (``z`` up, floor at ``z = 0``).
        cameras: subject -> list of 4 camera dicts in the 3D file's raw form (pixels, metres;
            see :func:`fastlift.data.io.check_camera_entry`), the subject's Human3.6M cameras.
        positions_2d_gt: subject -> action -> list of 4 ``(T, 17, 2)`` float32 exact projections
            (pixels) of the 17 kept joints.
        positions_2d_det: same, with detector-like noise.
        confidence_det: subject -> action -> list of 4 ``(T, 17)`` float32 scores in ``[0, 1]``.
        metadata: the 2D files' metadata (17-joint Human3.6M layout).
        joint_angles: subject -> action -> ``(T, 32, 3)`` float32 anatomical angles (flexion,
            abduction, twist; radians) after clipping to :data:`JOINT_LIMITS_DEG`.
        offsets: subject -> ``(32, 3)`` rest-pose bone offsets (metres, body axes).
        seed, fps: generation seed and frame rate (50).
    """

    positions_3d: dict
    cameras: dict
    positions_2d_gt: dict
    positions_2d_det: dict
    confidence_det: dict
    metadata: dict
    joint_angles: dict
    offsets: dict
    seed: int
    fps: int = FPS

    def sequences(self) -> list[tuple[str, str]]:
        return [(s, a) for s, acts in self.positions_3d.items() for a in acts]

    @property
    def num_frames(self) -> int:
        """Total 3D frames (each seen by 4 cameras)."""
        return int(sum(p.shape[0] for acts in self.positions_3d.values() for p in acts.values()))


def _check_names(values, name, allowed=None) -> list[str]:
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    try:
        out = [str(v) for v in values]
    except TypeError:
        raise ValueError(f"{name}: expected a list of names, got {values!r}") from None
    if not out:
        raise ValueError(f"{name}: expected at least one name, got {values!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: duplicate names in {out}")
    if allowed is not None:
        bad = [v for v in out if v not in allowed]
        if bad:
            raise ValueError(f"{name}: {bad} are not available; choose from {list(allowed)}")
    return out


def generate(seed: int = 0, subjects: Sequence[str] = SUBJECTS, actions: Sequence[str] = DEFAULT_ACTIONS,
             frames_per_action: int = DEFAULT_FRAMES, progress: bool = False) -> SyntheticData:
    """Generate the synthetic data set in memory.

    Args:
        seed: non-negative integer; the same seed gives identical arrays.
        subjects: Human3.6M subject names (their cameras are used), a subset of :data:`SUBJECTS`
            (S2-S4 have no published extrinsics).
        actions: names ``"<Family>"`` or ``"<Family> <n>"`` with Family in :data:`FAMILIES` or
            :data:`FREEFORM_FAMILIES`;
            repeats (``"Walking 1"``, ``"Walking 2"``) are different takes.
        frames_per_action: frames per sequence (50 fps); at least 50.
        progress: show a tqdm progress bar over the sequences.

    Returns:
        :class:`SyntheticData`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    if isinstance(frames_per_action, bool) or not isinstance(frames_per_action, (int, np.integer)) \
            or frames_per_action < 50:
        raise ValueError(f"frames_per_action: expected an integer >= 50 (one second at 50 fps), got {frames_per_action!r}")
    subjects = _check_names(subjects, "subjects", SUBJECTS)
    actions = _check_names(actions, "actions")
    for action in actions:
        _family(action)
    seed, n = int(seed), int(frames_per_action)
    t = np.arange(n) / FPS

    cameras_raw, cameras = {}, {}
    for s in subjects:
        cams = cam_mod.h36m_cameras(s)
        cameras[s] = cams
        cameras_raw[s] = [{k: v for k, v in c.items() if k != "intrinsic"} for c in cams]

    out3d, gt, det, conf, angles, offsets = {}, {}, {}, {}, {}, {}
    jobs = [(s, a) for s in subjects for a in actions]
    it = jobs
    if progress:
        from fastlift._optional import progress as _progress
        it = _progress(jobs, desc="synthesising", unit="seq")
    bodies = {s: _subject_body(seed, s) for s in subjects}
    for subject, action in it:
        body = bodies[subject]
        offsets[subject] = body["offsets"].astype(np.float32)
        rng = _stream(seed, subject, action, purpose=1)
        motion = _FAMILY_FUNCS[_family(action)](rng, t, body)
        world = _animate(motion, body["offsets"]).astype(np.float32)
        out3d.setdefault(subject, {})[action] = world
        angles.setdefault(subject, {})[action] = motion.angles.astype(np.float32)
        noise_rng = _stream(seed, subject, action, purpose=2)
        gts, dets, confs = [], [], []
        for cam in cameras[subject]:
            clean = _render(world, cam)
            d, c = _detect(noise_rng, clean)
            gts.append(clean.astype(np.float32))
            dets.append(d.astype(np.float32))
            confs.append(c.astype(np.float32))
        gt.setdefault(subject, {})[action] = gts
        det.setdefault(subject, {})[action] = dets
        conf.setdefault(subject, {})[action] = confs
    return SyntheticData(positions_3d=out3d, cameras=cameras_raw, positions_2d_gt=gt, positions_2d_det=det,
                         confidence_det=conf, metadata=_metadata(), joint_angles=angles, offsets=offsets, seed=seed)


def _metadata() -> dict:
    return {"layout_name": H36M_METADATA["layout_name"], "num_joints": H36M_METADATA["num_joints"],
            "keypoints_symmetry": [list(H36M_METADATA["keypoints_symmetry"][0]),
                                   list(H36M_METADATA["keypoints_symmetry"][1])]}


def write(out_dir, data: SyntheticData | None = None, *, progress: bool = False, coco_layout: bool = False,
          **generate_kwargs) -> dict[str, Path]:
    """Write the three ``.npz`` files (and ``manifest.json``) into ``out_dir``.

    Args:
        out_dir: directory (created if missing). Each file is written atomically.
        data: data from :func:`generate`; generated here from ``generate_kwargs`` (``seed``,
            ``subjects``, ``actions``, ``frames_per_action``) if None.
        progress: progress bar while generating.
        coco_layout: also write :data:`FILE_2D_DETCOCO` (key ``"detcoco"``), the ``det``
            keypoints through :func:`coco_derived_joints`.

    Returns:
        ``{"3d": path, "gt": path, "det": path, "manifest": path}`` (+ ``"detcoco"``).
    """
    if data is None:
        start = time.perf_counter()
        data = generate(progress=progress, **generate_kwargs)
        elapsed = time.perf_counter() - start
    elif generate_kwargs:
        raise ValueError(f"write: pass either data or generation arguments, not both (got {sorted(generate_kwargs)})")
    else:
        elapsed = None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "3d": save_positions_3d(out / FILE_3D, data.positions_3d, cameras=data.cameras),
        "gt": save_positions_2d(out / FILE_2D_GT, data.positions_2d_gt, data.metadata),
        "det": save_positions_2d(out / FILE_2D_DET, data.positions_2d_det, data.metadata,
                                 confidence=data.confidence_det),
    }
    if coco_layout:
        derived = {s: {a: [coco_derived_joints(c) for c in cams] for a, cams in acts.items()}
                   for s, acts in data.positions_2d_det.items()}
        paths["detcoco"] = save_positions_2d(out / FILE_2D_DETCOCO, derived, data.metadata,
                                             confidence=data.confidence_det)
    subjects = list(data.positions_3d)
    manifest = {
        "generator": "fastlift.data.synthetic",
        "version": VERSION,
        "seed": data.seed,
        "fps": data.fps,
        "subjects": subjects,
        "actions": list(next(iter(data.positions_3d.values()))),
        "frames_per_action": int(next(iter(next(iter(data.positions_3d.values())).values())).shape[0]),
        "frames": data.num_frames,
        "files": {k: p.name for k, p in paths.items()},
    }
    if elapsed is not None:
        manifest["generation_seconds"] = round(elapsed, 3)
    mpath = out / MANIFEST
    atomic_write_text(mpath, json.dumps(manifest, indent=2) + "\n")
    paths["manifest"] = mpath
    return paths


def default_data_dir(seed: int = 0) -> Path:
    """``$FASTLIFT_DATA`` if set, else ``~/.cache/fastlift/synthetic-v<VERSION>`` (with a
    ``-seed<S>`` suffix for seeds other than 0)."""
    env = os.environ.get("FASTLIFT_DATA")
    if env:
        return Path(env).expanduser()
    suffix = "" if seed == 0 else f"-seed{seed}"
    return Path.home() / ".cache" / "fastlift" / f"synthetic-v{VERSION}{suffix}"


def _is_complete(directory: Path, seed: int) -> bool:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("version") != VERSION or manifest.get("seed") != seed:
        return False
    if manifest.get("subjects") != list(SUBJECTS) or manifest.get("actions") != list(DEFAULT_ACTIONS) \
            or manifest.get("frames_per_action") != DEFAULT_FRAMES:
        return False
    return all((directory / f).is_file() for f in (FILE_3D, FILE_2D_GT, FILE_2D_DET))


def ensure_synthetic(data_dir=None, seed: int = 0, progress: bool = False) -> Path:
    """Directory holding the default synthetic set for ``seed``, generated only if missing.

    Args:
        data_dir: target directory; default :func:`default_data_dir`.
        seed: generation seed.
        progress: show a progress bar if generating.

    The set is complete when ``manifest.json`` names this generator version, seed and the
    default subjects/actions and the three files exist. A missing directory is generated in a
    temporary sibling directory and renamed into place (so concurrent callers never see a
    partial set; if another process wins the race its copy is used). An existing directory
    without a complete set gets the files written into it one by one (each atomically), the
    manifest last.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    target = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(int(seed))
    if _is_complete(target, int(seed)):
        return target
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"data_dir: {str(target)!r} exists and is not a directory")
    # The default set (module constants read now, so the defaults are what _is_complete checks).
    spec = {"seed": int(seed), "subjects": SUBJECTS, "actions": DEFAULT_ACTIONS, "frames_per_action": DEFAULT_FRAMES}
    if target.is_dir():
        write(target, progress=progress, **spec)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp, progress=progress, **spec)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target, int(seed)):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
