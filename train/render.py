"""``--render``: an animated side-by-side 2D input / 3D prediction / ground truth skeleton video.

:func:`render_from_args` follows ``run.py``'s render flow: lift the chosen video
(``--viz-subject``, ``--viz-action``, ``--viz-camera``) with test-time augmentation unless
``-no-tta``; add the trajectory model's prediction when the video has no ground truth and the
checkpoint has one; ``--viz-export`` saves the camera-space prediction (``(T, J, 3)`` float32
metres) as ``.npy``; ``--viz-output`` renders it. For rendering, the ground truth's trajectory is
added to both poses and they are moved to world space with the camera's extrinsics; without
ground truth the prediction is rotated upright with the camera's orientation and its lowest
point is put on the floor.

:func:`render_animation` draws with matplotlib (imported lazily; a clear error names the fix
if it is missing) one frame at a time, with a progress bar, straight into the encoder (bounded
memory): ``.gif`` frame by frame with pillow, ``.mp4`` through ffmpeg (on ``PATH``, or the binary
of the ``imageio-ffmpeg`` package in the ``viz`` extra). The output is written to a temporary
file and renamed into place.

Background video (``--viz-video``): a ``.gif`` or a folder of images is read with pillow; any
other file is decoded with ``ffprobe``/``ffmpeg`` (raw RGB frames through a pipe).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fastlift import camera as cam_mod
from fastlift._files import atomic_output
from fastlift._optional import require
from fastlift.skeleton import COCO_17, H36M_17, HUMANEVA_15

__all__ = ["render_from_args", "render_animation", "read_video_frames", "downsample_frames", "ffmpeg_exe"]

_LAYOUT_SKELETONS = {"h36m": H36M_17, "coco": COCO_17, "humaneva15": HUMANEVA_15}


def downsample_frames(x: np.ndarray, factor: int) -> np.ndarray:
    """Average every ``factor`` consecutive frames (axis 0); a trailing partial group is dropped."""
    if factor <= 1:
        return x
    n = x.shape[0] // factor
    return x[:n * factor].reshape(n, factor, *x.shape[1:]).mean(axis=1)


def read_video_frames(path, skip: int = 0, limit: Optional[int] = None) -> list[np.ndarray]:
    """RGB frames ``(H, W, 3)`` uint8 of a video: GIF / image folder via pillow, others via ffmpeg.

    ``skip`` frames are dropped from the start; at most ``limit`` frames are returned.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--viz-video: no such file or folder: {str(path)!r}")
    frames: list[np.ndarray] = []
    stop = None if limit is None or limit < 0 else skip + limit
    if path.is_dir() or path.suffix.lower() == ".gif":
        image = require("PIL.Image", "--viz-video (GIF or image folder)")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
            if not files:
                raise ValueError(f"--viz-video: folder {str(path)!r} has no .png/.jpg/.bmp images")
            for i, f in enumerate(files):
                if stop is not None and i >= stop:
                    break
                if i >= skip:
                    with image.open(f) as im:
                        frames.append(np.asarray(im.convert("RGB")))
        else:
            with image.open(path) as im:
                i = 0
                while stop is None or i < stop:
                    if i >= skip:
                        frames.append(np.asarray(im.convert("RGB")))
                    i += 1
                    try:
                        im.seek(i)
                    except EOFError:
                        break
        return frames
    ffprobe, ffmpeg = shutil.which("ffprobe"), shutil.which("ffmpeg")
    if ffprobe is None or ffmpeg is None:
        raise ValueError(f"--viz-video: decoding {path.suffix or 'this file'} needs ffmpeg and ffprobe on PATH (not "
                         f"found); install ffmpeg, or pass a .gif or a folder of images")
    probe = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=False)
    try:
        w, h = (int(v) for v in probe.stdout.strip().split(",")[:2])
    except ValueError:
        raise ValueError(f"--viz-video: ffprobe could not read the size of {str(path)!r}: {probe.stderr.strip()[:200]}") \
            from None
    proc = subprocess.Popen([ffmpeg, "-i", str(path), "-f", "image2pipe", "-pix_fmt", "rgb24", "-vsync", "0",
                             "-vcodec", "rawvideo", "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        i = 0
        while stop is None or i < stop:
            data = proc.stdout.read(w * h * 3)
            if len(data) < w * h * 3:
                break
            if i >= skip:
                frames.append(np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3))
            i += 1
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    return frames


def ffmpeg_exe() -> Optional[str]:
    """An ffmpeg executable: ``ffmpeg`` on PATH, else the one bundled with ``imageio-ffmpeg`` (the
    ``viz`` extra), else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):
        return None


class _Mp4Sink:
    """Frames piped to ffmpeg as raw RGB (H.264, yuv420p): memory stays at one frame."""

    def __init__(self, path: Path, width: int, height: int, fps: float, bitrate: int):
        exe = ffmpeg_exe()
        if exe is None:
            raise ValueError("--viz-output: writing .mp4 needs ffmpeg (not found on PATH; pip install imageio-ffmpeg, or "
                             "'fastlift[viz]'), or write a .gif")
        self.proc = subprocess.Popen(
            [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
             "-r", f"{fps:g}", "-i", "-", "-an", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264",
             "-pix_fmt", "yuv420p", "-b:v", f"{bitrate}k", "-f", "mp4", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def write(self, rgb: np.ndarray) -> None:
        self.proc.stdin.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())

    def close(self, ok: bool) -> None:
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode(errors="replace")
        rc = self.proc.wait()
        if ok and rc != 0:
            raise ValueError(f"--viz-output: ffmpeg failed (exit {rc}): {' '.join(err.split())[:200]}")


class _GifSink:
    """An animated GIF written frame by frame (memory stays at one frame): every frame is mapped
    onto one palette taken from the first frame (the figure's few flat colours)."""

    def __init__(self, path: Path, fps: float):
        self.image = require("PIL.Image", "--viz-output .gif")
        from PIL import GifImagePlugin

        self.gif = GifImagePlugin
        self.f = open(path, "wb")
        self.palette = None
        self.duration = int(round(1000 / fps))

    def write(self, rgb: np.ndarray) -> None:
        im = self.image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        if self.palette is None:
            self.palette = im.quantize(colors=256, method=self.image.Quantize.MEDIANCUT)
            header, _ = self.gif.getheader(self.palette, self.palette.getpalette(), {"loop": 0,
                                                                                    "duration": self.duration})
            for chunk in header:
                self.f.write(chunk)
        frame = im.quantize(palette=self.palette, dither=self.image.Dither.NONE)
        for chunk in self.gif.getdata(frame, (0, 0), duration=self.duration, disposal=1):
            self.f.write(chunk)

    def close(self, ok: bool) -> None:
        if ok:
            self.f.write(b";")  # GIF trailer
        self.f.close()


def render_animation(keypoints: np.ndarray, poses: dict, skeleton, fps: float, output, *, keypoints_layout="h36m",
                     azimuth: float = 70.0, viewport=(1000, 1002), bitrate: int = 3000, limit: int = -1,
                     downsample: int = 1, size: int = 5, video=None, video_skip: int = 0,
                     progress: Optional[bool] = None) -> Path:
    """Animate 2D keypoints next to one or more 3D pose sequences and write ``output``.

    Args:
        keypoints: ``(T, J_in, 2)`` image coordinates (pixels).
        poses: title -> ``(T, J, 3)`` world-space poses (metres, z up), e.g. ``{"Reconstruction":
            ..., "Ground truth": ...}``.
        skeleton: :class:`fastlift.skeleton.Skeleton` of the 3D poses (bones, left/right colours).
        fps: frame rate of the sequence (before ``downsample``).
        output: ``.gif`` (pillow) or ``.mp4`` (ffmpeg: on PATH or from ``imageio-ffmpeg``) path.
        keypoints_layout: 2D layout name (``h36m``, ``coco``, ``humaneva15``) for the 2D bones.
        azimuth: camera azimuth in degrees (view direction of the 3D panels).
        viewport: ``(width, height)`` of the 2D panel in pixels.
        bitrate: mp4 bitrate (kbit/s); limit: frames to render (-1: all); downsample: average
            every N frames (and divide fps by N); size: panel size in inches.
        video: optional background frames (list of ``(H, W, 3)`` uint8) for the 2D panel.
        video_skip: unused here (frames are already skipped by :func:`read_video_frames`); kept
            so callers can pass the flag through.
        progress: show a progress bar (default: when stderr is a terminal).

    Frames are drawn one at a time and handed straight to the encoder (ffmpeg's pipe, or a GIF
    written frame by frame), so memory does not grow with the number of frames. The file is
    written to a temporary name and renamed into place. Returns the written path.
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"--viz-output: expected a .gif or .mp4 file name, got {str(output)!r}")
    if suffix == ".mp4" and ffmpeg_exe() is None:
        raise ValueError("--viz-output: writing .mp4 needs ffmpeg (not found on PATH; pip install imageio-ffmpeg, or "
                         "'fastlift[viz]'), or write a .gif")
    if suffix == ".gif":
        require("PIL", "--viz-output .gif")
    matplotlib = require("matplotlib", "--render")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from fastlift._optional import progress as progress_bar

    keypoints = np.asarray(keypoints, dtype=np.float32)
    poses = {k: np.asarray(v, dtype=np.float32) for k, v in poses.items()}
    n = keypoints.shape[0]
    for title, p in poses.items():
        if p.shape[0] != n:
            raise ValueError(f"poses[{title!r}]: {p.shape[0]} frames, the keypoints have {n}")
    frames = list(video) if video is not None else None
    if limit is not None and limit > 0:
        n = min(n, limit)
    keypoints = keypoints[:n]
    poses = {k: v[:n] for k, v in poses.items()}
    if frames is not None:
        frames = frames[:n]
    if downsample > 1:
        keypoints = downsample_frames(keypoints, downsample)
        poses = {k: downsample_frames(v, downsample) for k, v in poses.items()}
        if frames is not None:
            frames = [f.astype(np.uint8) for f in downsample_frames(np.stack(frames).astype(np.float32), downsample)]
        fps = fps / downsample
        n = keypoints.shape[0]
    if n < 1:
        raise ValueError("--render: no frames left to render (check --viz-limit / --viz-downsample)")

    fig = plt.figure(figsize=(size * (1 + len(poses)), size), dpi=80)
    ax_in = fig.add_subplot(1, 1 + len(poses), 1)
    ax_in.get_xaxis().set_visible(False)
    ax_in.get_yaxis().set_visible(False)
    ax_in.set_axis_off()
    title_style = {"fontsize": 14, "fontweight": "bold", "ha": "center", "va": "top"}
    w, h = viewport
    ax_in.set_xlim(0, w)
    ax_in.set_ylim(h, 0)
    ax_in.set_aspect("equal")
    image = None
    if frames:
        image = ax_in.imshow(frames[0], extent=(0, frames[0].shape[1], frames[0].shape[0], 0), aspect="equal")
    kskel = _LAYOUT_SKELETONS.get(keypoints_layout)
    lines_2d = []
    if kskel is not None and kskel.num_joints == keypoints.shape[1]:
        for j, parent in enumerate(kskel.parents):
            if parent >= 0:
                (ln,) = ax_in.plot(*keypoints[0, [j, parent]].T, color="pink", lw=2)
                lines_2d.append((ln, j, parent))
    points = ax_in.scatter(*keypoints[0].T, 10, color="red", edgecolors="white", zorder=10)

    radius = 1.7
    axes_3d, lines_3d = [], []
    left = set(skeleton.joints_left)
    for i, (title, p) in enumerate(poses.items()):
        ax = fig.add_subplot(1, 1 + len(poses), i + 2, projection="3d")
        ax.view_init(elev=15.0, azim=azimuth)
        ax.set_zlim3d([0, radius])
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
        ls = []
        for j, parent in enumerate(skeleton.parents):
            if parent < 0:
                continue
            color = "red" if j in left else "black"
            (ln,) = ax.plot([p[0, j, 0], p[0, parent, 0]], [p[0, j, 1], p[0, parent, 1]],
                            [p[0, j, 2], p[0, parent, 2]], zdir="z", c=color)
            ls.append((ln, j, parent))
        axes_3d.append((ax, p))
        lines_3d.append(ls)
    # Panel titles as figure text in a reserved top band (3D axes titles get clipped by their box).
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.1, top=0.88, wspace=0.05)
    for ax, title in zip([ax_in] + [a for a, _ in axes_3d], ["Input (2D keypoints)", *poses]):
        box = ax.get_position()
        fig.text((box.x0 + box.x1) / 2, 0.97, title, **title_style)
    fig.legend(handles=[Line2D([], [], color="red", lw=2, label="left side of the body"),
                        Line2D([], [], color="black", lw=2, label="right side and spine"),
                        Line2D([], [], color="pink", lw=2, marker="o", markerfacecolor="red", label="2D input")],
               loc="lower center", ncol=3, fontsize=11, frameon=False)

    def update(i):
        if image is not None:
            image.set_data(frames[min(i, len(frames) - 1)])
        for ln, j, parent in lines_2d:
            ln.set_data(keypoints[i, [j, parent], 0], keypoints[i, [j, parent], 1])
        points.set_offsets(keypoints[i])
        for (ax, p), ls in zip(axes_3d, lines_3d):
            root = p[i, 0]
            ax.set_xlim3d([-radius / 2 + root[0], radius / 2 + root[0]])
            ax.set_ylim3d([-radius / 2 + root[1], radius / 2 + root[1]])
            for ln, j, parent in ls:
                ln.set_data_3d([p[i, j, 0], p[i, parent, 0]], [p[i, j, 1], p[i, parent, 1]],
                               [p[i, j, 2], p[i, parent, 2]])

    import sys

    show = sys.stderr.isatty() if progress is None else progress
    try:
        fig.canvas.draw()
        width, height = fig.canvas.get_width_height()
        with atomic_output(output, suffix=suffix) as tmp:
            sink = _Mp4Sink(tmp, width, height, fps, bitrate) if suffix == ".mp4" else _GifSink(tmp, fps)
            ok = False
            try:
                for i in progress_bar(range(n), total=n, desc=f"rendering {output.name}", unit="frame",
                                      disable=not show):
                    update(i)
                    fig.canvas.draw()
                    sink.write(np.asarray(fig.canvas.buffer_rgba())[..., :3])
                ok = True
            finally:
                sink.close(ok)
    finally:
        plt.close(fig)
    return output


def render_from_args(args, exp, models, log=print) -> dict:
    """``run.py --render``: lift, export and/or animate one video of ``exp`` (see the module docstring)."""
    from fastlift.data.io import DataKeyError
    from fastlift.train.evaluate import SequenceSet

    kp, ds = exp.keypoints, exp.dataset
    subject, action, cam_idx = args.viz_subject, args.viz_action, args.viz_camera
    if subject not in kp.positions:
        raise DataKeyError(f"--viz-subject: {subject!r} is not in the 2D keypoints (subjects: {kp.subjects()})")
    if action not in kp.positions[subject]:
        raise DataKeyError(f"--viz-action: subject {subject!r} has no action {action!r} "
                           f"(actions: {list(kp.positions[subject])})")
    cams_2d = kp.positions[subject][action]
    if cam_idx >= len(cams_2d) or cams_2d[cam_idx] is None:
        raise ValueError(f"--viz-camera: {subject}/{action} has {len(cams_2d)} camera(s), camera {cam_idx} has no "
                         f"keypoints")
    input_keypoints = np.asarray(cams_2d[cam_idx], dtype=np.float32).copy()
    ground_truth = None
    if ds.has_3d(subject, action):
        ground_truth = ds.positions_3d(subject, action)[cam_idx].copy()
    else:
        log("INFO: this action is unlabeled. Ground truth will not be rendered.")
    mp, mt = models["model_pos"], models.get("model_traj")
    mp.eval()
    pad = (mp.receptive_field() - 1) // 2
    dev = torch.device(args.device)
    seqset = SequenceSet([input_keypoints], pad=pad, causal_shift=pad if args.causal else 0, kps_left=exp.kps_left,
                         kps_right=exp.kps_right, device=dev)
    ac = torch.bfloat16 if args.precision == "bf16" else None
    prediction = seqset.predict_tta(mp, (exp.joints_left, exp.joints_right), args.test_time_augmentation,
                                    args.eval_frames, ac).cpu().numpy()
    if mt is not None and ground_truth is None:
        mt.eval()
        prediction = prediction + seqset.predict_tta(mt, None, args.test_time_augmentation, args.eval_frames,
                                                     ac).cpu().numpy()
    out: dict = {}
    if args.viz_export:
        path = Path(args.viz_export)
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"Exporting joint positions to {path}")
        np.save(path, prediction.astype(np.float32))
        out["export"] = str(path if path.suffix == ".npy" else path.with_name(path.name + ".npy"))
    if args.viz_output:
        cams = ds.cameras(subject)
        cam = cams[cam_idx]
        if ground_truth is not None:
            trajectory = ground_truth[:, :1]
            ground_truth[:, 1:] += trajectory
            prediction = prediction + trajectory
            prediction = cam_mod.camera_to_world(prediction, R=cam["orientation"], t=cam["translation"])
            ground_truth = cam_mod.camera_to_world(ground_truth, R=cam["orientation"], t=cam["translation"])
        else:
            rot = cam.get("orientation")
            if rot is None:  # borrow the orientation of the same camera of a subject that has one
                for other in ds.cameras().values():
                    if cam_idx < len(other) and "orientation" in other[cam_idx]:
                        rot = other[cam_idx]["orientation"]
                        break
            if rot is None:
                raise ValueError(f"--render: no camera orientation known for camera {cam_idx}; cannot draw upright")
            prediction = np.asarray(cam_mod.camera_to_world(prediction, R=rot, t=np.zeros(3, dtype=np.float32)))
            prediction[:, :, 2] -= np.min(prediction[:, :, 2])  # no trajectory: rebase the height
        anim = {"Reconstruction": np.asarray(prediction)}
        if ground_truth is not None and not args.viz_no_ground_truth:
            anim["Ground truth"] = np.asarray(ground_truth)
        w, h = int(cam["res_w"]), int(cam["res_h"])
        kps_img = np.asarray(cam_mod.image_coordinates(input_keypoints[..., :2], w=w, h=h))
        video = None
        if args.viz_video:
            limit = args.viz_limit * max(args.viz_downsample, 1) if args.viz_limit > 0 else None
            video = read_video_frames(args.viz_video, skip=args.viz_skip, limit=limit)
        fps = float(ds.fps) if ds.fps else 30.0
        path = render_animation(kps_img, anim, ds.skeleton(), fps, args.viz_output, keypoints_layout=exp.layout_name,
                                azimuth=float(cam.get("azimuth", 70.0)), viewport=(w, h), bitrate=args.viz_bitrate,
                                limit=args.viz_limit, downsample=args.viz_downsample, size=args.viz_size, video=video,
                                progress=getattr(args, "progress", None))
        log(f"Wrote {path}")
        out["output"] = str(path)
    return out
