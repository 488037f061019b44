"""torch.compile against eager for a VideoMAE pre-training step (forward, backward, AdamW) on the CPU.

Per preset: the compile time, taken as the first compiled step, cold (a fresh Inductor cache, as a first run on a
machine) and warm (compiled again from that cache, as every later run); then clips/s of eager and compiled steps
in interleaved repetitions (medians, best beside), their ratio, and how many clips the compiled step needs to win
back its cold compile time. The step is the training loop's: pmgflow's model and optimizer, masks drawn per step.

    OMP_NUM_THREADS=2 .venv/bin/python bench/compile_speed.py --presets tiny small --batch 16 --steps 3 --reps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from pmgflow.spec.train import PretrainSpec
from pmgflow.train.loop import build_optimizer
from pmgflow.train.pretrain import build_videomae


def pretrain_step(preset: str, batch: int, compiled: bool = False, decoder_mask_ratio: float = 0.0
                  ) -> Callable[[], None]:
    """One pre-training step of a fresh model of `preset` (seed 0) on fixed random videos, as a closure."""
    spec = PretrainSpec(model={"preset": preset}, batch_size=batch, decoder_mask_ratio=decoder_mask_ratio)
    torch.manual_seed(0)
    model = build_videomae(spec).train()
    net = torch.compile(model) if compiled else model
    optimizer = build_optimizer(model, spec)
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(batch, 3, spec.pmg.frames, spec.pmg.size, spec.pmg.size, generator=g)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        mask = model.tube_mask(batch, "cpu", generator=g)
        decoder_mask = model.running_cell_mask(batch, "cpu", generator=g) if decoder_mask_ratio else None
        loss, _, _ = net(videos, mask=mask, decoder_mask=decoder_mask)
        loss.backward()
        optimizer.step()
    return step


def seconds(step: Callable[[], None]) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def interleaved(runs: dict[str, Callable[[], None]], batch: int, steps: int, reps: int, warmup: int = 1
                ) -> dict[str, list[float]]:
    """clips/s of each run in each of `reps` interleaved repetitions of `steps` steps (load hits all alike)."""
    for step in runs.values():
        for _ in range(warmup):
            step()
    rates = {k: [] for k in runs}
    for _ in range(reps):
        for k, step in runs.items():
            rates[k].append(batch * steps / sum(seconds(step) for _ in range(steps)))
    return rates


def timing_parser(description: str, presets: list[str]) -> argparse.ArgumentParser:
    """The flags every step-timing bench takes: presets, batch, steps, repetitions, threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--presets", nargs="+", default=presets)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main() -> None:
    """Parse flags, measure, print a table."""
    args = timing_parser(__doc__.splitlines()[0], ["tiny", "small"]).parse_args()
    torch.set_num_threads(args.threads)
    # A fresh Inductor cache (read when the first compile starts): the first compile is cold, as on a new machine.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="pmgflow-inductor-")
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.reps} x {args.steps} steps; "
          "clips/s median (best)")
    print(f"{'preset':<7} {'compile s cold':>14} {'warm':>6} {'eager':>14} {'compiled':>14} {'ratio':>6} "
          f"{'break-even clips':>16}")
    for preset in args.presets:
        cold = seconds(pretrain_step(preset, args.batch, compiled=True))
        torch._dynamo.reset()  # forget the compiled code; the Inductor cache on disk stays
        compiled = pretrain_step(preset, args.batch, compiled=True)
        warm = seconds(compiled)
        rates = interleaved({"eager": pretrain_step(preset, args.batch), "compiled": compiled}, args.batch,
                            args.steps, args.reps)
        eager, comp = statistics.median(rates["eager"]), statistics.median(rates["compiled"])
        gain = 1 / eager - 1 / comp  # seconds saved per clip
        even = f"{cold / gain:>16.0f}" if gain > 0 else f"{'never':>16}"
        print(f"{preset:<7} {cold:>14.1f} {warm:>6.1f} {eager:>7.1f} ({max(rates['eager']):>5.1f}) "
              f"{comp:>7.1f} ({max(rates['compiled']):>5.1f}) {comp / eager:>6.2f} {even}", flush=True)


if __name__ == "__main__":
    main()
