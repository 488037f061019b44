"""End-to-end pre-training throughput with PMG generation in the loop, divided by throughput on pre-made videos.

Both arms run the same VideoMAE training step (forward, backward, AdamW) on the same model; the first also
samples images, crops them and generates the pseudo-motion videos on the fly, the second reads videos that
were generated beforehand. Repetitions are interleaved; medians and the ratio are printed.

    python bench/pipeline_throughput.py --presets tiny small --batch 32 --steps 5 --reps 5 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pmgflow.pmg.clips import ImageClips
from pmgflow.spec.train import PretrainSpec
from pmgflow.train.loop import build_optimizer
from pmgflow.train.pretrain import build_videomae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="training steps per repetition")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"pre-training clips/s (median of {args.reps} x {args.steps} steps), batch {args.batch}, "
          f"{args.threads} threads; PMG = zoom + affine with mixup, fractal source")
    print(f"{'preset':>7} {'with PMG':>9} {'pre-made':>9} {'ratio':>6}")
    for preset in args.presets:
        spec = PretrainSpec(model={"preset": preset}, batch_size=args.batch,
                            source={"kind": "fractal", "categories": 16, "images": 256, "size": 96},
                            pmg={"transforms": ["zoom", "affine"], "augment": {"kind": "mixup"}})
        clips = ImageClips.of(spec)
        model = build_videomae(spec)
        opt = build_optimizer(model, spec)
        g = torch.Generator().manual_seed(0)
        buffer = torch.empty(args.batch, 3, spec.pmg.frames, spec.pmg.size, spec.pmg.size)

        def make_videos(out: torch.Tensor | None = buffer) -> torch.Tensor:
            idx = torch.randint(0, len(clips), (args.batch,), generator=g)
            return clips.clips(idx, g, out=out)  # reusing one buffer, as the pre-training loop does

        def step(videos: torch.Tensor) -> None:
            mask = model.tube_mask(videos.shape[0], "cpu", generator=g)
            loss, _, _ = model(videos, mask=mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        premade = [make_videos(out=None) for _ in range(args.steps)]
        step(premade[0])  # warm-up
        live, fixed = [], []
        for _ in range(args.reps):
            start = time.perf_counter()
            for _ in range(args.steps):
                step(make_videos())
            live.append(args.steps * args.batch / (time.perf_counter() - start))
            start = time.perf_counter()
            for videos in premade:
                step(videos)
            fixed.append(args.steps * args.batch / (time.perf_counter() - start))
        a, b = statistics.median(live), statistics.median(fixed)
        print(f"{preset:>7} {a:9.1f} {b:9.1f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
