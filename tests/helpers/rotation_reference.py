"""Reference rotation maths for the tests: rotation matrices to check the 3DIEBench source's quaternions against."""

from __future__ import annotations

import torch

from data_pipeline.sources import rotations as rot


def euler_xyz_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) extrinsic xyz angles in radians -> (..., 3, 3) rotation matrices Rz(c) @ Ry(b) @ Rx(a)."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    ca, cb, cc = cos.unbind(-1)
    sa, sb, sc = sin.unbind(-1)
    rows = [
        [cb * cc, sa * sb * cc - ca * sc, ca * sb * cc + sa * sc],
        [cb * sc, sa * sb * sc + ca * cc, ca * sb * sc - sa * cc],
        [-sb, sa * cb, ca * cb],
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def quaternion_inverse(q: torch.Tensor) -> torch.Tensor:
    """Inverse of any non-zero quaternion (the conjugate over the squared norm)."""
    return rot.quaternion_conjugate(q) / (q * q).sum(-1, keepdim=True)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (normalised here) -> (..., 3, 3) rotation matrices; q and -q give the same matrix."""
    q = q / q.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)
