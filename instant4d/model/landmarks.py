"""Named groups of the 478 MediaPipe face-mesh landmarks (468 mesh points + 10 iris points).

"Left" and "right" are the subject's: the subject's right eye appears on the image's left.
"""

from __future__ import annotations

NUM_LANDMARKS = 478

FOREHEAD = 10
CHIN = 152
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)  # subject's right, left
UPPER_LIP_CENTRE = 13  # inner contour
LOWER_LIP_CENTRE = 14  # inner contour
LOWER_LIP_OUTER_CENTRE = 17
CHEEK_EXTREMES = (234, 454)

LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
UPPER_LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324)

# eye contours run corner to corner along the upper lid, then back along the lower lid
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)

RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)

# points that expressions barely move: the rigid frame for head-pose (Procrustes) alignment
RIGID = (10, 338, 109, 195, 5, 4, 1, 3, 248, 127, 356, 162, 389, 234, 454, 93, 323)


def polygon(upper: tuple[int, ...], lower: tuple[int, ...]) -> tuple[int, ...]:
    """A closed contour: along ``upper`` then back along ``lower`` (shared end points once)."""
    return tuple(upper) + tuple(reversed(lower[1:-1]))


RIGHT_EYE = polygon(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
LEFT_EYE = polygon(LEFT_EYE_UPPER, LEFT_EYE_LOWER)
MOUTH_OPENING = LIPS_INNER
