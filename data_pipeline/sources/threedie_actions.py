"""3DIEBench's actions from its latents: per `latent_type` the absolute action of each view, the relative one
between consecutive views and the path action from the first view (the table in `threedie`'s docstring)."""

from __future__ import annotations

import torch

from data_pipeline.sources import rotations

LATENT_TYPES = ("rot", "rotcolor", "color", "all")
# Per latent type: does the action start with the quaternion, and which latent columns follow it.
EXTRA_COLUMNS = {"rot": (True, []), "rotcolor": (True, [3, 6]), "color": (False, [3, 6]), "all": (True, [3, 4, 5, 6])}
ACTION_GROUPS = {
    "rot": {"rotation": [0, 1, 2, 3]},
    "rotcolor": {"rotation": [0, 1, 2, 3], "color": [4, 5]},
    "color": {"color": [0, 1]},
    "all": {"rotation": [0, 1, 2, 3], "color": [4, 7], "spot_position": [5, 6]},
}


def latent_actions(latents: torch.Tensor, latent_type: str = "rot",
                   canonical_quaternions: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., V, 7) latents -> absolute actions (..., V, A) and relative ones (..., V-1, A), float64."""
    return _actions(latents, latent_type, canonical_quaternions, start=slice(None, -1))


def path_latent_actions(latents: torch.Tensor, latent_type: str = "rot",
                        canonical_quaternions: bool = True) -> torch.Tensor:
    """(..., V, 7) latents -> (..., V-1, A): index j is the net action from view 0 to view j+1, float64: the
    composed rotation R_0^-1 R_{j+1} (the product of the step rotations) and the plain differences of the rest,
    exactly as `latent_actions` computes one step (index 0 equals its first relative action)."""
    return _actions(latents, latent_type, canonical_quaternions, start=slice(None, 1))[1]


def _actions(latents: torch.Tensor, latent_type: str, canonical_quaternions: bool,
             start: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute actions, and the actions to each later view from the views `start` picks: the view before it
    (relative actions) or the first view (path actions)."""
    rotation, columns = EXTRA_COLUMNS[latent_type]
    latents = latents.to(torch.float64)
    extra = latents[..., columns]
    absolute, relative = [], []
    if rotation:
        quaternion = rotations.euler_xyz_to_quaternion(latents[..., :3])
        relative_q = rotations.relative_quaternion(quaternion[..., start, :], quaternion[..., 1:, :])
        if canonical_quaternions:
            quaternion = rotations.canonicalize_quaternion(quaternion)
            relative_q = rotations.canonicalize_quaternion(relative_q)
        absolute.append(quaternion)
        relative.append(relative_q)
    absolute.append(extra)
    relative.append(extra[..., 1:, :] - extra[..., start, :])
    return torch.cat(absolute, dim=-1), torch.cat(relative, dim=-1)
