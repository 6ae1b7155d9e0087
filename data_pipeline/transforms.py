"""Batched, device-agnostic view rendering and the actions (transformation parameters) between views.

Conventions (image coordinates as displayed: x to the right, y downwards):
  * θ (radians) > 0 rotates the content counter-clockwise as displayed, about the canvas centre;
    θ = +90° gives exactly `torch.rot90(canvas, 1, dims=(-2, -1))`.
  * s > 1 enlarges the content (zoom in); parameterised as log s.
  * tx > 0 moves the content right, ty > 0 moves it down, in fractions of the canvas side.
  * brightness b and contrast c act on [0, 1] intensities: y = clamp((x - 0.5)·c + 0.5 + b, 0, 1).
The geometric forward map of a content point p (normalised coordinates) is p' = s·R(θ)·p + t; the
renderer samples the inverse map, with zeros outside the canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data_pipeline.errors import DataError

ACTION_DIM = 7  # [cos θ, sin θ, log s, tx, ty, b, log c]
ACTION_GROUPS = {"rotation": [0, 1], "scale": [2], "translation": [3, 4], "brightness": [5], "contrast": [6]}
PARAM_NAMES = ("theta", "log_scale", "tx", "ty", "brightness", "log_contrast")  # the 6 raw params per view
CANVAS_MARGIN = 4  # zero border added around the source so rotations lose fewer corners (28 -> 32)


@dataclass(frozen=True)
class ActionSpace:
    """Ranges of the per-view transformations; a zero range disables one (its action dims become 0)."""

    rotation_deg: float = 90.0  # θ ~ U(-r, r)
    scale_min: float = 0.75  # s log-uniform in [scale_min, scale_max]
    scale_max: float = 1.25
    translate: float = 0.15  # tx, ty ~ U(-t, t), fraction of the canvas side
    brightness: float = 0.3  # b ~ U(-b, b)
    contrast: float = 0.3  # log c ~ U(log(1 - c), log(1 + c))

    def __post_init__(self):
        problems = [msg for bad, msg in [
            (self.rotation_deg < 0, f"rotation_deg must be >= 0, got {self.rotation_deg}"),
            (not 0 < self.scale_min <= self.scale_max, f"need 0 < scale_min <= scale_max, got "
                                                       f"{self.scale_min}, {self.scale_max}"),
            (self.translate < 0, f"translate must be >= 0, got {self.translate}"),
            (self.brightness < 0, f"brightness must be >= 0, got {self.brightness}"),
            (not 0 <= self.contrast < 1, f"contrast must be in [0, 1), got {self.contrast}"),
        ] if bad]
        if problems:
            raise DataError(f"invalid ActionSpace: {'; '.join(problems)}")

    def param_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of the 6 raw params; each is sampled uniformly in its interval."""
        r = math.radians(self.rotation_deg)
        low = [-r, math.log(self.scale_min), -self.translate, -self.translate, -self.brightness,
               math.log(1 - self.contrast)]
        high = [r, math.log(self.scale_max), self.translate, self.translate, self.brightness,
                math.log(1 + self.contrast)]
        return torch.tensor(low), torch.tensor(high)

    def disabled_dims(self) -> list[int]:
        """Action dims of the transformations with a zero range (constant, reported as 0)."""
        disabled = {"rotation": self.rotation_deg == 0, "scale": self.scale_min == self.scale_max,
                    "translation": self.translate == 0, "brightness": self.brightness == 0,
                    "contrast": self.contrast == 0}
        return [d for group, off in disabled.items() if off for d in ACTION_GROUPS[group]]


def sample_params(batch: int, num_views: int, space: ActionSpace,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Raw params (B, V, 6) = (θ, log s, tx, ty, b, log c), deterministic given the generator."""
    low, high = space.param_bounds()
    u = torch.rand(batch, num_views, len(PARAM_NAMES), generator=generator)
    return low + u * (high - low)


def _to_actions(theta: torch.Tensor, rest: torch.Tensor, space: ActionSpace | None) -> torch.Tensor:
    actions = torch.cat([theta.cos().unsqueeze(-1), theta.sin().unsqueeze(-1), rest], dim=-1)
    if space is not None:
        actions[..., space.disabled_dims()] = 0.0
    return actions


def absolute_actions(params: torch.Tensor, space: ActionSpace | None = None) -> torch.Tensor:
    """(B, V, 6) params -> (B, V, 7) actions [cos θ, sin θ, log s, tx, ty, b, log c].

    With `space`, the dims of disabled transformations are zeroed (cos 0 = 1 would otherwise stay).
    """
    return _to_actions(params[..., 0], params[..., 1:], space)


def relative_actions(params: torch.Tensor, space: ActionSpace | None = None) -> torch.Tensor:
    """(B, V, 6) params -> (B, V-1, 7): index j is the action from view j to view j+1,
    [cos Δθ, sin Δθ, Δlog s, Δtx, Δty, Δb, Δlog c] with Δ = (view j+1) - (view j)."""
    delta = params[:, 1:] - params[:, :-1]
    return _to_actions(delta[..., 0], delta[..., 1:], space)


def path_actions(params: torch.Tensor, space: ActionSpace | None = None) -> torch.Tensor:
    """(B, V, 6) params -> (B, V-1, 7): index j is the net action from view 0 to view j+1, computed as
    `relative_actions` computes one step (Δ = (view j+1) - (view 0)): the net rotation angle is the sum of
    the step angles, and index 0 is the first relative action."""
    delta = params[:, 1:] - params[:, :1]
    return _to_actions(delta[..., 0], delta[..., 1:], space)


def pad_to_canvas(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, P, P), P = max(H, W) + 4, the source centred on a zero canvas."""
    h, w = images.shape[-2:]
    side = max(h, w) + CANVAS_MARGIN
    left, top = (side - w) // 2, (side - h) // 2
    return F.pad(images, (left, side - w - left, top, side - h - top))


def _sampling_matrices(params: torch.Tensor) -> torch.Tensor:
    """(N, 6) params -> (N, 2, 3) inverse affine maps (output -> source) for `affine_grid`.

    With y pointing down, counter-clockwise as displayed is R = [[cos, sin], [-sin, cos]]; the
    inverse of p' = s·R·p + t is p = Rᵀ(p' - t)/s. t is doubled: normalised coords span 2 per side.
    """
    theta, scale = params[:, 0], params[:, 1].exp()
    cos, sin = theta.cos() / scale, theta.sin() / scale
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # Rᵀ / s
    shift = 2.0 * params[:, 2:4]
    return torch.cat([linear, -(linear @ shift.unsqueeze(-1))], dim=-1)


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """`F.affine_grid(theta, [N, C, size, size], align_corners=False)`, computed by broadcasting.

    Same result (tested), ~4x faster on CPU: F.affine_grid runs a batched matmul with an inner
    dimension of 3, which was ~85% of the render time (256 views of 32x32).
    """
    coords = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1  # pixel centres
    x, y = coords.view(1, 1, size), coords.view(1, size, 1)
    grid = torch.empty(len(theta), size, size, 2, device=theta.device, dtype=theta.dtype)
    for i in range(2):  # output coordinate i = θ[i,0]·x + θ[i,1]·y + θ[i,2], written in place
        a, b, c = (theta[:, i, j].view(-1, 1, 1) for j in range(3))
        torch.add(a * x + c, b * y, out=grid[..., i])
    return grid


def render_views(images: torch.Tensor, params: torch.Tensor, out_size: int) -> torch.Tensor:
    """uint8 (B, C, H, W) sources + (B, V, 6) params -> uint8 views (B, V, C, out_size, out_size).

    Pads each source to its canvas, then one affine grid + grid_sample for all B·V views (bilinear,
    zeros outside; the grid has out_size² points, so warping and resizing are one resampling),
    then contrast and brightness. Identity params reproduce the padded image exactly when
    out_size equals the canvas side.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(f"render_views needs uint8 images (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    b, v = params.shape[:2]
    canvas = pad_to_canvas(images).float().div_(255.0)
    c, side = canvas.shape[1], canvas.shape[-1]
    sources = canvas.unsqueeze(1).expand(b, v, c, side, side).reshape(b * v, c, side, side)
    flat = params.reshape(b * v, -1).to(device=images.device, dtype=torch.float32)
    grid = affine_grid(_sampling_matrices(flat), out_size)
    views = F.grid_sample(sources, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast, brightness = flat[:, 5].exp().view(-1, 1, 1, 1), flat[:, 4].view(-1, 1, 1, 1)
    # (x - 0.5)·c + 0.5 + b, regrouped as x·c + offset so it runs in place (fresh buffers cost page faults).
    views.mul_(contrast).add_(0.5 - 0.5 * contrast + brightness).clamp_(0.0, 1.0)
    return views.mul_(255.0).round_().to(torch.uint8).view(b, v, c, out_size, out_size)
