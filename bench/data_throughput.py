"""Clips/s the streaming data path delivers at paper scale, and what that means on a GPU machine.

A UCF101-layout tree of generated 320x240 videos (moving squares over a gradient, about 7 s at 25 fps, MPEG-4
.avi as the official archive ships) is made once, then transcoded to h264 .mp4 twice: with x264's default
keyframe interval (250) and as `pmgflow data prepare` does (a keyframe every 16 frames). Training clips of 16 frames at stride 4, random resized crop to 224x224 and flip
(VideoMAE's fine-tuning input), are read through the fine-tuning loader (decoded clip by clip in worker
processes) from both trees, with 1 and 2 workers. The FLOPs of a ViT-B fine-tuning step are counted
(torch.utils.flop_counter) to give what one H200 consumes at 40 % MFU, against what 15 workers (16 cores, one
kept for the training process) would deliver at the measured per-worker rate.

    python bench/data_throughput.py --videos 24 --batches 12
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from pmgflow.data.layouts import index_dataset, prepare_dataset
from pmgflow.data.store import StreamedVideos
from pmgflow.data.synth import write_synthetic
from pmgflow.data.video import ClipDataset, clip_loader
from pmgflow.paths import cache_dir
from pmgflow.spec.data import VideoDatasetSpec, VideoLoaderSpec

H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s (NVIDIA's H200 SXM figure, without sparsity)
MFU = 0.40
FRAMES, STRIDE, SIZE, STORE = 16, 4, 224, 280


def make_trees(videos: int, seconds: float) -> dict[str, VideoDatasetSpec]:
    """The raw (.avi, MPEG-4) tree and its prepared copy (h264, keyframe every 16 frames), made once."""
    root = cache_dir("bench", f"ucf-{videos}-{seconds:g}s")
    raw, prepared = root / "raw", root / "prepared"
    if not (raw / "splits").is_dir():
        classes = 3
        write_synthetic("ucf101", raw, classes=classes, train_per_class=-(-videos // classes), test_per_class=1,
                        frames=round(25 * seconds), size=(320, 240))
    spec = VideoDatasetSpec(kind="ucf101", root=raw)
    long_gop = root / "h264-gop250"
    if not (long_gop / "splits").is_dir():
        prepare_dataset(spec, long_gop, short_side=240, keyframe_interval=250)
    if not (prepared / "splits").is_dir():
        prepare_dataset(spec, prepared, short_side=240, keyframe_interval=16)
    return {"raw .avi (MPEG-4, keyframe every 12)": spec,
            "h264 .mp4, keyframe every 250 (x264's default)": VideoDatasetSpec(kind="ucf101", root=long_gop),
            "prepared .mp4 (h264, keyframe every 16)": VideoDatasetSpec(kind="ucf101", root=prepared)}


def clips_per_s(spec: VideoDatasetSpec, workers: int, batch: int, batches: int) -> float:
    """Training clips per second through the fine-tuning loader, after its first batch (worker start-up)."""
    index = index_dataset(spec, "train")
    data = ClipDataset(StreamedVideos(index, STORE), frames=FRAMES, stride=STRIDE, size=SIZE, train=True)
    loader = clip_loader(data, batch, VideoLoaderSpec(workers=workers, prefetch=2), torch.device("cpu"), seed=0,
                         length=batch * (batches + 1))
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = sum(len(videos) for videos, _ in it)
    return n / (time.perf_counter() - start)


def finetune_flops_per_clip() -> float:
    """FLOPs of one ViT-B 16x224x224 fine-tuning step (forward + backward) per clip."""
    from pmgflow.model.flops import preset_flops_per_clip

    return preset_flops_per_clip("base")["finetune"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24, help="Training videos in the generated tree.")
    parser.add_argument("--seconds", type=float, default=7.0, help="Length of each video.")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12, help="Timed batches per measurement.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}; clips {FRAMES}x{SIZE}x{SIZE}, stride {STRIDE}, batch {args.batch}")
    trees = make_trees(args.videos, args.seconds)
    rates: dict[tuple[str, int], float] = {}
    print("\n| videos | loader workers | clips/s |\n|---|---|---|")
    for name, spec in trees.items():
        for workers in args.workers:
            rates[name, workers] = clips_per_s(spec, workers, args.batch, args.batches)
            print(f"| {name} | {workers} | {rates[name, workers]:.1f} |", flush=True)
    flops = finetune_flops_per_clip()
    need = MFU * H200_BF16_PEAK / flops
    print(f"\nViT-B fine-tuning step: {flops / 1e9:.0f} GFLOP per clip; one H200 at {MFU:.0%} MFU consumes "
          f"{need:.0f} clips/s")
    for name in trees:
        per_worker = rates[name, args.workers[0]] / args.workers[0]
        supply = 15 * per_worker
        print(f"{name}: {per_worker:.1f} clips/s per worker -> 15 workers about {supply:.0f} clips/s "
              f"({supply / need:.2f} of what the GPU consumes)")


if __name__ == "__main__":
    main()
