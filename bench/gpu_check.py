"""One-shot acceptance check of pmgflow on a GPU machine: one command, one JSON summary, one short table.

Sections (each timed; a failing section is recorded with its error and the others still run):

1. environment: device, driver, CUDA, torch, timm, Ray, MLflow, decoders, CPU;
2. peak: the device's dense matmul FLOP/s, measured here (bf16 8192^3 on CUDA, fp32 on the CPU);
3. pretrain: VideoMAE pre-training steps (bf16 autocast, fused AdamW) at the paper's size, ViT-B 16x224x224,
   mask 0.75: clips/s and MFU (FLOPs per clip counted by torch.utils.flop_counter, over the measured peak),
   and the PMG's generation time (crop + Zoom/Affine + Mixup, on the device) as a share of a step;
4. finetune: fine-tuning steps fed by the streaming data path (clips decoded on the fly in loader workers) from
   a generated UCF101-layout tree of 320x240 videos, beside the loader's own clips/s;
5. determinism: two identical short pre-training runs, final losses and weights compared;
6. smoke: a two-trial `pmgflow sweep --smoke` of experiments/paper (ViT-B, 16x224x224, 5x3 test views) through
   Ray and MLflow, with its resume check.

Without CUDA it runs a CPU fallback at tiny sizes (under 2 minutes on 2 cores) and says that no GPU figure was
measured.

    python bench/gpu_check.py --out gpu_check.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"pretrain_mfu": 0.40, "pmg_share": 0.05}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, reps: int, warmup: int = 2) -> float:
    """Seconds per call of fn() (after warm-up calls), the device synchronised around the timed block."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / reps


def environment(device: torch.device) -> dict:
    """Device, driver and library versions."""
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    env = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
           **{pkg: version(pkg) for pkg in ("torch", "timm", "ray", "mlflow", "decord", "av", "pmgflow")}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        env |= {"device": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                "driver": smi.stdout.strip() or None, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    else:
        env |= {"device": "cpu (no CUDA device)"}
    return env


def peak_flops(device: torch.device) -> dict:
    """Dense matmul FLOP/s of this device: bf16 on CUDA, fp32 on the CPU; best of several timings."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = min(_timed(lambda: a @ b, device, reps=10 if device.type == "cuda" else 3) for _ in range(3))
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "flops_per_s": 2 * n**3 / best}


def pretrain_steps(device: torch.device, preset: str, batch: int, steps: int, peak: float) -> dict:
    """Pre-training throughput and MFU, and the PMG's share of a step."""
    from pmgflow.data.store import store_size
    from pmgflow.model.flops import preset_flops_per_clip
    from pmgflow.pmg.clips import pmg_clips
    from pmgflow.pmg.generator import PseudoMotionGenerator
    from pmgflow.spec.pmg import PMGSpec
    from pmgflow.spec.train import PretrainSpec
    from pmgflow.train.loop import autocast, build_optimizer
    from pmgflow.train.pretrain import build_videomae

    spec = PretrainSpec(model={"preset": preset}, batch_size=batch, device=str(device))
    torch.manual_seed(0)
    model = build_videomae(spec).to(device)
    optimizer = build_optimizer(model, spec)
    frames, size = spec.model.frames, spec.model.img_size
    pmg = PseudoMotionGenerator(PMGSpec(transforms=["zoom", "affine"], augment={"kind": "mixup"}, frames=frames,
                                        size=size))
    stored = store_size(size)  # images are kept a little larger than the clips, as in pre-training
    images = torch.randint(0, 256, (batch, 3, stored, stored), dtype=torch.uint8,
                           device=device)
    buffer = torch.empty(batch, 3, frames, size, size, device=device)
    g = torch.Generator().manual_seed(0)

    def generate() -> torch.Tensor:
        return pmg_clips(pmg, images, spec.crop_scale, g, out=buffer)

    videos = generate()
    losses = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss, _, _ = model(videos, generator=g if device.type == "cpu" else None)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())

    step_s = _timed(step, device, steps)
    pmg_s = _timed(generate, device, steps)
    flops = preset_flops_per_clip(preset, mask_ratio=spec.mask_ratio)
    clips = batch / step_s
    return {"preset": preset, "clip": f"{frames}x{size}x{size}", "batch": batch, "step_s": step_s,
            "clips_per_s": clips, "flops_per_clip": flops["pretrain"], "mfu": clips * flops["pretrain"] / peak,
            "pmg_s": pmg_s, "pmg_share": pmg_s / (pmg_s + step_s), "loss": float(losses[-1]),
            "max_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def finetune_streaming(device: torch.device, preset: str, batch: int, steps: int, peak: float, work: Path) -> dict:
    """Fine-tuning steps fed by clips decoded on the fly from a generated UCF101 tree, and the loader alone."""
    from pmgflow.data.layouts import index_dataset
    from pmgflow.data.store import StreamedVideos, store_size
    from pmgflow.data.synth import write_synthetic
    from pmgflow.data.video import ClipDataset, clip_loader, loader_workers
    from pmgflow.model.flops import preset_flops_per_clip
    from pmgflow.spec.data import VideoDatasetSpec, VideoLoaderSpec
    from pmgflow.spec.train import FinetuneSpec
    from pmgflow.train.finetune import build_classifier
    from pmgflow.train.loop import autocast, build_optimizer

    root = write_synthetic("ucf101", work / "ucf101", classes=3, train_per_class=4, test_per_class=1, frames=100,
                           size=(320, 240))
    spec = FinetuneSpec(model={"preset": preset}, dataset={"kind": "ucf101", "root": str(root)}, batch_size=batch,
                        device=str(device))
    model, _ = build_classifier(spec, 3, None)
    model.to(device)
    optimizer = build_optimizer(model, spec)
    frames, size = spec.model.frames, spec.model.img_size
    data = ClipDataset(StreamedVideos(index_dataset(VideoDatasetSpec(kind="ucf101", root=root), "train"),
                                      store_size(size)), frames=frames, stride=4, size=size, train=True)
    loader_spec = VideoLoaderSpec()
    workers = loader_workers(loader_spec, streaming=True)

    def batches():
        loader = clip_loader(data, batch, loader_spec, device, seed=0, length=batch * (steps + 1))
        it = iter(loader)
        yield next(it)  # worker start-up, not timed
        yield from it

    def run(train: bool) -> float:
        it = batches()
        videos, labels = next(it)
        _sync(device)
        start, n = time.perf_counter(), 0
        for videos, labels in it:
            n += len(videos)
            if train:
                optimizer.zero_grad(set_to_none=True)
                with autocast(device):
                    loss = torch.nn.functional.cross_entropy(model(videos.to(device, non_blocking=True)).float(),
                                                             labels.to(device))
                loss.backward()
                optimizer.step()
        _sync(device)
        return n / (time.perf_counter() - start)

    loader_only = run(train=False)
    end_to_end = run(train=True)
    flops = preset_flops_per_clip(preset, num_classes=3)["finetune"]
    return {"preset": preset, "clip": f"{frames}x{size}x{size}, stride 4", "batch": batch, "loader_workers": workers,
            "loader_clips_per_s": loader_only, "train_clips_per_s": end_to_end,
            "mfu": end_to_end * flops / peak, "flops_per_clip": flops}


def determinism(device: torch.device, work: Path) -> dict:
    """Two identical short pre-training runs (separate run directories): equal losses and weights?"""
    from pmgflow.model.checkpoints import load_checkpoint
    from pmgflow.spec.train import PretrainSpec
    from pmgflow.train.pretrain import pretrain

    spec = PretrainSpec(model={"preset": "small"}, source={"kind": "fractal", "categories": 4, "images": 64,
                                                           "size": 64},
                        epochs=2, batch_size=16, warmup_epochs=0, device=str(device))
    results = [pretrain(spec, root=work / f"run{i}") for i in (0, 1)]
    a, b = (load_checkpoint(r["checkpoint"])["model"] for r in results)
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {"losses": [r["pretrain_loss"] for r in results], "identical_weights": diff == 0.0,
            "max_weight_difference": diff}


def smoke(device: torch.device, work: Path) -> dict:
    """A two-trial sweep --smoke through Ray and MLflow (paper scale on CUDA, CPU scale otherwise)."""
    base = REPO / "experiments" / ("paper/base.yaml" if device.type == "cuda" else "base.yaml")
    values = [0, 200] if device.type == "cuda" else [0, 4]
    sweep = work / "two-trials.yaml"
    sweep.write_text(f"extends: {base}\nname: gpu-check-smoke\naxes:\n  - path: pretrain.epochs\n"
                     f"    values: {values}\n")
    cmd = [sys.executable, "-c", "from pmgflow.cli import app; app()", "sweep", str(sweep), "--smoke",
           "--runs", str(work / "runs"), "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    return {"command": "pmgflow " + " ".join(cmd[3:]), "exit_code": proc.returncode, "seconds": time.perf_counter() - start,
            "output_tail": (proc.stdout + proc.stderr)[-3000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--batch", type=int, default=64, help="Pre-training batch on CUDA (ViT-B).")
    parser.add_argument("--skip", nargs="*", default=[], help="Sections to leave out.")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = Path(tempfile.mkdtemp(prefix="pmgflow-gpu-check-"))
    os.environ["PMGFLOW_CACHE"] = str(work / "cache")
    preset, batch, ft_batch, steps = ("base", args.batch, 16, 10) if cuda else ("tiny", 16, 8, 3)
    summary: dict = {"gpu_measured": cuda, "work_dir": str(work), "sections": {}}
    sections = {
        "environment": lambda: environment(device),
        "peak": lambda: peak_flops(device),
        "pretrain": lambda: pretrain_steps(device, preset, batch, steps, summary["sections"]["peak"]["flops_per_s"]),
        "finetune": lambda: finetune_streaming(device, preset, ft_batch, steps,
                                               summary["sections"]["peak"]["flops_per_s"], work),
        "determinism": lambda: determinism(device, work),
        "smoke": lambda: smoke(device, work),
    }
    for name, fn in sections.items():
        if name in args.skip:
            continue
        start = time.perf_counter()
        try:
            summary["sections"][name] = fn()
        except Exception as exc:  # a failing section is a finding: record it, keep checking the rest
            summary["sections"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                         "traceback": traceback.format_exc()[-2000:]}
        summary["sections"][name]["section_seconds"] = time.perf_counter() - start
        print(f"{name}: done in {summary['sections'][name]['section_seconds']:.1f} s", flush=True)
    args.out.write_text(json.dumps(summary, indent=2, default=str))
    print(table(summary))
    print(f"summary: {args.out}")


def table(summary: dict) -> str:
    """The short Markdown table of the summary's headline figures."""
    s = summary["sections"]
    rows = [("device", s.get("environment", {}).get("device"))]
    if "error" not in s.get("peak", {"error": 1}):
        rows.append((f"peak ({s['peak']['dtype']} matmul)", f"{s['peak']['flops_per_s'] / 1e12:.1f} TFLOP/s"))
    pre = s.get("pretrain", {})
    if "clips_per_s" in pre:
        rows += [(f"pre-training {pre['preset']} {pre['clip']}, batch {pre['batch']}",
                  f"{pre['clips_per_s']:.1f} clips/s, MFU {pre['mfu']:.1%} (target {TARGETS['pretrain_mfu']:.0%})"),
                 ("PMG share of a step", f"{pre['pmg_share']:.1%} (target under {TARGETS['pmg_share']:.0%})")]
    ft = s.get("finetune", {})
    if "train_clips_per_s" in ft:
        rows.append((f"fine-tuning {ft['preset']}, streamed clips, {ft['loader_workers']} workers",
                     f"{ft['train_clips_per_s']:.1f} clips/s (loader alone {ft['loader_clips_per_s']:.1f}), "
                     f"MFU {ft['mfu']:.1%}"))
    det = s.get("determinism", {})
    if "losses" in det:
        rows.append(("two identical runs", f"losses {det['losses'][0]:.6f} / {det['losses'][1]:.6f}, weights "
                     + ("identical" if det["identical_weights"] else f"differ by {det['max_weight_difference']:.2e}")))
    if "exit_code" in s.get("smoke", {}):
        rows.append(("two-trial sweep --smoke", f"exit {s['smoke']['exit_code']} in {s['smoke']['seconds']:.0f} s"))
    rows += [(f"{name}: FAILED", v["error"]) for name, v in s.items() if "error" in v]
    lines = ["| check | result |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if not summary["gpu_measured"]:
        lines.append("\nNo CUDA device: CPU fallback at tiny sizes; no GPU figure was measured.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
