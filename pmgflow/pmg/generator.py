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


def pixel_centres(size: int, device: torch.device) -> torch.Tensor:
    """Normalized coordinates of the pixel centres along one axis (align_corners=False)."""
    return (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1) / size - 1


def warp_grid(mats: torch.Tensor, size: int) -> torch.Tensor:
    """(B,T,3,3) sampling homographies -> grid_sample grid (B, T*size, size, 2).

    Built by broadcasting a row term and a column term (cheaper than a matmul over every pixel); the
    projective division is done only when some matrix is not affine.
    """
    b, t = mats.shape[:2]
    c = pixel_centres(size, mats.device)
    grid = torch.empty(b, t, size, size, 2, device=mats.device)

    def coord(row: int, out: torch.Tensor) -> torch.Tensor:  # m[row,0]*x + m[row,1]*y + m[row,2], (B,T,S,S)
        along_x = mats[..., row, 0, None, None] * c[None, :]
        along_y = mats[..., row, 1, None, None] * c[:, None] + mats[..., row, 2, None, None]
        return torch.add(along_x, along_y, out=out)

    if bool((mats[..., 2, :2] != 0).any() or (mats[..., 2, 2] != 1).any()):  # projective: divide by z
        z = coord(2, torch.empty(b, t, size, size, device=mats.device)).clamp_min_(1e-6)
        coord(0, grid[..., 0]).div_(z)
        coord(1, grid[..., 1]).div_(z)
    else:
        coord(0, grid[..., 0])
        coord(1, grid[..., 1])
    return grid.view(b, t * size, size, 2)


def is_identity(mats: torch.Tensor) -> torch.Tensor:
    """(n,k,k) -> bool (n,): which matrices are exactly the identity."""
    eye = torch.eye(mats.shape[-1], dtype=mats.dtype)
    return (mats == eye).flatten(1).all(1)


def apply_color(frames: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Apply (B,T,4,4) affine colour maps to frames (B,3,T,H,W)."""
    out = torch.einsum("btij,bjthw->bithw", mats[:, :, :3, :3], frames)
    return out + mats[:, :, :3, 3].permute(0, 2, 1)[..., None, None]


def box_mask(centre: torch.Tensor, half: torch.Tensor, size: int) -> torch.Tensor:
    """(B,T,2) box centres and (B,2) half-sizes (normalized) -> float masks (B,1,T,size,size)."""
    c = pixel_centres(size, centre.device)
    inside_x = (c[None, None, :] - centre[..., 0:1]).abs() <= half[:, None, 0:1]
    inside_y = (c[None, None, :] - centre[..., 1:2]).abs() <= half[:, None, 1:2]
    return (inside_y[..., :, None] & inside_x[..., None, :]).float().unsqueeze(1)


class PseudoMotionGenerator:
    """Turns images (B,3,H,W) in [0,1] into pseudo-motion videos (B,3,T,size,size) in [0,1].

    The number of videos per transform is drawn from the weights (multinomial); the videos of one transform
    form a contiguous block of the batch, so each block is rendered with slices, no gather or scatter.
    Training batches arrive in random order, so this is the same as drawing a transform per video.
    """

    def __init__(self, spec: PMGSpec | None = None):
        self.spec = spec or PMGSpec()
        self.transforms = [TRANSFORMS[c.name](c.params) for c in self.spec.transforms]
        self.names = [c.name for c in self.spec.transforms]
        self.weights = torch.tensor([c.weight for c in self.spec.transforms], dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(self.spec.seed)

    def sample_motion(self, n: int, g: torch.Generator, transform: str | None = None
                      ) -> tuple[list[tuple[slice, Motion]], torch.Tensor]:
        """Draw how many videos use each transform and their motions: ([(block, motion)], transform index per video)."""
        if transform is not None:
            if transform not in self.names:
                raise ValueError(f"transform {transform!r} is not in this generator's set {self.names}")
            counts = torch.zeros(len(self.names), dtype=torch.long)
            counts[self.names.index(transform)] = n
        else:
            draws = torch.multinomial(self.weights, n, replacement=True, generator=g)
            counts = torch.bincount(draws, minlength=len(self.names))
        blocks, start = [], 0
        for tr, count in zip(self.transforms, counts.tolist()):
            if count:
                blocks.append((slice(start, start + count), tr.motion(count, self.spec.frames, g)))
                start += count
        return blocks, torch.repeat_interleave(torch.arange(len(self.names)), counts)

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
        b, _, h, w = images.shape
        blocks, choice = self.sample_motion(b, g, transform)
        out = torch.empty(b, 3, self.spec.frames, self.spec.size, self.spec.size, device=images.device)
        # The frames view the central (1 - 2·margin) of the source, so motion reveals real content.
        view = scale3(torch.tensor([1 - 2 * self.spec.margin]))
        same_size = (h, w) == (self.spec.size, self.spec.size) and self.spec.margin == 0
        for block, motion in blocks:
            motion.geo_init = view @ motion.geo_init
            render = self._composed if self.spec.mode == "composed" else self._recursive
            out[block] = render(images[block], motion, same_size)
            self._paste(out[block], images, block, motion, g)
        return mix_videos(out, self.spec.augment, g), choice

    def _composed(self, images: torch.Tensor, m: Motion, same_size: bool) -> torch.Tensor:
        """Every frame sampled once from the source through M0·S^t, coloured by P^t·P0."""
        dev, size, frames = images.device, self.spec.size, self.spec.frames
        if same_size and bool(is_identity(m.geo_init).all() and is_identity(m.geo_step).all()):
            videos = images.unsqueeze(2).expand(-1, -1, frames, -1, -1)  # static geometry: no resampling
        else:
            grid = warp_grid(matrix_powers(m.geo_init, m.geo_step, frames).to(dev), size)
            videos = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            videos = videos.view(-1, 3, frames, size, size)
        if not bool(is_identity(m.color_init).all() and is_identity(m.color_step).all()):
            videos = apply_color(videos, matrix_powers(m.color_init, m.color_step, frames).to(dev)).clamp_(0, 1)
        return videos

    def _recursive(self, images: torch.Tensor, m: Motion, same_size: bool) -> torch.Tensor:
        """The literal recursion: frame t+1 resampled (and recoloured) from frame t."""
        dev, size, frames = images.device, self.spec.size, self.spec.frames
        grid0 = warp_grid(m.geo_init[:, None].to(dev), size)
        grid_step = warp_grid(m.geo_step[:, None].to(dev), size)
        color0, color_step = m.color_init[:, None].to(dev), m.color_step[:, None].to(dev)
        frame = F.grid_sample(images, grid0, mode="bilinear", padding_mode="reflection", align_corners=False)
        frame = apply_color(frame[:, :, None], color0).clamp(0, 1)[:, :, 0]
        out = [frame]
        for _ in range(frames - 1):
            frame = F.grid_sample(frame, grid_step, mode="bilinear", padding_mode="reflection", align_corners=False)
            frame = apply_color(frame[:, :, None], color_step).clamp(0, 1)[:, :, 0]
            out.append(frame)
        return torch.stack(out, 2)

    def _paste(self, videos: torch.Tensor, images: torch.Tensor, block: slice, m: Motion,
               g: torch.Generator) -> None:
        """Paste, in place, a moving patch of another image of the batch onto the videos whose motion has one.

        A pasted patch is an overlay, not a resampling chain, so it is drawn from the source in both modes.
        """
        if not bool((m.paste_size > 0).any()):
            return
        dev, size, frames = videos.device, self.spec.size, self.spec.frames
        n, b = videos.shape[0], images.shape[0]
        own = torch.arange(block.start, block.start + n)
        partner = (own + 1 + torch.randint(0, max(b - 1, 1), (n,), generator=g)) % b  # never oneself
        t = torch.arange(frames, dtype=torch.float32)
        shift = t[None, :, None] * m.paste_step[:, None, :]  # (n,T,2) displacement of the patch
        centre = (m.paste_start[:, None, :] + shift).to(dev)
        # The patch content travels with its box: frame t samples the partner at x - shift_t.
        mats = torch.eye(3).repeat(n, frames, 1, 1)
        mats[..., :2, 2] = -shift
        patch = F.grid_sample(images[partner.to(dev)], warp_grid(mats.to(dev), size),
                              mode="bilinear", padding_mode="reflection", align_corners=False)
        mask = box_mask(centre, m.paste_size.to(dev), size) > 0
        torch.where(mask, patch.view(n, 3, frames, size, size), videos, out=videos)


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
