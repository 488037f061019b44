"""MoSI-style pseudo camera motion (Huang et al., CVPR 2021): a crop window slides over a still image.

Per video a window side w (a fraction of the image side) and a speed per axis (from the spec's speed classes,
one axis only under MoSI's rule) are drawn; the window starts where it stays inside the image for the whole
clip. Frame t is one `grid_sample` of the image through the window at t, for every frame of every video at once.
Coordinates are grid_sample's normalized ones (the image spans [-1, 1]; a fraction f of its side is 2f).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pmgflow.pmg.generator import warp
from pmgflow.sources.shapes import reference_times
from pmgflow.spec.sources import MoSIVideos


@dataclass
class WindowPlan:
    """The windows of n videos (CPU tensors): side (n,), start centre (n,2) and velocity (n,2), normalized."""

    side: torch.Tensor
    start: torch.Tensor
    velocity: torch.Tensor

    def centres(self, times: torch.Tensor) -> torch.Tensor:
        """Window centres (n,T,2) at reference times (T,)."""
        return self.start[:, None] + self.velocity[:, None] * times[None, :, None]


class MoSIGenerator:
    """Still images (n,3,H,W) in [0,1] -> videos (n,3,T,size,size) of a window sliding over each."""

    def __init__(self, spec: MoSIVideos, frames: int, size: int):
        self.spec, self.frames, self.size = spec, frames, size
        self.times = reference_times(frames)

    def plan(self, n: int, g: torch.Generator) -> WindowPlan:
        """Draw the windows of n videos: side, speed class per axis, then a start that keeps it inside."""
        s = self.spec
        side = s.window[0] + (s.window[1] - s.window[0]) * torch.rand(n, generator=g)
        speeds = torch.tensor(s.speeds, dtype=torch.float32)
        velocity = 2 * speeds[torch.randint(len(speeds), (n, 2), generator=g)]
        if s.one_axis:  # MoSI: the camera moves along x or along y
            axis = torch.randint(2, (n,), generator=g)
            velocity[torch.arange(n), 1 - axis] = 0
        room = 1 - side  # the centre may move within [-room, room] on each axis
        span = float(self.times[-1])
        if span > 0:  # a speed the window cannot keep inside the image is slowed to the fastest it can
            fastest = (2 * room / span)[:, None]
            velocity = velocity.clamp(-fastest, fastest)
        travel = velocity * span
        low = -room[:, None] - travel.clamp(max=0)
        high = room[:, None] - travel.clamp(min=0)
        start = low + (high - low) * torch.rand(n, 2, generator=g)
        return WindowPlan(side, start, velocity)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator, out: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """One video per image; written into `out` (n,3,T,size,size) if given."""
        n, t, size = len(images), self.frames, self.size
        plan = self.plan(n, generator)
        centre = plan.centres(self.times)
        mats = torch.zeros(n, t, 3, 3)
        mats[..., 0, 0] = mats[..., 1, 1] = plan.side[:, None]
        mats[..., :2, 2] = centre
        mats[..., 2, 2] = 1
        frames = warp(images.float(), mats.to(images.device), size, padding="border")  # (n,3,T*S,S)
        frames = frames.view(n, 3, t, size, size)
        if out is None:
            return frames
        return out.copy_(frames)
