"""Training-step throughput of pmgflow's models against transformers' VideoMAE, same configuration, same weights.

One step = forward + backward + AdamW. Four contenders per config: pmgflow ``VideoMAE`` vs
``VideoMAEForPreTraining`` (pre-training, tube mask 0.75) and pmgflow ``VideoViT`` vs
``VideoMAEForVideoClassification`` (fine-tuning, cross-entropy). Repetitions are interleaved (A, B, C, D, A, B, ...)
so that load from other processes hits all of them alike; the medians over repetitions are printed with the ratio
pmgflow / transformers (above 1: pmgflow is faster); the best repetition is shown beside, as the figure least
disturbed by other processes on shared cores.

transformers gets its normalized (B, T, C, H, W) pixel values and its mask ready-made; pmgflow normalizes inside
and draws its mask in the step, as in training.

Beside clips/s, the model FLOP utilisation: MFU = clips/s x training FLOPs per clip (forward + backward matmuls,
counted by pmgflow.model.flops) / peak FLOP/s, where the CPU's peak is the best of large float32 matmuls timed
between the repetitions (on shared cores, a peak taken once would see another moment's load). Last, the FLOPs
per clip of ViT-B/16 at 16x224x224 (pre-training at mask 0.75, fine-tuning) and the clips/s they project for an
H200 at 40 % MFU.

    OMP_NUM_THREADS=2 .venv/bin/python bench/model_throughput.py --config tiny small --steps 3 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pmgflow.model import VideoMAE, VideoViT, VideoViTConfig
from pmgflow.model.flops import finetune_flops_per_clip, preset_flops_per_clip, pretrain_flops_per_clip
from pmgflow.model.interop import to_pixel_values, to_transformers
from pmgflow.spec.model import ModelSpec

CONFIGS = {name: VideoViTConfig.from_spec(ModelSpec(preset=name)) for name in ("tiny", "small")}
NUM_CLASSES = 10
H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s
PROJECTED_MFU = 0.4


def matmul_flops_per_s(n: int = 2048) -> float:
    """FLOP/s of one float32 (n x n) @ (n x n) matmul on the current threads (the CPU's peak: best of several)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    start = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - start)


def config_flops(name: str) -> dict[str, int]:
    """Training FLOPs per clip of a config: {"pretrain": ..., "finetune": ...} (transformers' models alike)."""
    config = CONFIGS[name]
    return {"pretrain": pretrain_flops_per_clip(VideoMAE(config, mask_ratio=0.75)),
            "finetune": finetune_flops_per_clip(VideoViT(config, num_classes=NUM_CLASSES))}


def contenders(name: str, batch: int) -> dict:
    """name -> a step closure, for the four models of one config (transformers' built from ours: same weights)."""
    config = CONFIGS[name]
    torch.manual_seed(0)
    mae = VideoMAE(config, mask_ratio=0.75)
    vit = VideoViT(config, num_classes=NUM_CLASSES)
    hf_mae, hf_vit = to_transformers(mae), to_transformers(vit)
    videos = torch.rand(batch, 3, config.frames, config.img_size, config.img_size)
    pixel_values = to_pixel_values(videos)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    hf_mask = mae.tube_mask(batch, "cpu")

    def step(model, loss_fn):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
        model.train()

        def run():
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model).backward()
            optimizer.step()
        return run

    return {
        "pretrain pmgflow": step(mae, lambda m: m(videos)[0]),
        "pretrain transformers": step(hf_mae, lambda m: m(pixel_values, bool_masked_pos=hf_mask).loss),
        "finetune pmgflow": step(vit, lambda m: F.cross_entropy(m(videos), labels)),
        "finetune transformers": step(hf_vit, lambda m: m(pixel_values, labels=labels).loss),
    }


def measure(name: str, batch: int, steps: int, reps: int, warmup: int) -> tuple[dict[str, list[float]], float]:
    """clips/s of each contender in each of ``reps`` interleaved repetitions of ``steps`` steps, and the matmul
    peak FLOP/s: the best of matmuls timed between the repetitions, under the load they saw."""
    runs = contenders(name, batch)
    for run in runs.values():
        for _ in range(warmup):
            run()
    rates = {k: [] for k in runs}
    peaks = [matmul_flops_per_s()]  # the first also warms the matmul up
    for _ in range(reps):
        for k, run in runs.items():
            start = time.perf_counter()
            for _ in range(steps):
                run()
            rates[k].append(batch * steps / (time.perf_counter() - start))
        peaks += [matmul_flops_per_s() for _ in range(2)]
    return rates, max(peaks)


def main() -> None:
    """Parse flags, measure, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=["tiny", "small"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{args.reps} x {args.steps} steps; clips/s, median (best) over repetitions; "
          "MFU of the medians against the float32 matmul peak measured between them")
    print(f"{'config':<7} {'phase':<9} {'pmgflow':>15} {'transformers':>15} {'ratio':>12} {'GFLOP/clip':>10} "
          f"{'MFU pmgflow':>11} {'transformers':>12} {'peak GFLOP/s':>12}")
    for name in args.config:
        rates, peak = measure(name, args.batch, args.steps, args.reps, args.warmup)
        flops = config_flops(name)
        for phase in ("pretrain", "finetune"):
            ours, theirs = rates[f"{phase} pmgflow"], rates[f"{phase} transformers"]
            med = statistics.median(ours), statistics.median(theirs)
            best = max(ours), max(theirs)
            mfu = [rate * flops[phase] / peak for rate in med]
            print(f"{name:<7} {phase:<9} {med[0]:>7.1f} ({best[0]:>5.1f}) {med[1]:>7.1f} ({best[1]:>5.1f}) "
                  f"{med[0] / med[1]:>5.2f} ({best[0] / best[1]:.2f}) {flops[phase] / 1e9:>10.2f} "
                  f"{mfu[0]:>11.1%} {mfu[1]:>12.1%} {peak / 1e9:>12.1f}", flush=True)
    vit_b = preset_flops_per_clip("base", mask_ratio=0.75)
    for phase, value in vit_b.items():
        clips = PROJECTED_MFU * H200_BF16_PEAK / value
        print(f"ViT-B/16 16x224x224 {phase}: {value / 1e9:.1f} GFLOP per clip (forward + backward); "
              f"an H200 at {PROJECTED_MFU:.0%} MFU of {H200_BF16_PEAK / 1e12:.0f} TFLOP/s: {clips:.0f} clips/s")


if __name__ == "__main__":
    main()
