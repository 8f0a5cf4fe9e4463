"""Synthetic presentation attacks and bona fide sequences for ``edged bench liveness``.

Everything is rendered in memory (no image is written anywhere) and is deterministic for a seed:
each generator draws from its own ``numpy.random.Generator(PCG64(seed))``. Every generator returns
a list of RGB uint8 frames (one for a still, ``frames`` for a sequence at ``FPS``).

- ``print_attack``: a photograph printed on paper (resampled to a print resolution with a halftone
  screen, the paper's gamut: lower contrast, a raised black, a tinted white point, less saturation,
  the paper's texture), held as a sheet in a scene (its white margin visible, or the sheet filling
  the view), tilted and bent (a cylindrical bend: a non-planar warp) and, for sequences, moved by a
  smooth series of poses (the sheet in front of the camera: one homography per frame when flat).
- ``screen_attack``: the photograph shown on a phone or tablet screen (an RGB sub-pixel grid sampled
  by the camera without a low-pass filter: moiré; the display's gamma, black level and cool white;
  a soft reflection fixed in the room while the screen moves; a bezel or none), still or moving.
- ``head_turn``: a bona fide sequence re-rendered from a still with the face mesh's depth: the 468
  mesh points (``Mesh.points``, x, y, z in pixels) turn about a vertical axis behind the face, are
  projected again, and the image is warped piecewise-affinely over a triangulation of the mesh, a
  ring around the head and the image border: the nose moves relative to the face outline as in a
  real head turn, the background stays.
- ``video_frames`` / ``windows``: a real video decoded in memory, cut into consecutive windows.

What these do not model: masks, good video replays (a screen showing a moving, turning face),
the real camera's own capture of a print or a screen (its optics, exposure and noise) — see
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from scipy.spatial import Delaunay  # type: ignore[import-untyped]

from edged.types import Box, ImageRGB

__all__ = [
    "FPS",
    "FRAME_SIZE",
    "head_turn",
    "portrait",
    "print_attack",
    "screen_attack",
    "video_frames",
    "windows",
]

FPS = 10.0
"""Frame rate of the generated sequences (frames are ``1 / FPS`` apart)."""
FRAME_SIZE = (640, 480)
"""Width and height of the attack frames: the door camera's usual resolution."""
_PRINT_TEXELS = 480  # texture pixels across a printed photograph
_FOCAL = 600.0  # pinhole focal length in pixels for a 640-pixel-wide frame (≈ 56° across)

Array = npt.NDArray[np.float64]


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def portrait(image: ImageRGB, box: Box, scale: float = 2.6) -> ImageRGB:
    """The square head-and-shoulders crop around a face box (``scale`` × its longer side, the face a
    little above the centre), padded by replicating the border where it leaves the image."""
    side = scale * max(box.width, box.height)
    cx, cy = box.center
    x1, y1 = round(cx - side / 2), round(cy - side * 0.45)
    x2, y2 = x1 + round(side), y1 + round(side)
    h, w = image.shape[:2]
    padded = cv2.copyMakeBorder(
        np.ascontiguousarray(image),
        max(0, -y1),
        max(0, y2 - h),
        max(0, -x1),
        max(0, x2 - w),
        cv2.BORDER_REPLICATE,
    )
    ox, oy = max(0, -x1), max(0, -y1)
    return np.ascontiguousarray(padded[y1 + oy : y2 + oy, x1 + ox : x2 + ox])


# ---------------------------------------------------------------------------------------------------
# geometry: a piecewise-affine warp, poses of a sheet in front of a pinhole camera


def _maps(
    src_points: Array, dst_points: Array, triangles: npt.NDArray[np.int64], size: tuple[int, int]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """For each pixel of a ``size`` (width, height) image: where it comes from in the source (an
    affine map per triangle, ``dst_points`` → ``src_points``) and whether any triangle covers it.
    Triangles are painted in the given order: later ones cover earlier ones (list far ones first)."""
    width, height = size
    src = src_points[triangles]  # (T, 3, 2)
    dst = dst_points[triangles]
    dst_h = np.concatenate([dst, np.ones((*dst.shape[:2], 1))], axis=2)
    keep = np.abs(np.linalg.det(dst_h)) > 1e-6
    affine = np.zeros((len(triangles), 3, 2))
    affine[keep] = np.linalg.solve(dst_h[keep], src[keep])  # [x y 1] @ affine → source x, y
    index = np.full((height, width), -1, np.int32)
    for t in np.flatnonzero(keep):
        cv2.fillConvexPoly(index, np.round(dst[t] * 16).astype(np.int32), int(t), cv2.LINE_8, 4)
    ys, xs = np.nonzero(index >= 0)
    m = affine[index[ys, xs]]
    map_x = np.full((height, width), -1.0, np.float32)
    map_y = np.full((height, width), -1.0, np.float32)
    map_x[ys, xs] = m[:, 0, 0] * xs + m[:, 1, 0] * ys + m[:, 2, 0]
    map_y[ys, xs] = m[:, 0, 1] * xs + m[:, 1, 1] * ys + m[:, 2, 1]
    return map_x, map_y, index >= 0


def warp_triangles(
    source: ImageRGB,
    src_points: Array,
    dst_points: Array,
    triangles: npt.NDArray[np.int64],
    size: tuple[int, int],
) -> tuple[ImageRGB, npt.NDArray[np.bool_]]:
    """``source`` warped piecewise-affinely so that each triangle of ``src_points`` lands on the same
    triangle of ``dst_points``, in a ``size`` image (bilinear, no low-pass filter: a fine pattern
    aliases as a camera sensor aliases it); with the mask of the pixels the triangles cover."""
    map_x, map_y, mask = _maps(src_points, dst_points, triangles, size)
    warped = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(warped, np.uint8), mask


@dataclass(frozen=True, slots=True)
class Pose:
    """A sheet's pose: rotations (radians: about the vertical axis, the horizontal axis, the view
    axis), the offset of its centre from the frame centre (pixels at the nominal distance) and its
    distance as a multiple of the nominal one (1 = the texture's scale as chosen)."""

    yaw: float
    pitch: float
    roll: float
    dx: float
    dy: float
    distance: float


def _rotation(yaw: float, pitch: float, roll: float) -> Array:
    cy, sy, cp, sp, cr, sr = (
        math.cos(yaw),
        math.sin(yaw),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(roll),
        math.sin(roll),
    )
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return np.asarray(rz @ rx @ ry, np.float64)


def _poses(rng: np.random.Generator, frames: int, tilt: float, move: float) -> list[Pose]:
    """A smooth random series of sheet poses: key poses every ~4 frames, eased between (a hand moving
    a sheet or a phone). ``tilt``: largest yaw/pitch (radians); ``move``: largest offset (pixels)."""
    keys = max(2, math.ceil(frames / 4) + 1)

    def key() -> Array:
        return np.array(
            [
                rng.uniform(-tilt, tilt),
                rng.uniform(-tilt, tilt) * 0.7,
                rng.uniform(-0.15, 0.15),
                rng.uniform(-move, move),
                rng.uniform(-move, move) * 0.6,
                rng.uniform(0.85, 1.15),
            ]
        )

    values = np.stack([key() for _ in range(keys)])
    poses = []
    for f in range(frames):
        s = f / max(frames - 1, 1) * (keys - 1)
        k = min(int(s), keys - 2)
        u = s - k
        w = (1 - math.cos(math.pi * u)) / 2  # ease in and out between key poses
        v = values[k] * (1 - w) + values[k + 1] * w
        poses.append(Pose(*(float(x) for x in v)))
    return poses


def _render_sheet(
    texture: ImageRGB, background: ImageRGB, pose: Pose, scale: float, bend: float
) -> tuple[ImageRGB, npt.NDArray[np.bool_]]:
    """The texture as a sheet under ``pose`` over the background, ray-cast exactly for each pixel
    (a flat sheet: exactly one homography of the texture), with the sheet's mask. The sheet is
    ``scale`` frame pixels per texture pixel at the nominal distance; ``bend`` > 0 bends it around
    a vertical cylinder (its arc over the width, radians; the edges away from the camera). Shaded
    by the angle between the surface and the view (a bent sheet's sides darken)."""
    th, tw = texture.shape[:2]
    height, width = background.shape[:2]
    f = _FOCAL * width / 640
    rotation = _rotation(pose.yaw, pose.pitch, pose.roll)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    # each pixel's ray from the camera centre, in the sheet's frame (p_camera = R p_sheet + T)
    rays = np.stack([(xs - width / 2) / f, (ys - height / 2) / f, np.ones_like(xs)], axis=-1) @ rotation
    origin = -rotation.T @ np.array([pose.dx, pose.dy, f * pose.distance])
    dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        if bend < 1e-3:
            t = -origin[2] / dz
            x = origin[0] + t * dx
            phi = np.zeros_like(x)
        else:
            radius = tw * scale / bend  # the cylinder x² + (z - r)² = r², its front at z = 0
            oz = origin[2] - radius
            a = dx**2 + dz**2
            b = 2 * (origin[0] * dx + oz * dz)
            c = origin[0] ** 2 + oz**2 - radius**2
            t = (-b - np.sqrt(b**2 - 4 * a * c)) / (2 * a)
            phi = np.arctan2(origin[0] + t * dx, -(oz + t * dz))
            x = radius * phi  # the arc length along the sheet
        y = origin[1] + t * dy
        u = x / scale + (tw - 1) / 2
        v = y / scale + (th - 1) / 2
        mask = (t > 0) & (u >= 0) & (u <= tw - 1) & (v >= 0) & (v <= th - 1)
    map_x = np.where(mask, u, -1).astype(np.float32)
    map_y = np.where(mask, v, -1).astype(np.float32)
    warped = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    frame = background.astype(np.float32)
    shade = 0.8 + 0.2 * np.cos(phi[mask] + pose.yaw)
    frame[mask] = warped[mask].astype(np.float32) * shade[:, None]
    return np.clip(frame, 0, 255).astype(np.uint8), mask


# ---------------------------------------------------------------------------------------------------
# the scene and the camera


def background(rng: np.random.Generator, size: tuple[int, int]) -> ImageRGB:
    """A room behind the attacker: a wall with a lighting gradient, a door frame or a shelf, some
    texture; smooth, with no face."""
    width, height = size
    wall = rng.uniform(90, 200, 3) * rng.uniform(0.85, 1.0, 3)
    xs, ys = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, height))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = 1 + 0.25 * (xs * math.cos(angle) + ys * math.sin(angle))
    image = ramp[..., None] * wall
    for _ in range(int(rng.integers(1, 4))):
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x2, y2 = x1 + int(rng.integers(30, width // 2)), y1 + int(rng.integers(30, height))
        colour = rng.uniform(30, 230, 3)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour.tolist(), -1)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 6)
    image = image * (1 + 0.6 * noise[..., None] / (noise.std() + 1e-6) * 0.05)
    return np.asarray(np.clip(cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.5), 0, 255), np.uint8)


def camera(rng: np.random.Generator, frame: ImageRGB, blur: float, noise: float) -> ImageRGB:
    """The door camera's capture: optical blur (Gaussian, ``blur`` pixels) and sensor noise (``noise``
    grey levels, a little more in the dark)."""
    out = np.asarray(frame, np.float32)
    if blur > 0:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), blur), np.float32)
    sigma = noise * (1.3 - out / 255 * 0.6)
    noisy = out + rng.normal(0, 1, out.shape) * sigma
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# print attacks


def _printed(photo: ImageRGB, rng: np.random.Generator, margin: float) -> ImageRGB:
    """The photograph as printed on paper: resampled at the printer's resolution with a halftone
    screen, in the paper's gamut (lower contrast, raised black, tinted white, less saturation), with
    the paper's fibre texture and, when ``margin`` > 0, a white border of that fraction per side."""
    h, w = photo.shape[:2]
    target = _PRINT_TEXELS
    img = cv2.resize(photo, (target, round(target * h / w)), interpolation=cv2.INTER_AREA)
    # printer resolution: the photo resampled coarser, then rendered back with a halftone screen
    dpi = rng.uniform(0.35, 0.7)
    small = cv2.resize(img, None, fx=dpi, fy=dpi, interpolation=cv2.INTER_AREA)
    img_f = cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    period = rng.uniform(2.5, 4.0)
    angle = rng.uniform(0, math.pi / 2)
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32)
    u = (xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period
    v = (-xs * math.sin(angle) + ys * math.cos(angle)) * 2 * math.pi / period
    screen = (np.cos(u) * np.cos(v))[..., None]
    img_f = img_f + rng.uniform(6, 16) * screen * (1 - np.abs(img_f / 127.5 - 1))
    # the paper's gamut
    grey = img_f.mean(axis=2, keepdims=True)
    img_f = grey + (img_f - grey) * rng.uniform(0.55, 0.85)
    gamma = rng.uniform(0.85, 1.2)
    img_f = 255 * np.clip(img_f / 255, 0, 1) ** gamma
    white = rng.uniform(205, 240) * (1 + rng.uniform(-0.04, 0.04, 3))
    black = rng.uniform(25, 55)
    img_f = black + (white - black) * img_f / 255
    # the sheet: the paper around the photo
    pad_y, pad_x = round(img.shape[0] * margin), round(img.shape[1] * margin)
    sheet = np.empty((img.shape[0] + 2 * pad_y, img.shape[1] + 2 * pad_x, 3), np.float32)
    sheet[:] = white * 1.03
    sheet[pad_y : pad_y + img.shape[0], pad_x : pad_x + img.shape[1]] = img_f
    # fibre texture: low-frequency mottle and fine grain
    mottle = cv2.GaussianBlur(rng.normal(0, 1, sheet.shape[:2]).astype(np.float32), (0, 0), rng.uniform(2, 5))
    mottle /= mottle.std() + 1e-6
    grain = rng.normal(0, 1, sheet.shape[:2]).astype(np.float32)
    sheet *= (1 + rng.uniform(0.015, 0.04) * mottle + 0.015 * grain)[..., None]
    return np.clip(sheet, 0, 255).astype(np.uint8)


def print_attack(
    photo: ImageRGB,
    seed: int,
    frames: int = 1,
    size: tuple[int, int] = FRAME_SIZE,
    bend: float | None = None,
) -> list[ImageRGB]:
    """A printed photograph held in front of the camera: ``frames`` == 1 is a still, more is a
    sequence (``FPS``) of the sheet moved and tilted by hand. ``photo``: a head-and-shoulders
    portrait (``portrait``), the face about 1/2.6 of its width. ``bend``: the sheet's arc in radians
    (0: flat); None draws it from the seed (flat 40 % of the time, else up to 1.2)."""
    rng = _rng(seed)
    width = size[0]
    border = bool(rng.random() < 0.6)
    sheet = _printed(photo, rng, rng.uniform(0.06, 0.15) if border else 0.0)
    face_px = rng.uniform(0.22, 0.34) * width if border else rng.uniform(0.4, 0.5) * width
    scale = face_px * 2.6 / _PRINT_TEXELS
    drawn = float(rng.uniform(0.0, 1.2)) if rng.random() < 0.6 else 0.0
    bend = drawn if bend is None else bend
    scene = background(rng, size)
    tilt = math.radians(rng.uniform(8, 25))
    poses = _poses(rng, frames, tilt, 0.08 * width)
    blur, noise = rng.uniform(0.4, 1.0), rng.uniform(1.0, 3.0)
    out = []
    for pose in poses:
        frame, _ = _render_sheet(sheet, scene, pose, scale, bend)
        out.append(camera(rng, frame, blur, noise))
    return out


# ---------------------------------------------------------------------------------------------------
# screen replay


def _subpixels(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """One screen pixel as a 3 × 3 × 3 pattern of light: three vertical RGB stripes, the bottom row
    dimmer (the black matrix between rows), at a random contrast (how much of the grid the camera's
    pixels and lens let through), normalised to a mean of 1 per channel."""
    pattern = np.full((3, 3, 3), 0.15, np.float32)
    for c in range(3):
        pattern[:, c, c] = 1.0
    pattern[2] *= 0.5
    pattern /= pattern.mean(axis=(0, 1), keepdims=True)
    return np.asarray(1 + rng.uniform(0.35, 0.8) * (pattern - 1), np.float32)


def _displayed(photo: ImageRGB, rng: np.random.Generator, pixels: int, bezel: bool) -> ImageRGB:
    """The photograph as a screen ``pixels`` wide shows it (its gamma, black level, cool white and
    saturation), each screen pixel drawn as its 3 × 3 sub-pixels, in a bezel or none."""
    h, w = photo.shape[:2]
    img = cv2.resize(photo, (pixels, round(pixels * h / w)), interpolation=cv2.INTER_AREA).astype(np.float32)
    img = np.asarray(255 * (img / 255) ** rng.uniform(0.8, 1.25), np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(1.0, 1.25)
    white = np.array([rng.uniform(0.88, 0.97), rng.uniform(0.95, 1.0), 1.0]) * rng.uniform(0.85, 1.0)
    black = rng.uniform(10, 35)
    img = black + np.clip(img, 0, 255) * white * (255 - black) / 255
    pattern = np.tile(_subpixels(rng) * 0.8, (img.shape[0], img.shape[1], 1))
    texture = np.repeat(np.repeat(np.clip(img, 0, 255).astype(np.uint8), 3, axis=0), 3, axis=1)
    texture = cv2.multiply(texture, pattern, dtype=cv2.CV_8U)
    if bezel:
        pad = round(texture.shape[1] * rng.uniform(0.03, 0.08))
        body = rng.uniform(10, 45)
        texture = cv2.copyMakeBorder(
            texture, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(body, body, body)
        )
    return np.asarray(texture, np.uint8)


def _reflection(rng: np.random.Generator, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """A soft highlight in the room's frame: a linear gradient and a blurred bright patch (a window
    seen in the glass), 0..1."""
    width, height = size
    xs, ys = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, height))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip(0.5 + 0.5 * (xs * math.cos(angle) + ys * math.sin(angle)), 0, 1)
    cx, cy = rng.uniform(-0.6, 0.6, 2)
    sx, sy = rng.uniform(0.2, 0.5, 2)
    blob = np.exp(-(((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2))
    return np.asarray(0.5 * ramp + 0.7 * blob, np.float32)


def screen_attack(
    photo: ImageRGB, seed: int, frames: int = 1, size: tuple[int, int] = FRAME_SIZE
) -> list[ImageRGB]:
    """A phone or tablet showing the photograph, held in front of the camera: a still (``frames``
    == 1) or a sequence of the screen moved and tilted. The sub-pixel grid is sampled by the camera
    without a low-pass filter (moiré); the reflection stays in the room while the screen moves."""
    rng = _rng(seed)
    width = size[0]
    bezel = bool(rng.random() < 0.6)
    face_px = rng.uniform(0.22, 0.36) * width
    # screen pixels per camera pixel: 1.2–2.5 (a phone's or a tablet's pixel pitch at hand distance)
    pixels = round(face_px * 2.6 * rng.uniform(1.2, 2.5))
    texture = _displayed(photo, rng, pixels, bezel)
    scale = face_px * 2.6 / (3 * pixels)
    scene = (background(rng, size).astype(np.float32) * rng.uniform(0.5, 0.9)).astype(np.uint8)
    reflection = _reflection(rng, size) * rng.uniform(40, 90)
    poses = _poses(rng, frames, math.radians(rng.uniform(8, 25)), 0.08 * width)
    blur, noise = rng.uniform(0.3, 0.8), rng.uniform(1.0, 3.0)
    out = []
    for pose in poses:
        frame, mask = _render_sheet(texture, scene, pose, scale, 0.0)
        lit = frame.astype(np.float32)
        lit[mask] += reflection[mask][:, None]
        out.append(camera(rng, np.clip(lit, 0, 255).astype(np.uint8), blur, noise))
    return out


# ---------------------------------------------------------------------------------------------------
# bona fide: a head turn re-rendered from a still, and a real video


def head_turn(
    image: ImageRGB,
    mesh_points: npt.NDArray[np.float32],
    seed: int,
    frames: int = 12,
    max_yaw_deg: float = 20.0,
) -> list[ImageRGB]:
    """A live subject turning their head, re-rendered from one still with the face mesh's depth:
    the mesh points (468 × 3, ``Mesh.points`` of the face in ``image``) turn about a vertical axis
    behind the face (at the depth of the cheeks' outline plus a fifth of the face width), so the
    nose moves against the outline; a ring around the head follows the turn only in width, the
    image border stays. The yaw goes to ±(12…``max_yaw_deg``)° and back (one side, or both), with
    a small drift of the head; each frame gets its own sensor noise."""
    rng = _rng(seed)
    h, w = image.shape[:2]
    pts = mesh_points.astype(np.float64)
    x_min, y_min = pts[:, :2].min(axis=0)
    x_max, y_max = pts[:, :2].max(axis=0)
    face_w = x_max - x_min
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    axis_z = float((pts[234, 2] + pts[454, 2]) / 2 + 0.2 * face_w)
    angles = np.linspace(0, 2 * math.pi, 28, endpoint=False)
    ring = np.stack(
        [cx + 0.8 * face_w * np.cos(angles), cy - 0.05 * face_w + 0.95 * face_w * np.sin(angles)], axis=1
    )
    border = np.array(
        [
            (x, y)
            for x in np.linspace(0, w - 1, 5)
            for y in np.linspace(0, h - 1, 5)
            if x in (0, w - 1) or y in (0, h - 1)
        ]
    )
    source = np.concatenate([pts[:, :2], ring, border])
    triangles = np.asarray(Delaunay(source).simplices, np.int64)
    amplitude = math.radians(rng.uniform(min(12.0, max_yaw_deg), max_yaw_deg))
    both_sides = bool(rng.random() < 0.5)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    drift = rng.uniform(-0.04, 0.04, 2) * face_w
    blur, noise = rng.uniform(0.2, 0.6), rng.uniform(1.0, 2.5)
    out = []
    for f in range(frames):
        s = f / max(frames - 1, 1)
        yaw = direction * amplitude * (math.sin(2 * math.pi * s) if both_sides else math.sin(math.pi * s))
        c, si = math.cos(yaw), math.sin(yaw)
        shift = drift * math.sin(math.pi * s)
        x = cx + (pts[:, 0] - cx) * c + (pts[:, 2] - axis_z) * si + shift[0]
        z = axis_z - (pts[:, 0] - cx) * si + (pts[:, 2] - axis_z) * c
        face = np.stack([x, pts[:, 1] + shift[1]], axis=1)
        ring_now = np.stack([cx + (ring[:, 0] - cx) * c + shift[0], ring[:, 1] + shift[1]], axis=1)
        target = np.concatenate([face, ring_now, border])
        depth = np.concatenate([z, np.full(len(ring) + len(border), axis_z + face_w)])
        order = np.argsort(-depth[triangles].mean(axis=1))
        frame, _ = warp_triangles(image, source, target, triangles[order], (w, h))
        out.append(camera(rng, frame, blur, noise))
    return out


def video_frames(path: Path, step: int = 3, limit: int | None = None, offset: int = 0) -> list[ImageRGB]:
    """Every ``step``-th frame of a video from frame ``offset`` on, decoded in memory with OpenCV, as
    RGB (at most ``limit`` frames); empty when the file cannot be opened."""
    capture = cv2.VideoCapture(str(path))
    out: list[ImageRGB] = []
    try:
        index = 0
        while limit is None or len(out) < limit:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= offset and (index - offset) % step == 0:
                out.append(np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), np.uint8))
            index += 1
    finally:
        capture.release()
    return out


def windows(frames: Sequence[ImageRGB], length: int, stride: int | None = None) -> list[list[ImageRGB]]:
    """Consecutive windows of ``length`` frames, ``stride`` apart (default: not overlapping)."""
    stride = stride or length
    return [list(frames[i : i + length]) for i in range(0, len(frames) - length + 1, stride)]
