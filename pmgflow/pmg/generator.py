"""PseudoMotionGenerator: a batch of still images in, a batch of pseudo-motion videos out, on any device.

Per video one transform is drawn from the set (by weight) and one strength from its ranges; frame t is
the recursion I_{t+1} = f(I_t; θ) unrolled. In ``composed`` mode frame t samples the source once through
the t-th power of the step (no blur build-up); in ``recursive`` mode frames are resampled one after the
other, as the paper literally describes. Video-level Mixup / VideoMix then mix two videos of the batch.
All pixel work is batched torch (`grid_sample` over every video and frame at once).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pmgflow.pmg.transforms import TRANSFORMS, Motion, scale3
from pmgflow.spec.pmg import AugmentSpec, PMGSpec


def matrix_powers(init: torch.Tensor, step: torch.Tensor, frames: int) -> torch.Tensor:
    """(n,k,k) init and step -> (n,T,k,k) with entry t = init · step^t."""
    out = [init]
    for _ in range(frames - 1):
        out.append(out[-1] @ step)
    return torch.stack(out, 1)


def base_grid(size: int, device: torch.device) -> torch.Tensor:
    """Homogeneous normalized pixel-centre coordinates (size*size, 3), x fastest (align_corners=False)."""
    c = (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1) / size - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.flatten(), y.flatten(), torch.ones(size * size, device=device)], -1)


def warp_grid(mats: torch.Tensor, size: int) -> torch.Tensor:
    """(B,T,3,3) sampling homographies -> grid_sample grid (B, T*size, size, 2)."""
    b, t = mats.shape[:2]
    pts = torch.einsum("btij,pj->btpi", mats, base_grid(size, mats.device))
    xy = pts[..., :2] / pts[..., 2:].clamp_min(1e-6)
    return xy.reshape(b, t * size, size, 2)


def apply_color(frames: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Apply (B,T,4,4) affine colour maps to frames (B,3,T,H,W)."""
    out = torch.einsum("btij,bjthw->bithw", mats[:, :, :3, :3], frames)
    return out + mats[:, :, :3, 3].permute(0, 2, 1)[..., None, None]


def box_mask(centre: torch.Tensor, half: torch.Tensor, size: int) -> torch.Tensor:
    """(B,T,2) box centres and (B,2) half-sizes (normalized) -> float masks (B,1,T,size,size)."""
    c = (torch.arange(size, device=centre.device, dtype=torch.float32) * 2 + 1) / size - 1
    inside_x = (c[None, None, :] - centre[..., 0:1]).abs() <= half[:, None, 0:1]
    inside_y = (c[None, None, :] - centre[..., 1:2]).abs() <= half[:, None, 1:2]
    return (inside_y[..., :, None] & inside_x[..., None, :]).float().unsqueeze(1)


class PseudoMotionGenerator:
    """Turns images (B,3,H,W) in [0,1] into pseudo-motion videos (B,3,T,size,size) in [0,1]."""

    def __init__(self, spec: PMGSpec | None = None):
        self.spec = spec or PMGSpec()
        self.transforms = [TRANSFORMS[c.name](c.params) for c in self.spec.transforms]
        self.names = [c.name for c in self.spec.transforms]
        self.weights = torch.tensor([c.weight for c in self.spec.transforms], dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(self.spec.seed)

    def sample_motion(self, n: int, g: torch.Generator, transform: str | None = None) -> tuple[Motion, torch.Tensor]:
        """Draw a transform index (by weight) and a motion per video; `transform` forces one by name."""
        if transform is not None:
            choice = torch.full((n,), self.names.index(transform), dtype=torch.long)
        else:
            choice = torch.multinomial(self.weights, n, replacement=True, generator=g)
        parts, order = [], []
        for k, tr in enumerate(self.transforms):
            idx = (choice == k).nonzero().flatten()
            if idx.numel():
                parts.append(tr.motion(int(idx.numel()), self.spec.frames, g))
                order.append(idx)
        return Motion.cat(parts, torch.cat(order)), choice

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 transform: str | None = None) -> torch.Tensor:
        """Generate one pseudo-motion video per image; random draws come from `generator` (CPU)."""
        videos, _ = self.generate(images, generator, transform)
        return videos

    @torch.no_grad()
    def generate(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 transform: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like __call__, also returning the index of the transform each video used."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B,3,H,W), got {tuple(images.shape)}")
        g = generator or self.generator
        images = images.float()
        motion, choice = self.sample_motion(images.shape[0], g, transform)
        # The frames view the central (1 - 2·margin) of the source, so motion reveals real content.
        view = scale3(torch.full((motion.n,), 1 - 2 * self.spec.margin))
        motion.geo_init = view @ motion.geo_init
        render = self._composed if self.spec.mode == "composed" else self._recursive
        videos = render(images, motion, g)
        videos = mix_videos(videos, self.spec.augment, g)
        return videos, choice

    def _composed(self, images: torch.Tensor, m: Motion, g: torch.Generator) -> torch.Tensor:
        dev, size, frames = images.device, self.spec.size, self.spec.frames
        b = images.shape[0]
        geo = matrix_powers(m.geo_init, m.geo_step, frames).to(dev)
        grid = warp_grid(geo, size)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out = out.view(b, 3, frames, size, size)
        out = apply_color(out, matrix_powers(m.color_init, m.color_step, frames).to(dev))
        out = self._paste(out, images, m, g)
        return out.clamp_(0, 1)

    def _recursive(self, images: torch.Tensor, m: Motion, g: torch.Generator) -> torch.Tensor:
        dev, size, frames = images.device, self.spec.size, self.spec.frames
        b = images.shape[0]
        grid0 = warp_grid(m.geo_init[:, None].to(dev), size)
        grid_step = warp_grid(m.geo_step[:, None].to(dev), size)
        color0, color_step = m.color_init[:, None].to(dev), m.color_step[:, None].to(dev)
        frame = F.grid_sample(images, grid0, mode="bilinear", padding_mode="reflection", align_corners=False)
        frame = apply_color(frame[:, :, None], color0).clamp(0, 1)[:, :, 0]
        out = [frame]
        for _ in range(frames - 1):  # the literal recursion: each frame is resampled from the previous one
            frame = F.grid_sample(frame, grid_step, mode="bilinear", padding_mode="reflection", align_corners=False)
            frame = apply_color(frame[:, :, None], color_step).clamp(0, 1)[:, :, 0]
            out.append(frame)
        videos = torch.stack(out, 2)
        # A pasted patch is an overlay, not a resampling chain: drawn from the source in both modes.
        return self._paste(videos, images, m, g).clamp_(0, 1)

    def _paste(self, videos: torch.Tensor, images: torch.Tensor, m: Motion, g: torch.Generator) -> torch.Tensor:
        """Paste a moving patch of another image of the batch onto the videos whose motion has one."""
        idx = (m.paste_size[:, 0] > 0).nonzero().flatten()
        if idx.numel() == 0:
            return videos
        dev, size, frames = videos.device, self.spec.size, self.spec.frames
        b = images.shape[0]
        partner = (idx + 1 + torch.randint(0, max(b - 1, 1), (idx.numel(),), generator=g)) % b
        t = torch.arange(frames, dtype=torch.float32)
        shift = t[None, :, None] * m.paste_step[idx][:, None, :]  # (k,T,2) displacement of the patch
        centre = (m.paste_start[idx][:, None, :] + shift).to(dev)
        # The patch content travels with its box: frame t samples the partner at x - shift_t.
        mats = torch.eye(3).repeat(idx.numel(), frames, 1, 1)
        mats[..., :2, 2] = -shift
        patch = F.grid_sample(images[partner.to(dev)], warp_grid(mats.to(dev), size),
                              mode="bilinear", padding_mode="reflection", align_corners=False)
        patch = patch.view(idx.numel(), 3, frames, size, size)
        mask = box_mask(centre, m.paste_size[idx].to(dev), size)
        dev_idx = idx.to(dev)
        videos[dev_idx] = mask * patch + (1 - mask) * videos[dev_idx]
        return videos


def beta(alpha: float, n: int, g: torch.Generator) -> torch.Tensor:
    """n draws of Beta(alpha, alpha), seeded from the torch generator so runs are reproducible."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=n)).float()


def mix_videos(videos: torch.Tensor, spec: AugmentSpec, g: torch.Generator) -> torch.Tensor:
    """Video-level Mixup (convex blend of two videos) or VideoMix (a box of another video, all frames)."""
    b = videos.shape[0]
    if spec.kind == "none" or b < 2:
        return videos
    perm = (torch.arange(b) + 1 + torch.randint(0, b - 1, (b,), generator=g)) % b  # never oneself
    lam = beta(spec.alpha, b, g)
    lam = torch.where(torch.rand(b, generator=g) < spec.prob, lam, torch.ones(b))
    other = videos[perm.to(videos.device)]
    if spec.kind == "mixup":
        lam = lam.to(videos.device).view(b, 1, 1, 1, 1)
        return lam * videos + (1 - lam) * other
    # VideoMix: a box of area (1 - lambda) of the frame, the same box in every frame.
    size_h, size_w = videos.shape[-2:]
    side = torch.sqrt(1 - lam)
    centre = torch.rand(b, 2, generator=g) * 2 - 1
    half = side[:, None].expand(b, 2)
    mask = box_mask(centre[:, None, :].to(videos.device), half.to(videos.device), size_h)
    if size_w != size_h:
        raise ValueError("VideoMix expects square frames")
    return mask * other + (1 - mask) * videos
