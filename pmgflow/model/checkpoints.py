"""Model checkpoints: atomic save, safe (weights-only) load, rebuild the model from what was saved.

A checkpoint is a dict saved with ``torch.save``::

    {
        "kind": "pretrain" | "finetune",  # VideoMAE or VideoViT
        "model": model.state_dict(),
        "model_config": model.model_config,  # its VideoViTConfig's fields and its own settings, one flat dict
        ...                                  # anything the trainer adds: optimizer, scaler, epoch, spec hash
    }

:func:`checkpoint_state` builds the first three entries. Everything in it must load under
``torch.load(weights_only=True)``: tensors, numbers, strings, and lists / tuples / dicts of them (no numpy arrays,
no arbitrary objects), so that reading a checkpoint never runs code from the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from pmgflow.errors import PmgflowError
from pmgflow.model.videomae import VideoMAE
from pmgflow.model.vit import VideoViT

MODEL_KINDS: dict[str, type[nn.Module]] = {"pretrain": VideoMAE, "finetune": VideoViT}


def checkpoint_state(model: VideoMAE | VideoViT, **extra) -> dict:
    """The checkpoint dict for model (kind, weights, config) plus the trainer's ``extra`` entries."""
    kind = next(k for k, cls in MODEL_KINDS.items() if isinstance(model, cls))
    return {"kind": kind, "model": model.state_dict(), "model_config": model.model_config, **extra}


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write state to path atomically: a temporary file in the same directory, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; a missing or unreadable file raises PmgflowError."""
    path = Path(path)
    if not path.is_file():
        raise PmgflowError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated, foreign or unsafe files
        raise PmgflowError(f"checkpoint {path} is corrupt or not a weights-only torch checkpoint: {e}") from e
    if not isinstance(state, dict):
        raise PmgflowError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def build_model_from_checkpoint(ckpt: dict | str | os.PathLike) -> VideoMAE | VideoViT:
    """Rebuild the saved model (VideoMAE for "pretrain", VideoViT for "finetune") with its weights, on the CPU."""
    where = "checkpoint"
    if not isinstance(ckpt, dict):
        where = f"checkpoint {ckpt}"
        ckpt = load_checkpoint(ckpt)
    missing = [k for k in ("kind", "model", "model_config") if k not in ckpt]
    if missing:
        raise PmgflowError(f"{where} lacks {', '.join(missing)}")
    if ckpt["kind"] not in MODEL_KINDS:
        raise PmgflowError(f"{where}: kind {ckpt['kind']!r} is not one of {', '.join(MODEL_KINDS)}")
    try:
        model = MODEL_KINDS[ckpt["kind"]].from_model_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise PmgflowError(f"{where}: weights do not match model_config: {e}") from e
    return model
