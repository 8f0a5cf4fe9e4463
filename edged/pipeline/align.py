"""Alignment to dlib's 150×150 face chip, reproducing ``dlib.get_face_chip``'s geometry, and to
the 112×112 five-point ArcFace chip (``align_arcface``) of the MBF embedder.

A similarity transform (no reflection) is fitted from a chip template (dlib's own five-point
template, or the mesh template below) to the face's points; chip pixel ``u`` is then sampled
at ``c + R(θ)·k·(u − 74.5)`` with
``k = (150·s − 1)/149`` (dlib's ``centered_drect`` off-by-one), bilinear, truncated to uint8.
When the face is more than twice the chip's size the region is first halved with the 5-tap
Gaussian pyramid (as dlib's ``extract_image_chips`` does) so the chip is not aliased.
Enrolment and verification must use this same aligner.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from edged.types import Detection, FloatArray, ImageRGB, Mesh

CHIP_SIZE = 150

# dlib's five-point template in 150-px chip pixels: subject's left eye outer and inner corners,
# right eye outer and inner corners, nose base.
CHIP_TEMPLATE = np.array(
    [
        [110.9567, 46.3498],
        [89.6060, 47.8967],
        [37.0575, 46.3727],
        [58.4085, 47.9064],
        [74.0112, 87.7798],
    ],
    np.float64,
)
FIVE_MESH_INDICES = (263, 362, 33, 133, 2)
"""Face-mesh points nearest the rows of ``CHIP_TEMPLATE``."""

# Where 26 stable face-mesh points (eye corners and lids, brows, nose, lips) fall on average in dlib's
# chip, measured by tools/fit_mesh_template.py: each face's mesh is mapped into the chip that dlib's
# own five-point shape predictor aligns, and the positions are averaged. Fitting the similarity to
# many points instead of five mesh points that only approximate dlib's makes the chip less noisy.
MESH_INDICES = (
    33,
    133,
    362,
    263,
    2,
    1,
    4,
    5,
    159,
    145,
    386,
    374,
    168,
    6,
    98,
    327,
    61,
    291,
    0,
    17,
    70,
    300,
    105,
    334,
    9,
    151,
)
MESH_TEMPLATE = np.array(
    [
        [36.323, 46.578],  # 33 subject's right eye, outer corner
        [59.742, 47.547],  # 133 right eye, inner corner
        [89.193, 47.558],  # 362 left eye, inner corner
        [112.876, 46.397],  # 263 left eye, outer corner
        [74.267, 86.301],  # 2 nose base
        [73.983, 81.026],  # 1 nose tip
        [73.947, 75.312],  # 4
        [73.975, 67.798],  # 5
        [46.629, 42.962],  # 159 right upper lid
        [48.210, 49.618],  # 145 right lower lid
        [102.290, 42.834],  # 386 left upper lid
        [100.841, 49.492],  # 374 left lower lid
        [74.217, 43.348],  # 168 between the eyes
        [74.174, 49.664],  # 6 nose bridge
        [59.202, 83.997],  # 98 right nostril
        [89.648, 83.940],  # 327 left nostril
        [51.452, 104.524],  # 61 right mouth corner
        [98.329, 104.432],  # 291 left mouth corner
        [74.338, 98.423],  # 0 upper lip
        [74.622, 117.629],  # 17 lower lip
        [26.314, 35.015],  # 70 right brow, outer
        [123.076, 34.637],  # 300 left brow, outer
        [39.838, 27.740],  # 105 right brow
        [108.759, 27.376],  # 334 left brow
        [74.095, 30.502],  # 9 glabella
        [74.091, 15.867],  # 151 forehead
    ],
    np.float64,
)

# Fallback when no mesh is available: BlazeFace's eye centres (right, left) against the template's
# eye-corner midpoints.
KEYPOINT_TEMPLATE = np.array(
    [
        (CHIP_TEMPLATE[2] + CHIP_TEMPLATE[3]) / 2,
        (CHIP_TEMPLATE[0] + CHIP_TEMPLATE[1]) / 2,
    ]
)


ARCFACE_SIZE = 112
# The five-point template of 112×112 ArcFace-family embedders (insightface's ``arcface_dst``), in
# chip pixels: the subject's right eye centre (left in the image), left eye centre, nose tip, right
# and left mouth corners.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)
ARCFACE_EYE_INDICES = ((33, 133, 159, 145), (362, 263, 386, 374))
"""Face-mesh points averaged for each eye centre: outer and inner corner, upper and lower lid."""
ARCFACE_NOSE_INDEX = 1
ARCFACE_MOUTH_INDICES = (61, 291)


def fit_similarity(
    src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]
) -> tuple[float, float, FloatArray]:
    """Least-squares similarity ``dst ≈ s·R(θ)·src + t`` (Umeyama, reflection excluded).

    Returns ``(s, θ, t)``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / len(src)
    cov = dc.T @ sc / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / var_s)
    t = mu_d - scale * rot @ mu_s
    return scale, math.atan2(rot[1, 0], rot[0, 0]), t.astype(np.float32)


def five_points(mesh: Mesh) -> npt.NDArray[np.float64]:
    """The mesh points nearest dlib's five landmarks, for ``CHIP_TEMPLATE`` (tools/chips.py makes
    the int8 calibration chips this way)."""
    return mesh.points[list(FIVE_MESH_INDICES), :2].astype(np.float64)


def mesh_points(mesh: Mesh) -> npt.NDArray[np.float64]:
    """The mesh points that ``MESH_TEMPLATE`` describes, in frame pixels."""
    return mesh.points[list(MESH_INDICES), :2].astype(np.float64)


def align_chip(
    image: ImageRGB, points: npt.NDArray[np.float64], template: npt.NDArray[np.float64] = CHIP_TEMPLATE
) -> ImageRGB:
    """The 150×150 uint8 RGB chip for ``points`` (rows matching ``template``) in ``image``."""
    scale, angle, t = fit_similarity(template, points)
    cos, sin = math.cos(angle), math.sin(angle)
    centre = scale * np.array([cos * 75.0 - sin * 75.0, sin * 75.0 + cos * 75.0]) + t
    k = (CHIP_SIZE * scale - 1.0) / (CHIP_SIZE - 1)
    return _sample(image, centre, k, angle, scale, CHIP_SIZE)


def _sample(
    image: ImageRGB, centre: npt.NDArray[np.float64], k: float, angle: float, scale: float, size: int
) -> ImageRGB:
    """The ``size``×``size`` chip whose pixel ``u`` shows frame point ``centre + k·R(angle)·(u − c)``,
    ``c = (size − 1)/2``, bilinear, truncated to uint8 (black outside the frame). ``scale`` is the
    frame pixels per chip pixel: the region is first halved with the Gaussian pyramid as long as a
    chip pixel still spans more than two frame pixels."""
    cos, sin = math.cos(angle), math.sin(angle)
    levels = 0
    while scale / 2 ** (levels + 1) > 1.0:
        levels += 1

    # Work on the region the chip covers (plus a border for the pyramid filter), not the frame.
    half = 0.5 * size * k * (abs(cos) + abs(sin)) + 2 * (2**levels) + 2
    h, w = image.shape[:2]
    x0, y0 = max(0, math.floor(centre[0] - half)), max(0, math.floor(centre[1] - half))
    x1, y1 = min(w, math.ceil(centre[0] + half) + 1), min(h, math.ceil(centre[1] + half) + 1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    region: np.ndarray = image[y0:y1, x0:x1]
    for _ in range(levels):
        region = cv2.pyrDown(region)
    factor = 2.0**-levels
    cx, cy = (centre[0] - x0) * factor, (centre[1] - y0) * factor
    kc, ks = k * factor * cos, k * factor * sin
    c = (size - 1) / 2.0
    matrix = np.array([[kc, -ks, cx - kc * c + ks * c], [ks, kc, cy - ks * c - kc * c]], np.float64)
    chip = cv2.warpAffine(
        region.astype(np.float32),
        matrix,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    return np.clip(chip, 0, 255).astype(np.uint8)


def arcface_points(mesh: Mesh) -> npt.NDArray[np.float64]:
    """The five points of ``ARCFACE_TEMPLATE`` from the mesh, in frame pixels: each eye's centre
    (mean of its two corners and two lid points), the nose tip, the two mouth corners."""
    xy = mesh.points[:, :2].astype(np.float64)
    eyes = [xy[list(indices)].mean(axis=0) for indices in ARCFACE_EYE_INDICES]
    return np.stack([eyes[0], eyes[1], xy[ARCFACE_NOSE_INDEX], *xy[list(ARCFACE_MOUTH_INDICES)]])


def align_arcface(image: ImageRGB, points: npt.NDArray[np.float64]) -> ImageRGB:
    """The 112×112 uint8 RGB chip for the five ``points`` (rows as in ``ARCFACE_TEMPLATE``).

    Geometry of insightface's ``norm_crop`` (chip pixel ``u`` shows frame point ``s·R·u + t`` of
    the least-squares similarity template → points), bilinear; faces more than twice the chip's
    size are first halved with the Gaussian pyramid, as ``align_chip`` does, against aliasing."""
    scale, angle, t = fit_similarity(ARCFACE_TEMPLATE, points)
    cos, sin = math.cos(angle), math.sin(angle)
    c = (ARCFACE_SIZE - 1) / 2.0
    centre = scale * np.array([cos * c - sin * c, sin * c + cos * c]) + t
    return _sample(image, centre, scale, angle, scale, ARCFACE_SIZE)


def chip_for(image: ImageRGB, detection: Detection, mesh: Mesh | None) -> ImageRGB:
    """Align from the mesh points, or from the detector's eye keypoints without a mesh."""
    if mesh is not None:
        return align_chip(image, mesh_points(mesh), MESH_TEMPLATE)
    return align_chip(image, detection.keypoints[:2].astype(np.float64), KEYPOINT_TEMPLATE)
