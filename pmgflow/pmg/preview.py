"""Preview of what the model will see: a GIF of a few clips per PMG transform and per other video source, and one\nPNG contact sheet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pmgflow.pmg.generator import PseudoMotionGenerator


def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """(B,3,T,H,W) float [0,1] -> (B,T,H,W,3) uint8."""
    return (videos.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 4, 1).cpu().numpy()


def tile_clips(clips: np.ndarray, pad: int = 2) -> np.ndarray:
    """(B,T,H,W,3) -> (T, H, B*(W+pad)-pad, 3): the clips side by side, frame by frame."""
    b, t, h, w, _ = clips.shape
    out = np.full((t, h, b * (w + pad) - pad, 3), 255, np.uint8)
    for i in range(b):
        out[:, :, i * (w + pad): i * (w + pad) + w] = clips[i]
    return out


def save_gif(frames: np.ndarray, path: Path, fps: int = 8) -> None:
    """(T,H,W,3) uint8 -> looping GIF."""
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def contact_sheet(rows: dict[str, np.ndarray], pad: int = 2, label_width: int = 110) -> Image.Image:
    """One row per transform: its first clip's frames left to right, the name on the left."""
    t, h, w, _ = next(iter(rows.values())).shape
    sheet = Image.new("RGB", (label_width + t * (w + pad), len(rows) * (h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, frames) in enumerate(rows.items()):
        y = r * (h + pad)
        draw.text((4, y + h // 2 - 6), name, fill="black")
        for k in range(t):
            sheet.paste(Image.fromarray(frames[k]), (label_width + k * (w + pad), y))
    return sheet


def render_preview(pmg: PseudoMotionGenerator | None, images: torch.Tensor | None, out_dir: Path, seed: int = 0,
                   fps: int = 8, others: dict[str, torch.Tensor] | None = None) -> list[Path]:
    """Write <transform>.gif (all images as clips side by side) per PMG transform, <source>.gif per other video
    source (`others`: its clips (B,3,T,H,W)), and contact_sheet.png with one row each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written, rows = [], {}
    made = {name: pmg(images, torch.Generator().manual_seed(seed), transform=name) for name in pmg.names} if pmg else {}
    for name, videos in (made | (others or {})).items():
        clips = to_uint8(videos)
        path = out_dir / f"{name}.gif"
        save_gif(tile_clips(clips), path, fps)
        written.append(path)
        rows[name] = clips[0]
    sheet = out_dir / "contact_sheet.png"
    contact_sheet(rows).save(sheet)
    return written + [sheet]
