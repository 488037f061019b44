"""Training-step throughput of pmgflow's models against transformers' VideoMAE, same configuration, same weights.

One step = forward + backward + AdamW. Four contenders per config: pmgflow ``VideoMAE`` vs
``VideoMAEForPreTraining`` (pre-training, tube mask 0.75) and pmgflow ``VideoViT`` vs
``VideoMAEForVideoClassification`` (fine-tuning, cross-entropy). Repetitions are interleaved (A, B, C, D, A, B, ...)
so that load from other processes hits all of them alike; the medians over repetitions are printed with the ratio
pmgflow / transformers (above 1: pmgflow is faster); the best repetition is shown beside, as the figure least
disturbed by other processes on shared cores.

transformers gets its normalized (B, T, C, H, W) pixel values and its mask ready-made; pmgflow normalizes inside
and draws its mask in the step, as in training.

    OMP_NUM_THREADS=2 .venv/bin/python bench/model_throughput.py --config tiny small --steps 3 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pmgflow.model import VideoMAE, VideoViT
from pmgflow.model.interop import to_pixel_values, to_transformers

CONFIGS = {
    "tiny": dict(frames=8, img_size=32, tubelet=2, patch=4, embed_dim=128, depth=4, num_heads=4,
                 decoder=dict(decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4)),
    "small": dict(frames=16, img_size=64, tubelet=2, patch=8, embed_dim=192, depth=6, num_heads=3,
                  decoder=dict(decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3)),
}
NUM_CLASSES = 10


def contenders(name: str, batch: int) -> dict:
    """name -> a step closure, for the four models of one config (transformers' built from ours: same weights)."""
    cfg = dict(CONFIGS[name])
    decoder = cfg.pop("decoder")
    torch.manual_seed(0)
    mae = VideoMAE(**cfg, **decoder, mask_ratio=0.75)
    vit = VideoViT(**cfg, num_classes=NUM_CLASSES)
    hf_mae, hf_vit = to_transformers(mae), to_transformers(vit)
    videos = torch.rand(batch, 3, cfg["frames"], cfg["img_size"], cfg["img_size"])
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


def measure(name: str, batch: int, steps: int, reps: int, warmup: int) -> dict[str, list[float]]:
    """clips/s of each contender in each of ``reps`` interleaved repetitions of ``steps`` steps."""
    runs = contenders(name, batch)
    for run in runs.values():
        for _ in range(warmup):
            run()
    rates = {k: [] for k in runs}
    for _ in range(reps):
        for k, run in runs.items():
            start = time.perf_counter()
            for _ in range(steps):
                run()
            rates[k].append(batch * steps / (time.perf_counter() - start))
    return rates


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
          f"{args.reps} x {args.steps} steps; clips/s, median (best) over repetitions")
    print(f"{'config':<7} {'phase':<9} {'pmgflow':>15} {'transformers':>15} {'ratio':>12}")
    for name in args.config:
        rates = measure(name, args.batch, args.steps, args.reps, args.warmup)
        for phase in ("pretrain", "finetune"):
            ours, theirs = rates[f"{phase} pmgflow"], rates[f"{phase} transformers"]
            med = statistics.median(ours), statistics.median(theirs)
            best = max(ours), max(theirs)
            print(f"{name:<7} {phase:<9} {med[0]:>7.1f} ({best[0]:>5.1f}) {med[1]:>7.1f} ({best[1]:>5.1f}) "
                  f"{med[0] / med[1]:>5.2f} ({best[0] / best[1]:.2f})", flush=True)


if __name__ == "__main__":
    main()
