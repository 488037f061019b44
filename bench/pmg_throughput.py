"""PMG throughput: the batched torch generator vs a naive per-frame, recursive PIL implementation.

Both make the same kind of clips (one transform per video from the paper's eight, drawn uniformly) from the
same photos; repetitions are interleaved and medians reported, with the ratio, for each clip size.

    python bench/pmg_throughput.py --sizes 112 224 --frames 16 --batch 32 --reps 5 --threads 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance

from pmgflow.pmg.generator import PseudoMotionGenerator
from pmgflow.pmg.transforms import TRANSFORMS
from pmgflow.spec.pmg import PMGSpec


def photos(n: int, size: int) -> list[Image.Image]:
    """n real photos (scikit-image), resized to size x size."""
    from skimage import data

    base = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    return [Image.fromarray(base[i % 4][..., :3]).resize((size, size), Image.BILINEAR) for i in range(n)]


def naive_clip(img: Image.Image, name: str, frames: int, other: Image.Image, rng: random.Random) -> np.ndarray:
    """One clip the straightforward way: PIL operations applied to the previous frame, frame after frame."""
    size = img.size[0]
    out, frame = [np.asarray(img)], img
    box_x, box_y, patch = rng.randint(0, size // 2), rng.randint(0, size // 2), other.crop((0, 0, size // 3, size // 3))
    zoom = rng.uniform(1.01, 1.04)
    angle, shift = rng.uniform(-2, 2), rng.uniform(-0.015, 0.015) * size
    fade = 1 - rng.uniform(0.03, 0.08)
    jitter = rng.uniform(0.97, 1.03)
    for _ in range(frames - 1):
        if name == "identity":
            frame = frame.copy()
        elif name == "sliding_window":
            frame = frame.transform(frame.size, Image.AFFINE, (1, 0, 0.02 * size, 0, 1, 0), Image.BILINEAR)
        elif name == "zoom":
            c = size / 2
            frame = frame.transform(frame.size, Image.AFFINE, (1 / zoom, 0, c - c / zoom, 0, 1 / zoom, c - c / zoom),
                                    Image.BILINEAR)
        elif name == "affine":
            frame = frame.rotate(angle, Image.BILINEAR, translate=(shift, shift))
        elif name == "perspective":
            d = 0.01
            frame = frame.transform(frame.size, Image.PERSPECTIVE, (1, d, 0, d, 1, 0, d / size, 0), Image.BILINEAR)
        elif name == "fade":
            frame = ImageEnhance.Brightness(frame).enhance(fade)
        elif name == "color_jitter":
            frame = ImageEnhance.Color(ImageEnhance.Contrast(ImageEnhance.Brightness(frame).enhance(jitter))
                                       .enhance(jitter)).enhance(jitter)
        elif name == "cutmix":
            frame = img.copy()
            box_x, box_y = min(box_x + 2, size - 1), min(box_y + 1, size - 1)
            frame.paste(patch, (box_x, box_y))
        out.append(np.asarray(frame))
    return np.stack(out)


def time_naive(images: list[Image.Image], frames: int, rng: random.Random, out: torch.Tensor | None) -> float:
    names = sorted(TRANSFORMS)
    start = time.perf_counter()
    clips = [naive_clip(im, rng.choice(names), frames, images[(i + 1) % len(images)], rng)
             for i, im in enumerate(images)]
    # the model needs float tensors (B,3,T,H,W) in [0,1]: include that conversion
    stacked = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3)
    if out is None:
        stacked.float().div_(255)
    else:
        out.copy_(stacked).div_(255)
    return len(images) / (time.perf_counter() - start)


def time_batched(pmg: PseudoMotionGenerator, batch: torch.Tensor, g: torch.Generator, out: torch.Tensor | None
                 ) -> float:
    start = time.perf_counter()
    pmg(batch, generator=g, out=out)
    if batch.device.type == "cuda":
        torch.cuda.synchronize()
    return batch.shape[0] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"PMG throughput, clips/s (median of {args.reps}), {args.frames} frames, batch {args.batch}, "
          f"{args.threads} threads, device {args.device}; all eight transforms drawn uniformly")
    print("new output: a fresh tensor per batch; reused: both write into one buffer kept across batches,\n"
          "as the pre-training loop does (no page faults on a new allocation)")
    print(f"{'clip':>14} | {'new output: torch':>17} {'naive PIL':>9} {'ratio':>6} | "
          f"{'reused: torch':>13} {'naive PIL':>9} {'ratio':>6}")
    for size in args.sizes:
        pil = photos(args.batch, size)
        batch = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in pil]).float().div(255)
        batch = batch.to(args.device)
        pmg = PseudoMotionGenerator(PMGSpec(frames=args.frames, size=size, transforms=sorted(TRANSFORMS)))
        g, rng = torch.Generator().manual_seed(0), random.Random(0)
        shape = (args.batch, 3, args.frames, size, size)
        buffer, naive_buffer = torch.empty(shape, device=args.device), torch.empty(shape)
        time_batched(pmg, batch, g, None)  # warm-up
        time_batched(pmg, batch, g, buffer)
        times: dict[str, list[float]] = {"fast": [], "slow": [], "fast_reused": [], "slow_reused": []}
        for _ in range(args.reps):  # interleaved, so all see the same machine load
            times["fast"].append(time_batched(pmg, batch, g, None))
            times["slow"].append(time_naive(pil, args.frames, rng, None))
            times["fast_reused"].append(time_batched(pmg, batch, g, buffer))
            times["slow_reused"].append(time_naive(pil, args.frames, rng, naive_buffer))
        m = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.frames}x{size}x{size:<6} | {m['fast']:17.1f} {m['slow']:9.1f} {m['fast'] / m['slow']:5.1f}x | "
              f"{m['fast_reused']:13.1f} {m['slow_reused']:9.1f} {m['fast_reused'] / m['slow_reused']:5.1f}x")


if __name__ == "__main__":
    main()
