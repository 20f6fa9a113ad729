"""Gaussians in the standard 3D Gaussian Splatting PLY layout (what the common 3DGS viewers read):
binary little-endian vertices with x y z, nx ny nz, f_dc_0..2 (degree-0 SH), opacity (logit),
scale_0..2 (log), rot_0..3 (wxyz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SH_C0 = 0.28209479177387814
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")  # fmt: skip


def write_ply(path, means, quats, scales, opacities, colors) -> None:
    """means [N, 3], quats [N, 4] wxyz, scales [N, 3] linear, opacities [N] in [0, 1], colors [N, 3] in [0, 1]."""

    def array(t):
        return t.detach().double().cpu().numpy()

    eps = 1e-6
    opacity = np.clip(array(opacities), eps, 1 - eps)
    table = np.concatenate(
        [
            array(means),
            np.zeros((len(opacity), 3)),
            (array(colors) - 0.5) / SH_C0,
            np.log(opacity / (1 - opacity))[:, None],
            np.log(np.clip(array(scales), 1e-12, None)),
            array(quats),
        ],
        axis=1,
    ).astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {len(table)}\n"
    header += "".join(f"property float {name}\n" for name in PROPERTIES) + "end_header\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(table.tobytes())


def read_ply(path) -> dict[str, torch.Tensor]:
    """The inverse of :func:`write_ply` for binary little-endian float PLYs holding (at least) the
    standard properties; returns means, quats, scales, opacities, colors."""
    with open(path, "rb") as f:
        names, count = [], None
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file")
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            words = line.decode("ascii").split()
            if words[:1] == ["format"] and words[1] != "binary_little_endian":
                raise ValueError(f"{path}: only binary_little_endian PLYs are supported, got {words[1]}")
            if words[:2] == ["element", "vertex"]:
                count = int(words[2])
            elif words[:1] == ["property"]:
                if words[1] != "float":
                    raise ValueError(f"{path}: property {words[-1]} is {words[1]}; expected float")
                names.append(words[2])
            elif words[:1] == ["end_header"]:
                break
        table = np.frombuffer(f.read(4 * len(names) * count), dtype="<f4").reshape(count, len(names))
    column = {name: table[:, i].astype(np.float64) for i, name in enumerate(names)}

    def stack(*keys):
        return torch.from_numpy(np.stack([column[k] for k in keys], -1)).float()

    return {
        "means": stack("x", "y", "z"),
        "quats": stack("rot_0", "rot_1", "rot_2", "rot_3"),
        "scales": torch.exp(stack("scale_0", "scale_1", "scale_2")),
        "opacities": torch.sigmoid(stack("opacity")[:, 0]),
        "colors": stack("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5,
    }
