"""MoSI-style pseudo camera motion (Huang et al., CVPR 2021): a crop window slides over a still image.

Per video a window side w (a fraction of the image side) and a speed per axis (from the spec's speed classes,
one axis only under MoSI's rule) are drawn; the speed is rounded to a whole number of output pixels per frame,
and the window starts where it stays inside the image for the whole clip. Because the window moves by whole
output pixels, every frame is a crop of one canvas: the image resampled once, at the frames' pixel pitch, over
the region the window sweeps. Rendering is one `grid_sample` of the canvases of all videos, then one
`index_select` that copies every frame's crop into the clips (no loop over videos or frames). Each frame has the
pixels a `grid_sample` through its own window would give. Coordinates are grid_sample's normalized ones (the
image spans [-1, 1]; a fraction f of its side is 2f).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pmgflow.sources.shapes import reference_times, squares
from pmgflow.spec.sources import MoSIVideos


@dataclass
class WindowPlan:
    """The windows of n videos (CPU tensors) rendered at `size` pixels: side (n,) and start centre (n,2),
    normalized; step (n,2, integer), the window's shift per frame in output pixels; `frame_time`, reference
    frames (of a 16-frame clip) per frame of the clip."""

    side: torch.Tensor
    start: torch.Tensor
    step: torch.Tensor
    size: int
    frame_time: float

    @property
    def pitch(self) -> torch.Tensor:
        """(n,1): an output pixel's side in normalized image units."""
        return (2 * self.side / self.size)[:, None]

    @property
    def velocity(self) -> torch.Tensor:
        """(n,2) normalized units per reference frame."""
        return self.step * self.pitch / self.frame_time

    def centres(self, times: torch.Tensor) -> torch.Tensor:
        """Window centres (n,T,2) at reference times (T,)."""
        return self.start[:, None] + self.velocity[:, None] * times[None, :, None]


class MoSIGenerator:
    """Still images (n,3,H,W) in [0,1] -> videos (n,3,T,size,size) of a window sliding over each."""

    def __init__(self, spec: MoSIVideos, frames: int, size: int):
        self.spec, self.frames, self.size = spec, frames, size
        self.times = reference_times(frames)
        self.frame_time = float(self.times[1] - self.times[0]) if frames > 1 else 1.0

    def plan(self, n: int, g: torch.Generator) -> WindowPlan:
        """Draw the windows of n videos: side, speed class per axis (in whole output pixels per frame, at least
        one for a moving class), then a start that keeps the window inside."""
        s, size, span = self.spec, self.size, self.frames - 1
        side = s.window[0] + (s.window[1] - s.window[0]) * torch.rand(n, generator=g)
        speeds = torch.tensor(s.speeds, dtype=torch.float32)
        speed = speeds[torch.randint(len(speeds), (n, 2), generator=g)]
        if s.one_axis:  # MoSI: the camera moves along x or along y
            axis = torch.randint(2, (n,), generator=g)
            speed[torch.arange(n), 1 - axis] = 0
        # fraction of the side per reference frame -> output pixels per frame: 2 speed dt / (2 side / size)
        pixels = speed * self.frame_time * size / side[:, None]
        step = pixels.abs().round().clamp(min=1) * pixels.sign()  # a moving class moves at least a pixel a frame
        room = 1 - side  # the centre may move within [-room, room] on each axis
        if span > 0:  # a speed the window cannot keep inside the image is slowed to the fastest it can
            fastest = (room * size / (side * span)).floor()[:, None]
            step = torch.minimum(step.abs(), fastest) * step.sign()
        travel = step * (2 * side / size)[:, None] * span
        low = -room[:, None] - travel.clamp(max=0)
        high = room[:, None] - travel.clamp(min=0)
        start = low + (high - low) * torch.rand(n, 2, generator=g)
        return WindowPlan(side, start, step.long(), size, self.frame_time)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator, out: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """One video per image; written into `out` (n,3,T,size,size) if given."""
        n, t, size = len(images), self.frames, self.size
        plan = self.plan(n, generator)
        if n == 0:
            return images.new_empty(0, 3, t, size, size) if out is None else out
        canvas, offsets = self.canvases(images.float(), plan)  # (n,3,H,W), (n,T) flat offsets of frame corners
        h, w = canvas.shape[-2:]
        # Every frame's crop as one view of the canvases: crop i starts at flat element i, rows W apart.
        crops = squares(canvas, size, w)[:, 0]
        planes = torch.arange(n * 3, device=canvas.device).view(n, 3, 1) * (h * w)
        index = (planes + offsets[:, None]).flatten()  # (n*3*T,) in the clips' order
        if out is None or not out.is_contiguous() or (out.dtype, out.device) != (canvas.dtype, canvas.device):
            frames = torch.index_select(crops, 0, index).view(n, 3, t, size, size)
            return frames if out is None else out.copy_(frames)
        torch.index_select(crops, 0, index, out=out.view(n * 3 * t, size, size))
        return out

    def canvases(self, images: torch.Tensor, plan: WindowPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """The images resampled at the frames' pixel pitch over the region each window sweeps, padded to one
        size (n,3,H,W), and the flat offset (row * W + column) of frame t's top-left pixel in its canvas (n,T).
        The layout is worked out on the CPU (no device sync); only the canvas axes move to the device."""
        t, size, step = self.frames, self.size, plan.step
        # Frame t's pixel j along an axis is canvas pixel j + t * step - first, first = the lowest t * step.
        first = (t - 1) * step.clamp(max=0)  # (n,2)
        width, height = (size + (t - 1) * step.abs().amax(0)).tolist()  # the largest sweep of the batch
        left = plan.start - plan.side[:, None]  # the frame-0 window's low edge
        x = left[:, :1] + plan.pitch * (torch.arange(width) + first[:, :1] + 0.5)  # (n,W)
        y = left[:, 1:] + plan.pitch * (torch.arange(height) + first[:, 1:] + 0.5)  # (n,H)
        x, y = x.to(images.device), y.to(images.device)
        grid = torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), -1)  # (n,H,W,2)
        # Windows stay inside the image; the padding beyond a short canvas is never read.
        canvas = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        corner = torch.arange(t)[None, :, None] * step[:, None] - first[:, None]  # (n,T,2): column, row
        return canvas, (corner[..., 1] * width + corner[..., 0]).to(images.device)
