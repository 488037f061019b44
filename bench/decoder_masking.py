"""VideoMAE V2 decoder masking: a pre-training step (forward, backward, AdamW) with decoder_mask_ratio 0.5 against
0 (plain VideoMAE), eager on the CPU, in interleaved repetitions (medians, best beside), with the FLOPs per clip of
both (counted on the meta device) for the share of the step that decoder masking can remove.

    OMP_NUM_THREADS=2 .venv/bin/python bench/decoder_masking.py --presets small --batch 16 --steps 3 --reps 5
"""

from __future__ import annotations

import statistics

import torch
from compile_speed import interleaved, pretrain_step, timing_parser

from pmgflow.model.flops import preset_flops_per_clip


def main() -> None:
    """Parse flags, measure, print a table."""
    parser = timing_parser(__doc__.splitlines()[0], ["small"])
    parser.add_argument("--ratio", type=float, default=0.5, help="decoder mask ratio against 0")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.reps} x {args.steps} steps, "
          f"mask ratio 0.75; decoder mask ratio {args.ratio} against 0; clips/s median (best)")
    print(f"{'preset':<7} {'GFLOP/clip off':>14} {'on':>7} {'FLOP ratio':>10} {'clips/s off':>14} {'on':>14} "
          f"{'speed-up':>8}")
    for preset in args.presets:
        off, on = (preset_flops_per_clip(preset, decoder_mask_ratio=r)["pretrain"] for r in (0.0, args.ratio))
        rates = interleaved({"off": pretrain_step(preset, args.batch),
                             "on": pretrain_step(preset, args.batch, decoder_mask_ratio=args.ratio)},
                            args.batch, args.steps, args.reps)
        fast, slow = statistics.median(rates["on"]), statistics.median(rates["off"])
        print(f"{preset:<7} {off / 1e9:>14.2f} {on / 1e9:>7.2f} {on / off:>10.2f} "
              f"{slow:>7.1f} ({max(rates['off']):>5.1f}) {fast:>7.1f} ({max(rates['on']):>5.1f}) {fast / slow:>8.2f}",
              flush=True)


if __name__ == "__main__":
    main()
