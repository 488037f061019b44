"""Fine-tuning end to end (`pmgflow.train.finetune`, clips from the data path) against the model alone.

Both sides train the same classifier with the same optimizer and batch: "model alone" steps on one pre-made
batch of clips (forward + backward + AdamW, nothing else), "end to end" is a fine-tuning run whose clips/s the
run itself measures over its epochs (loader, crops, flips, transfers, loss bookkeeping included). Repetitions
alternate (model, end to end, model, ...) so that other load on shared cores hits both alike; medians printed.

    python bench/finetune_throughput.py --preset tiny --threads 2 --reps 3 --workers 0 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pmgflow.spec.train import FinetuneSpec
from pmgflow.train.finetune import build_classifier, finetune
from pmgflow.train.loop import build_optimizer, configure_threads

# The main job's fine-tuning recipe (experiments/base.yaml), on the embedded action set.
RECIPE = dict(dataset={"kind": "actions", "classes": 10, "train_per_class": 60, "test_per_class": 20},
              batch_size=32, blr=4.0e-3, warmup_epochs=0, mixup=0.0, cutmix=0.0, layer_decay=1.0,
              head_init_scale=1.0, test_segments=1, test_crops=1)


def model_alone(spec: FinetuneSpec, steps: int) -> float:
    """Clips/s of bare training steps on one pre-made batch."""
    model, _ = build_classifier(spec, 10, None)
    optimizer = build_optimizer(model, spec)
    c = model.config
    videos = torch.rand(spec.batch_size, 3, c.frames, c.img_size, c.img_size)
    labels = torch.randint(0, 10, (spec.batch_size,))
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for i in range(steps + 1):
        if i == 1:  # the first step allocates; time the rest
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(videos), labels).backward()
        optimizer.step()
    return steps * spec.batch_size / (time.perf_counter() - start)


def end_to_end(spec: FinetuneSpec, root: Path) -> float:
    """Clips/s a fine-tuning run measures over its training epochs (a new run directory each time)."""
    history = []
    finetune(spec, root=root, on_epoch=lambda epoch, m: history.append(m["clips_per_s"]))
    return statistics.median(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="Epochs per end-to-end run (600 clips each).")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="Loader worker counts to compare.")
    args = parser.parse_args()
    configure_threads(args.threads)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}; torch threads: {args.threads}; preset {args.preset}; batch {RECIPE['batch_size']}")
    spec = FinetuneSpec(**RECIPE, model={"preset": args.preset}, epochs=args.epochs, threads=args.threads)
    steps = args.epochs * 600 // spec.batch_size
    end_to_end(spec.model_copy(update={"epochs": 1}), Path(tempfile.mkdtemp()))  # render and decode the set once
    alone: list[float] = []
    e2e: dict[int, list[float]] = {w: [] for w in args.workers}
    for rep in range(args.reps):
        alone.append(model_alone(spec, steps))
        for w in args.workers:
            run_spec = spec.model_copy(update={"seed": rep, "loader": spec.loader.model_copy(update={"workers": w})})
            e2e[w].append(end_to_end(run_spec, Path(tempfile.mkdtemp())))
        print(f"rep {rep}: model alone {alone[-1]:.1f} clips/s; "
              + "; ".join(f"end to end, {w} worker(s) {v[-1]:.1f}" for w, v in e2e.items()), flush=True)
    base = statistics.median(alone)
    print(f"\n| path | clips/s (median of {args.reps}) | / model alone |\n|---|---|---|")
    print(f"| model alone | {base:.1f} | 1.00 |")
    for w, values in e2e.items():
        print(f"| end to end, {w} loader worker(s) | {statistics.median(values):.1f} | "
              f"{statistics.median(values) / base:.2f} |")


if __name__ == "__main__":
    main()
