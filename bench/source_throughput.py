"""Throughput of the pre-training video sources (moving shapes, MoSI), on the CPU.

Part 1, generation: clips/s of ShapesGenerator (image-textured and flat objects) and MoSIGenerator against a
naive renderer that makes the same clips frame by frame, the way a straightforward implementation draws them
(Yu et al.'s generator draws frame by frame): Python loops over videos, frames and objects, one affine_grid +
grid_sample of one sprite's alpha and texture (or one window) per object per frame, composited far to near. The
naive renderer takes its plan, sprites and backgrounds from the generator itself (ShapesGenerator.plan / layout
/ sprites / backgrounds, ShapesPlan.poses; MoSIGenerator.plan), so both draw the same clips from the same seed
(the batched one samples each object in its box only, the naive one over whole frames); the bench checks that
their pixels agree (max abs difference < 1e-4) before timing. And against a
second naive renderer made the way bench/pmg_throughput.py makes PMG's reference: PIL, frame by frame, 8 bits a
channel (each object an affine transform of its sprite, then alpha_composite; MoSI each frame the window's box
resized), from the same plan, sprites and windows (mean abs difference < 0.01: 8-bit rounding). All write into a
buffer kept across batches, as the pre-training loop does.
Target: batched >= 3x naive at 16x112x112.

Part 2, end to end: pre-training clips/s of VideoMAE at the tiny preset (8x32x32, batch 64 as in
experiments/base.yaml) with the clips generated in the loop (VideoClips.clips, as pmgflow/train/pretrain.py
does) against the same step on clips generated beforehand, per video source; also the source's clips/s on its
own. Target: ratio (in the loop / pre-made) >= 0.9.

Repetitions are interleaved (A, B, A, B, ...) and medians reported, so every arm sees the same machine load.
The CPU model and load averages are printed with the results. While other work holds one of two cores, two
torch threads spend their time waiting for each other (many small operations slow down most: 30x for the
naive renderer); run with --threads 1 then.

    python bench/source_throughput.py              # about 3 minutes on 2 free cores (4 with --threads 1)
    python bench/source_throughput.py --quick      # fewer repetitions, under 2 minutes
    python bench/source_throughput.py --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pmgflow.pmg.clips import ImageClips
from pmgflow.sources.mix import VideoClips, texture_crops
from pmgflow.sources.mosi import MoSIGenerator
from pmgflow.sources.shapes import ShapesGenerator, sample
from pmgflow.spec.data import FractalSource
from pmgflow.spec.pmg import PMGSpec
from pmgflow.spec.sources import MoSIVideos, ShapesVideos
from pmgflow.spec.train import PretrainSpec
from pmgflow.train.loop import autocast, build_optimizer
from pmgflow.train.pretrain import build_videomae

CPU = torch.device("cpu")
CROP_SCALE = PretrainSpec.model_fields["crop_scale"].default


def cpu_model() -> str:
    """lscpu's model name (timings on a shared machine mean little without it)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return "unknown CPU"


def load() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every arm alike only if it stays."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fractal_images(frames: int, size: int, render: int) -> ImageClips:
    """The embedded fractal images, stored for clips of this size (cached after the first run)."""
    return ImageClips(PMGSpec(frames=frames, size=size), FractalSource(categories=16, images=256, size=render),
                      CROP_SCALE)


def crop_textures(images: ImageClips) -> Callable[[int, torch.Generator], torch.Tensor]:
    """ShapesGenerator's `textures` as pre-training makes them: m random crops of random images at the clip size."""
    return lambda m, g: texture_crops(images, m, g)


# --- naive per-frame references ----------------------------------------------------------------------------


def setup(gen: ShapesGenerator, n: int, g: torch.Generator, textures) -> tuple:
    """What the generator draws before it renders a frame, in its order (so the same seed gives the same
    clips): the plan, the sprites (texture crops included), the backgrounds and the poses."""
    plan = gen.plan(n, g)
    sprites = gen.sprites(plan, gen.layout(plan, plan.boxes(gen.times, gen.size)), g, CPU, textures)
    back = gen.backgrounds(plan, g, CPU, textures)
    return plan, sprites, back, plan.poses(gen.times, gen.size)


def naive_shapes(gen: ShapesGenerator, n: int, g: torch.Generator, textures, out: torch.Tensor) -> torch.Tensor:
    """The clips of `gen(n, g, textures=textures, out=out)`, drawn one object of one frame of one video at a time."""
    t, size = gen.frames, gen.size
    plan, sprites, back, poses = setup(gen, n, g, textures)
    k = plan.present.shape[1]
    poses = poses[..., :2, :]  # (n,K,T,2,3): affine
    present = plan.present.tolist()
    for v in range(n):
        slots = [s for s in range(k) if present[v][s]]  # far to near
        for f in range(t):
            frame = back[v].clone()
            for s in slots:
                grid = F.affine_grid(poses[v, s, f][None], [1, 1, size, size], align_corners=False)
                alpha = sample(sprites.alpha(v, s)[None], grid)[0]
                fill = sprites.fill(v, s) if sprites.flat else sample(sprites.fill(v, s)[None], grid)[0]
                frame.lerp_(fill.expand_as(frame), alpha.expand_as(frame))
            out[v, :, f] = frame.clamp_(0, 1)
    return out


def naive_mosi(gen: MoSIGenerator, images: torch.Tensor, g: torch.Generator, out: torch.Tensor) -> torch.Tensor:
    """The clips of `gen(images, g, out)`, one window of one frame of one video at a time."""
    size = gen.size
    plan = gen.plan(len(images), g)
    centres = plan.centres(gen.times)
    for v in range(len(images)):
        side = float(plan.side[v])
        for f in range(gen.frames):
            cx, cy = centres[v, f].tolist()
            theta = torch.tensor([[[side, 0.0, cx], [0.0, side, cy]]])
            grid = F.affine_grid(theta, [1, 3, size, size], align_corners=False)
            out[v, :, f] = F.grid_sample(images[v:v + 1], grid, mode="bilinear", padding_mode="border",
                                         align_corners=False)[0]
    return out


def _pil(image: torch.Tensor) -> Image.Image:
    """A float image (C,S,S) in [0,1] (C = 3: RGB, 4: RGBA) as an 8-bit PIL image."""
    pixels = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(pixels.contiguous().numpy(), "RGBA" if len(image) == 4 else "RGB")


def _pil_clips(frames: list[np.ndarray], out: torch.Tensor) -> torch.Tensor:
    """(n*T) uint8 frames (S,S,3) -> out (n,3,T,S,S) in [0,1]: the conversion the model needs, timed as PMG's is."""
    n, t = out.shape[0], out.shape[2]
    stacked = torch.from_numpy(np.stack(frames)).view(n, t, *frames[0].shape).permute(0, 4, 1, 2, 3)
    return out.copy_(stacked).div_(255)


def pil_shapes(gen: ShapesGenerator, n: int, g: torch.Generator, textures, out: torch.Tensor) -> torch.Tensor:
    """The clips of `gen(n, g, textures=textures, out=out)` drawn the way PMG's bench draws its naive reference:
    PIL, frame by frame (each object of a frame: an affine transform of its sprite, then "over"), 8 bits a
    channel. Same plan, sprites and poses as the generator; pixels agree up to 8-bit rounding."""
    t, size = gen.frames, gen.size
    plan, sprites, back, poses = setup(gen, n, g, textures)
    k = plan.present.shape[1]
    # pose (normalized output -> normalized sprite) in PIL's pixel coordinates (both with centres at +0.5)
    to_norm = torch.tensor([[2 / size, 0, -1], [0, 2 / size, -1], [0, 0, 1]])
    to_pixels = torch.tensor([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1]])
    data = (to_pixels @ poses @ to_norm)[..., :2, :].flatten(-2).tolist()  # (n,K,T,6)
    present = plan.present.tolist()
    frames = []
    for v in range(n):
        slots = [s for s in range(k) if present[v][s]]  # far to near
        layers = {s: _pil(torch.cat([sprites.fill(v, s).expand(-1, size, size), sprites.alpha(v, s)]))
                  for s in slots}
        background = _pil(back[v]).convert("RGBA")
        for f in range(t):
            frame = background.copy()
            for s in slots:
                frame.alpha_composite(layers[s].transform((size, size), Image.AFFINE, data[v][s][f], Image.BILINEAR))
            frames.append(np.asarray(frame)[..., :3])
    return _pil_clips(frames, out)


def pil_mosi(gen: MoSIGenerator, images: torch.Tensor, g: torch.Generator, out: torch.Tensor) -> torch.Tensor:
    """The clips of `gen(images, g, out)` drawn with PIL, frame by frame: each frame the window's box resized
    to the clip size (bilinear), from 8-bit images."""
    size, (h, w) = gen.size, images.shape[-2:]
    plan = gen.plan(len(images), g)
    centres = plan.centres(gen.times).tolist()
    sides = plan.side.tolist()
    frames = []
    for v in range(len(images)):
        still = _pil(images[v])
        for cx, cy in centres[v]:
            box = ((cx - sides[v] + 1) * w / 2, (cy - sides[v] + 1) * h / 2,
                   (cx + sides[v] + 1) * w / 2, (cy + sides[v] + 1) * h / 2)
            frames.append(np.asarray(still.transform((size, size), Image.EXTENT, box, Image.BILINEAR)))
    return _pil_clips(frames, out)


# --- part 1 -------------------------------------------------------------------------------------------------


def rate(n: int, fn: Callable[[], object]) -> float:
    """Clips/s of one call making n clips."""
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


@dataclass
class GenerationRow:
    """One source at one clip size: clips/s of each renderer (medians), setup time, pixel agreement."""

    source: str
    batched: float
    naive: float  # torch, one grid_sample per object per frame: the same pixels
    pil: float  # PIL frame by frame, as PMG's bench draws its naive reference
    setup: float  # clips/s of what both torch renderers make alike (shapes only; inf for MoSI)
    diff: float  # max |batched - naive|
    pil_diff: float  # mean |batched - PIL|


def generation(frames: int, size: int, batch: int, reps: int) -> list[GenerationRow]:
    """Every source at one clip size. Setup: the shapes' plan, sprites, backgrounds and poses alone, which every
    renderer makes alike (MoSI: none)."""
    images = fractal_images(frames, size, render=128 if size > 64 else 64)
    textures = crop_textures(images)
    stills = images.images(torch.arange(batch)).float().div_(255)  # MoSI's input, at the store size
    shape = (batch, 3, frames, size, size)
    fast_out, slow_out, pil_out = torch.empty(shape), torch.empty(shape), torch.empty(shape)
    rows = []
    for name, spec in (("shapes, image", ShapesVideos(texture="image")), ("shapes, flat", ShapesVideos()),
                       ("mosi", MoSIVideos())):
        if spec.kind == "shapes":
            gen = ShapesGenerator(spec, frames, size)
            arms = {"fast": lambda g: gen(batch, g, CPU, textures, fast_out),
                    "slow": lambda g: naive_shapes(gen, batch, g, textures, slow_out),
                    "pil": lambda g: pil_shapes(gen, batch, g, textures, pil_out),
                    "setup": lambda g: setup(gen, batch, g, textures)}
        else:
            gen = MoSIGenerator(spec, frames, size)
            arms = {"fast": lambda g: gen(stills, g, fast_out),
                    "slow": lambda g: naive_mosi(gen, stills, g, slow_out),
                    "pil": lambda g: pil_mosi(gen, stills, g, pil_out)}
        # Same seed, same clips: checked on fresh generators, which also warms every arm up.
        for arm in ("fast", "slow", "pil"):
            arms[arm](torch.Generator().manual_seed(1))
        diff = float((fast_out - slow_out).abs().max())
        assert diff < 1e-4, f"{name} {frames}x{size}x{size}: batched and naive clips differ by {diff}"
        pil_diff = float((fast_out - pil_out).abs().mean())
        assert pil_diff < 0.01, f"{name} {frames}x{size}x{size}: batched and PIL clips differ by {pil_diff} on average"
        gs = {arm: torch.Generator().manual_seed(2) for arm in arms}
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(reps):  # interleaved
            for arm, fn in arms.items():
                times[arm].append(rate(batch, lambda: fn(gs[arm])))
        m = {arm: statistics.median(v) for arm, v in times.items()}
        rows.append(GenerationRow(name, m["fast"], m["slow"], m["pil"], m.get("setup", math.inf), diff, pil_diff))
    return rows


# --- part 2 -------------------------------------------------------------------------------------------------


SOURCES = {
    "pmg": None,
    "shapes, image": [{"kind": "shapes", "texture": "image"}],
    "mosi": [{"kind": "mosi"}],
    "mix": [{"kind": "pmg", "fraction": 0.5}, {"kind": "shapes", "texture": "image", "fraction": 0.25},
            {"kind": "mosi", "fraction": 0.25}],
}


def training(videos: list[dict] | None, batch: int, steps: int, reps: int) -> tuple[float, float, float]:
    """(source clips/s alone, training clips/s generating in the loop, training clips/s on pre-made clips)."""
    spec = PretrainSpec(model={"preset": "tiny"}, batch_size=batch, videos=videos,
                        source={"kind": "fractal", "categories": 16, "images": 256, "size": 64},
                        pmg={"transforms": ["zoom", "affine"], "augment": {"kind": "mixup"}})
    clips = VideoClips(spec)
    torch.manual_seed(spec.seed)
    model = build_videomae(spec)
    model.train()
    opt = build_optimizer(model, spec)
    g = torch.Generator().manual_seed(0)
    # One video buffer for every batch, as the pre-training loop keeps.
    buffer = torch.empty(batch, 3, spec.pmg.frames, spec.pmg.size, spec.pmg.size)

    def make(out: torch.Tensor | None = buffer) -> torch.Tensor:
        return clips.clips(clips.draw(batch, g), g, CPU, out=out)

    def step(videos: torch.Tensor) -> None:
        mask = model.tube_mask(batch, "cpu", generator=g)
        with autocast(CPU):
            loss, _, _ = model(videos, mask=mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    premade = [make(out=None) for _ in range(steps)]
    step(make())  # warm-up
    step(premade[0])
    alone, live, fixed = [], [], []
    for _ in range(reps):  # interleaved
        alone.append(rate(steps * batch, lambda: [make() for _ in range(steps)]))
        live.append(rate(steps * batch, lambda: [step(make()) for _ in range(steps)]))
        fixed.append(rate(steps * batch, lambda: [step(v) for v in premade]))
    return statistics.median(alone), statistics.median(live), statistics.median(fixed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    ap.add_argument("--threads", type=int, default=2, choices=[1, 2],
                    help="torch threads (2: the CPU recipe's; 1 is steadier when other work holds a core)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else 7
    steps = 3 if args.quick else 6
    began = time.perf_counter()
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, {args.threads} torch threads; load average {load()}")

    lo, hi = ShapesVideos().objects
    print(f"\n1. generation, clips/s (median of {reps}, interleaved): batched generator vs two naive frame-by-frame "
          f"renderers\n   of the same clips; objects {lo}-{hi}, accelerating; target >= 3x at 16x112x112")
    print("   naive: torch, one grid_sample per object per frame (the same pixels: max |diff| checked < 1e-4)\n"
          "   PIL: PIL frame by frame in 8 bits, as bench/pmg_throughput.py draws PMG's naive reference (mean |diff|\n"
          "   checked < 0.01: 8-bit rounding)\n"
          "   setup: ms per batch of the shapes' plan, sprites (texture crops included), backgrounds and poses,\n"
          "   made alike by every renderer (part of every time)")
    print(f"{'clip':>10} {'batch':>5}  {'source':<14} {'batched':>8} {'naive':>8} {'ratio':>6} {'PIL':>8} {'ratio':>6} "
          f"{'setup ms':>8} {'max|diff|':>9} {'PIL diff':>8}")
    for frames, size, batch in ((16, 112, 16), (8, 32, 64)):
        for r in generation(frames, size, batch, reps):
            setup_ms = f"{1e3 * batch / r.setup:.1f}" if r.setup < math.inf else "-"
            print(f"{f'{frames}x{size}x{size}':>10} {batch:>5}  {r.source:<14} {r.batched:8.1f} {r.naive:8.1f} "
                  f"{r.batched / r.naive:5.1f}x {r.pil:8.1f} {r.batched / r.pil:5.1f}x {setup_ms:>8} {r.diff:9.1e} "
                  f"{r.pil_diff:8.1e}")

    batch = 64
    print(f"\n2. pre-training, tiny preset (8x32x32), batch {batch}, clips/s (median of {reps} x {steps} steps, "
          "interleaved);\n   ratio = in the loop / pre-made, target >= 0.9; mix = 1/2 pmg, 1/4 shapes (image), "
          "1/4 mosi; pmg = zoom + affine, mixup")
    print("   clips are made on the training thread, between steps: expected = alone / (alone + pre-made), the ratio\n"
          "   if making a batch costs in the loop what it costs alone")
    print(f"{'source':<14} {'source alone':>12} {'train+source':>12} {'pre-made':>9} {'ratio':>6} {'expected':>8}")
    for name, videos in SOURCES.items():
        alone, live, fixed = training(videos, batch, steps, reps)
        print(f"{name:<14} {alone:12.1f} {live:12.1f} {fixed:9.1f} {live / fixed:6.2f} {alone / (alone + fixed):8.2f}")
    print(f"\nbench time {time.perf_counter() - began:.0f} s; load average {load()}")


if __name__ == "__main__":
    main()
