"""Rotations for the 3DIEBench actions: Euler angles and unit quaternions, in torch.

Conventions (the same as scipy's `Rotation`, so numbers match the original code, which used it):
  * Euler angles `(a, b, c)` are extrinsic "xyz" (scipy's lowercase sequence, Blender's default
    `XYZ` rotation mode): rotate about the fixed x axis by a, then fixed y by b, then fixed z by c,
    so R = Rz(c) @ Ry(b) @ Rx(a).
  * Quaternions are scalar-last, `(x, y, z, w)`; `quaternion_multiply(p, q)` is the Hamilton
    product, which composes like matrices: R(p * q) = R(p) @ R(q) (apply q first).
  * q and -q are the same rotation. Nothing here picks a sign unless asked: `canonicalize_quaternion`
    chooses w >= 0.

Every function takes tensors with any leading batch shape and computes in the input's dtype; pass
float64 when the result feeds a relative rotation (float32 round-off compounds there).
"""

from __future__ import annotations

import torch


def axis_angle_quaternion(axis: int, angle: torch.Tensor) -> torch.Tensor:
    """(...,) angles -> (..., 4) quaternions of the rotation by `angle` about coordinate axis 0, 1 or 2."""
    half = angle / 2
    quaternion = torch.zeros(*angle.shape, 4, dtype=angle.dtype, device=angle.device)
    quaternion[..., axis] = torch.sin(half)
    quaternion[..., 3] = torch.cos(half)
    return quaternion


def euler_xyz_to_quaternion(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) extrinsic xyz angles -> (..., 4) unit quaternions q = qz(c) * qy(b) * qx(a).

    Composed from the three single-axis quaternions exactly as scipy's `from_euler("xyz")` does,
    so the sign is scipy's too (w >= 0 whenever every angle is within [-pi/2, pi/2], the
    in-distribution range; not in general)."""
    qx, qy, qz = (axis_angle_quaternion(axis, angles[..., axis]) for axis in range(3))
    return quaternion_multiply(qz, quaternion_multiply(qy, qx))


def quaternion_multiply(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Hamilton product p * q of (..., 4) scalar-last quaternions (broadcasting): R(p * q) = R(p) @ R(q)."""
    px, py, pz, pw = p.unbind(-1)
    qx, qy, qz, qw = q.unbind(-1)
    return torch.stack([
        pw * qx + px * qw + py * qz - pz * qy,
        pw * qy - px * qz + py * qw + pz * qx,
        pw * qz + px * qy - py * qx + pz * qw,
        pw * qw - px * qx - py * qy - pz * qz,
    ], dim=-1)


def quaternion_conjugate(q: torch.Tensor) -> torch.Tensor:
    """(x, y, z, w) -> (-x, -y, -z, w): the inverse rotation of a unit quaternion."""
    return torch.cat([-q[..., :3], q[..., 3:]], dim=-1)


def relative_quaternion(q_from: torch.Tensor, q_to: torch.Tensor) -> torch.Tensor:
    """The rotation taking q_from to q_to in the body frame, q_from^-1 * q_to: R(q_from) @ R(rel) = R(q_to).

    scipy's `rot_from.inv() * rot_to`, the original's relative action (unit quaternions assumed)."""
    return quaternion_multiply(quaternion_conjugate(q_from), q_to)


def canonicalize_quaternion(q: torch.Tensor) -> torch.Tensor:
    """Flip the sign of every quaternion with w < 0, so w >= 0 (same rotation, one representative).

    Regression targets then have no sign discontinuity; w = 0 (a half turn) stays ambiguous,
    which has probability zero for continuous angles."""
    return torch.where(q[..., 3:] < 0, -q, q)
