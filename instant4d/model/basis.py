"""The expression basis on the face mesh: for each named component, a displacement of every landmark.

Each component is a procedural rig on the 478 landmarks of a neutral face, in world units (x right,
y down, z away from the camera; the face looks towards -z). Amplitudes are fractions of the face
height ``h`` (forehead landmark to chin), so a code means the same motion on every face:

    jaw_open     the lower jaw (lower lip, chin, jaw line) turns 20 degrees about a hinge in front of
                 the ears; the weight rises from the upper lip (0) to the lower lip (1)
    smile        mouth corners up 7% h, out 4% h, back 3% h; cheeks rise 2.5% h
    frown        mouth corners down 5% h, in 1% h
    pucker       lips 35% closer to the mouth centre, 4% h forward
    stretch      lips 20% wider
    blink_left   the upper lid of the subject's left (right) eye slides down to the lower lid; the skin
    blink_right  above it follows, fading over one eye height
    brows_up     brows up 5% h, fading over 8% h up the forehead, 3% h down towards the lids
    brows_down   brows down 3% h, inner ends 2% h towards the centre
    eyes_wide    upper lids up by 40% of the eye opening

The avatar carries the same fields interpolated onto every Gaussian (``encoder.py``); the motion code of
a driving face is the least-squares fit of its canonicalised landmark displacements onto this basis
(``motion.py``).
"""

from __future__ import annotations

import math

import numpy as np

from . import landmarks as lm

COMPONENTS = (
    "jaw_open", "smile", "frown", "pucker", "stretch",
    "blink_left", "blink_right", "brows_up", "brows_down", "eyes_wide",
)  # fmt: skip
JAW_OPEN = COMPONENTS.index("jaw_open")
JAW_ANGLE_DEGREES = 20.0

PRESETS: dict[str, dict[str, float]] = {
    "neutral": {},
    "smile": {"smile": 1.0},
    "open_mouth": {"jaw_open": 0.9},
    "blink": {"blink_left": 1.0, "blink_right": 1.0},
    "wink": {"blink_left": 1.0},
    "brows_up": {"brows_up": 1.0, "eyes_wide": 0.3},
    "frown": {"brows_down": 1.0, "frown": 0.8},
    "surprise": {"jaw_open": 0.6, "brows_up": 1.0, "eyes_wide": 0.8},
    "pucker": {"pucker": 1.0},
    "grin": {"smile": 1.0, "stretch": 0.5, "jaw_open": 0.3},
}


def _bump(points: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """[P]: exp(-d^2 / 2 r^2) with d the distance from each point to the nearest centre."""
    d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1).min(1)
    return np.exp(-d2 / (2 * radius**2))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def face_scale(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[lm.FOREHEAD] - points[lm.CHIN]))


def jaw_weight(points: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """[P] in [0, 1]: how much each point follows the lower jaw, by its height between the upper and the
    lower lip of the neutral face."""
    top = neutral[lm.UPPER_LIP_CENTRE, 1]
    bottom = neutral[lm.LOWER_LIP_OUTER_CENTRE, 1]
    return _smoothstep((points[:, 1] - top) / max(bottom - top, 1e-6))


def landmark_jaw_weight(neutral: np.ndarray) -> np.ndarray:
    """[478]: :func:`jaw_weight` of the landmarks, with the lips split exactly: upper lip 0, lower 1."""
    jaw = jaw_weight(neutral, neutral)
    jaw[list(lm.UPPER_LIP)] = 0.0
    jaw[list(lm.LOWER_LIP)] = 1.0
    jaw[list(lm.MOUTH_CORNERS)] = 0.5
    return jaw


def jaw_hinge(neutral: np.ndarray) -> np.ndarray:
    h = face_scale(neutral)
    width = float(np.linalg.norm(neutral[lm.CHEEK_EXTREMES[0]] - neutral[lm.CHEEK_EXTREMES[1]]))
    mouth = neutral[[lm.UPPER_LIP_CENTRE, lm.LOWER_LIP_CENTRE]].mean(0)
    return np.array([mouth[0], neutral[lm.NOSE_TIP, 1] - 0.05 * h, mouth[2] + 0.45 * width])


def jaw_displacement(points: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """[P, 3]: where the fully opened jaw moves each point if it were rigidly attached to the jaw."""
    angle = math.radians(JAW_ANGLE_DEGREES)
    d = points - jaw_hinge(neutral)
    rotated_y = math.cos(angle) * d[:, 1] - math.sin(angle) * d[:, 2]
    rotated_z = math.sin(angle) * d[:, 1] + math.cos(angle) * d[:, 2]
    return np.stack([np.zeros(len(points)), rotated_y - d[:, 1], rotated_z - d[:, 2]], -1)


def expression_basis(neutral: np.ndarray, points: np.ndarray | None = None, jaw: np.ndarray | None = None) -> np.ndarray:
    """basis: [P, K, 3], the displacement of each of ``points`` (default: the landmarks themselves) for
    each component at amplitude 1, rigged on the ``neutral`` landmarks [478, 3]. ``jaw`` [P] overrides
    how much each point follows the jaw (the encoder splits the lips by mesh triangle)."""
    neutral = np.asarray(neutral, dtype=np.float64)
    p = neutral if points is None else np.asarray(points, dtype=np.float64)
    h = face_scale(neutral)
    mouth_width = float(np.linalg.norm(neutral[lm.MOUTH_CORNERS[0]] - neutral[lm.MOUTH_CORNERS[1]]))
    mouth = neutral[[lm.UPPER_LIP_CENTRE, lm.LOWER_LIP_CENTRE]].mean(0)
    basis = np.zeros((len(p), len(COMPONENTS), 3))

    if jaw is None:
        jaw = landmark_jaw_weight(neutral) if points is None else jaw_weight(p, neutral)
    basis[:, JAW_OPEN] = jaw[:, None] * jaw_displacement(p, neutral)

    right, left = neutral[lm.MOUTH_CORNERS[0]], neutral[lm.MOUTH_CORNERS[1]]
    side = np.tanh((p[:, 0] - mouth[0]) / (0.15 * mouth_width))  # smooth across the midline: no crack
    corner_weight = np.maximum(_bump(p, right[None], 0.35 * mouth_width), _bump(p, left[None], 0.35 * mouth_width))
    cheeks = _bump(p, neutral[[50, 280]], 0.12 * h)
    smile = np.stack([0.04 * h * side, -0.07 * h * np.ones(len(p)), 0.03 * h * np.ones(len(p))], -1)
    basis[:, COMPONENTS.index("smile")] = corner_weight[:, None] * smile + cheeks[:, None] * np.array([0, -0.025 * h, -0.01 * h])
    frown = np.stack([-0.01 * h * side, 0.05 * h * np.ones(len(p)), np.zeros(len(p))], -1)
    basis[:, COMPONENTS.index("frown")] = corner_weight[:, None] * frown

    lips = _bump(p, neutral[list(lm.LIPS_OUTER + lm.LIPS_INNER)], 0.12 * mouth_width)
    pucker = np.stack([-0.35 * (p[:, 0] - mouth[0]), np.zeros(len(p)), -0.04 * h * np.ones(len(p))], -1)
    basis[:, COMPONENTS.index("pucker")] = lips[:, None] * pucker
    # wider only: thinner lips would look, to a landmark fit, like a closing jaw
    stretch = np.stack([0.2 * (p[:, 0] - mouth[0]), np.zeros(len(p)), np.zeros(len(p))], -1)
    basis[:, COMPONENTS.index("stretch")] = lips[:, None] * stretch

    for name, upper, lower in (
        ("blink_left", lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER),
        ("blink_right", lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER),
    ):
        closing, follow = _eyelid(p, neutral[list(upper)], neutral[list(lower)])
        basis[:, COMPONENTS.index(name)] = (follow * closing)[:, None] * np.array([0.0, 1.0, 0.0]) + (
            follow * (closing > 0)
        )[:, None] * np.array([0.0, 0.0, -0.004 * h])  # a lid closes in front of the eyeball
        wide = basis[:, COMPONENTS.index("eyes_wide")]
        wide += (follow * closing * -0.4)[:, None] * np.array([0.0, 1.0, 0.0])

    brow_weight = np.maximum(_brow_weight(p, neutral[list(lm.RIGHT_BROW)], h), _brow_weight(p, neutral[list(lm.LEFT_BROW)], h))
    basis[:, COMPONENTS.index("brows_up")] = brow_weight[:, None] * np.array([0.0, -0.05 * h, 0.0])
    inner = neutral[[107, 66, 55, 65, 336, 296, 285, 295]]
    inner_weight = _bump(p, inner, 0.06 * h)
    centre = neutral[[168, 9]].mean(0)
    towards_centre = -np.tanh((p[:, 0] - centre[0]) / (0.05 * h))
    basis[:, COMPONENTS.index("brows_down")] = brow_weight[:, None] * np.array([0.0, 0.03 * h, 0.0]) + (
        inner_weight * towards_centre * 0.02 * h
    )[:, None] * np.array([1.0, 0.0, 0.0])
    return basis.astype(np.float32)


def _brow_weight(points: np.ndarray, brow: np.ndarray, h: float) -> np.ndarray:
    """[P] in [0, 1]: how much each point follows one brow. Along the brow's smooth centre line
    (a parabola through its landmarks) 1; fading over 8% h up the forehead but over 3% h down towards
    the upper lid (so that the brows move against the eyes), and over 5% h beyond its ends; continuous
    everywhere, so brow motion opens no cracks."""
    line = np.polyfit(brow[:, 0], brow[:, 1], 2)
    lo, hi = brow[:, 0].min(), brow[:, 0].max()
    x = np.clip(points[:, 0], lo, hi)
    v = points[:, 1] - np.polyval(line, x)  # > 0 below the brow
    radius = np.where(v > 0, 0.03 * h, 0.08 * h)
    beyond = points[:, 0] - x
    return np.exp(-(v**2) / (2 * radius**2) - beyond**2 / (2 * (0.05 * h) ** 2))


def _eyelid(points: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(closing [P], follow [P]): how far down the upper lid above each point must travel to meet the
    lower lid, and how much each point follows it (1 on and just above the lid, fading over one eye
    height upwards, 0 below the lid and beyond the eye corners)."""
    order_u, order_l = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
    x = points[:, 0]
    inside = (x > upper[:, 0].min()) & (x < upper[:, 0].max())
    lid_y = np.interp(x, upper[order_u, 0], upper[order_u, 1])
    bottom_y = np.interp(x, lower[order_l, 0], lower[order_l, 1])
    closing = np.where(inside, np.maximum(bottom_y - lid_y, 0.0), 0.0)
    eye_height = max(float((bottom_y - lid_y)[inside].max(initial=0.0)), 1e-6)
    above = lid_y - points[:, 1]  # > 0 above the lid
    follow = np.where(above >= -0.15 * eye_height, np.exp(-np.maximum(above, 0) ** 2 / (2 * eye_height**2)), 0.0)
    return closing * 0.97, follow * inside
