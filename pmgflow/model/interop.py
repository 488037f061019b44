"""Checkpoint interop with Hugging Face transformers' VideoMAE and with official VideoMAE checkpoints.

* :func:`to_transformers` / :func:`from_transformers` convert weights both ways, exactly:
  ``VideoMAE`` <-> ``VideoMAEForPreTraining``, ``VideoViT`` with a head <-> ``VideoMAEForVideoClassification``,
  ``VideoViT`` without a head <-> ``VideoMAEModel`` (with its final layernorm, ``use_mean_pooling=False``).
  transformers takes ImageNet-normalized ``pixel_values`` shaped (B, T, C, H, W); pmgflow takes [0, 1] videos
  (B, C, T, H, W) and normalizes inside, see :func:`to_pixel_values`.
* :func:`export_hf` writes a pmgflow checkpoint as a transformers folder (config.json + model.safetensors).
* :func:`import_videomae_checkpoint` reads an official VideoMAE checkpoint into pmgflow names.
* :func:`import_checkpoint` writes a transformers folder or an official checkpoint as a pmgflow checkpoint.

Attention biases: VideoMAE has query and value biases but no key bias; pmgflow's fused ``qkv`` bias carries a key
part, which is set to zero on import and dropped on export. Dropping it is exact even when it is not zero: a key
bias adds ``q . b_k`` to every logit of a query row, which softmax cancels.

transformers hard-codes LayerNorm eps 1e-5 for ``fc_norm`` and the decoder's final norm (VideoMAE and pmgflow use
1e-6); :func:`to_transformers` sets 1e-6 on the model it returns, a folder reloaded by transformers gets 1e-5 back
(a relative difference of about 1e-6 in those norms' outputs).

transformers is optional: these functions import it when called and raise PmgflowError if it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from pmgflow.errors import PmgflowError
from pmgflow.model.checkpoints import build_model_from_checkpoint, checkpoint_state, load_checkpoint, save_checkpoint
from pmgflow.model.config import VideoViTConfig
from pmgflow.model.videomae import VideoMAE
from pmgflow.model.vit import VideoViT, sinusoid_table

# (pmgflow, transformers) names inside one transformer block; the fused qkv is handled apart.
_BLOCK_PARTS = [
    ("norm1.", "layernorm_before."),
    ("attn.proj.", "attention.output.dense."),
    ("norm2.", "layernorm_after."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
]
_QKV_HF = ("query", "key", "value")


def _transformers():
    """The transformers module, or a PmgflowError that says how to install it."""
    try:
        import transformers
    except ImportError as e:
        raise PmgflowError("checkpoint interop needs transformers: pip install 'transformers>=4.45'") from e
    return transformers


def to_pixel_values(videos: torch.Tensor) -> torch.Tensor:
    """pmgflow videos (B, C, T, H, W) in [0, 1] -> transformers pixel_values (B, T, C, H, W), ImageNet-normalized."""
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=videos.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=videos.device).view(1, 3, 1, 1, 1)
    return ((videos - mean) / std).transpose(1, 2)


def _name_table(kind: str, depth: int, decoder_depth: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(prefix renames, qkv prefixes) between pmgflow and transformers names for one model kind.

    kind: "pretrain" (VideoMAE), "classifier" (VideoViT with head) or "encoder" (VideoViT without head).
    """
    ours, hf = {"pretrain": ("encoder.", "videomae."), "classifier": ("", "videomae."), "encoder": ("", "")}[kind]
    renames = [(ours + "patch_embed.proj.", hf + "embeddings.patch_embeddings.projection.")]
    blocks = [(f"{ours}blocks.{i}.", f"{hf}encoder.layer.{i}.") for i in range(depth)]
    if kind == "classifier":
        renames += [("fc_norm.", "fc_norm."), ("head.", "classifier.")]
    else:
        renames.append((ours + "norm.", hf + "layernorm."))
    if kind == "pretrain":
        renames += [(k, k) for k in ("encoder_to_decoder.", "mask_token", "decoder.norm.", "decoder.head.")]
        blocks += [(f"decoder.blocks.{i}.", f"decoder.decoder_layers.{i}.") for i in range(decoder_depth)]
    renames += [(o + po, h + ph) for o, h in blocks for po, ph in _BLOCK_PARTS]
    qkv = [(o + "attn.qkv.", h + "attention.attention.") for o, h in blocks]
    return renames, qkv


def _kind(model: nn.Module) -> str:
    """Name-table kind of a pmgflow model."""
    if isinstance(model, VideoMAE):
        return "pretrain"
    if isinstance(model, VideoViT):
        return "classifier" if model.num_classes > 0 else "encoder"
    raise TypeError(f"expected a VideoMAE or VideoViT, got {type(model).__name__}")


def _rename(state: dict[str, torch.Tensor], renames: list[tuple[str, str]]) -> tuple[dict, list[str]]:
    """Apply prefix renames; returns the renamed dict and the keys no rename matched."""
    out, unknown = {}, []
    for key, value in state.items():
        match = next(((src, dst) for src, dst in renames if key.startswith(src)), None)
        if match is None:
            unknown.append(key)
        else:
            out[match[1] + key[len(match[0]):]] = value
    return out, unknown


def _hf_state_dict(model: VideoMAE | VideoViT) -> dict[str, torch.Tensor]:
    """pmgflow weights in transformers names."""
    kind = _kind(model)
    vit = model.encoder if kind == "pretrain" else model
    renames, qkv = _name_table(kind, len(vit.blocks), len(model.decoder.blocks) if kind == "pretrain" else 0)
    state = model.state_dict()
    fused = {k: v for k, v in state.items() if any(k.startswith(o) for o, _ in qkv)}
    out, unknown = _rename({k: v for k, v in state.items() if k not in fused}, renames)
    assert not unknown, unknown  # the table covers every pmgflow weight
    for ours, hf in qkv:
        for part, tensor in zip(_QKV_HF, state[ours + "weight"].chunk(3)):
            out[f"{hf}{part}.weight"] = tensor
        if ours + "bias" in state:
            q, _, v = state[ours + "bias"].chunk(3)  # the key bias cancels in softmax (module doc)
            out[hf + "query.bias"], out[hf + "value.bias"] = q, v
    return out


def hf_config(config: VideoViTConfig, kind: str, **extra):
    """The transformers VideoMAEConfig of a pmgflow architecture; ``kind`` as in :func:`_name_table` (only a
    "pretrain" config carries the decoder's sizes; ``extra``: further VideoMAEConfig fields)."""
    c = config
    if kind == "pretrain":
        extra.update(decoder_hidden_size=c.decoder_embed_dim, decoder_num_hidden_layers=c.decoder_depth,
                     decoder_num_attention_heads=c.decoder_num_heads,
                     decoder_intermediate_size=int(c.decoder_embed_dim * c.mlp_ratio))
    return _transformers().VideoMAEConfig(
        image_size=c.img_size, patch_size=c.patch, num_channels=c.in_chans, num_frames=c.frames,
        tubelet_size=c.tubelet, hidden_size=c.embed_dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
        intermediate_size=int(c.embed_dim * c.mlp_ratio), hidden_act="gelu", layer_norm_eps=1e-6, qv_bias=c.qkv_bias,
        use_mean_pooling=kind == "classifier", **extra,
    )


def config_from_hf(c, kind: str) -> VideoViTConfig:
    """The pmgflow architecture of a transformers VideoMAEConfig (decoder sizes only for a "pretrain" kind)."""
    if c.hidden_act != "gelu":
        raise PmgflowError(f"transformers config hidden_act={c.hidden_act!r}: pmgflow blocks use exact gelu")
    mlp_ratio = c.intermediate_size / c.hidden_size
    decoder = {}
    if kind == "pretrain":
        if c.decoder_intermediate_size / c.decoder_hidden_size != mlp_ratio:
            raise PmgflowError("transformers config: pmgflow's decoder uses the encoder's mlp ratio")
        decoder = dict(decoder_embed_dim=c.decoder_hidden_size, decoder_depth=c.decoder_num_hidden_layers,
                       decoder_num_heads=c.decoder_num_attention_heads)
    return VideoViTConfig(
        img_size=_single_int(c.image_size, "image_size"), frames=c.num_frames, tubelet=c.tubelet_size,
        patch=_single_int(c.patch_size, "patch_size"), in_chans=c.num_channels, embed_dim=c.hidden_size,
        depth=c.num_hidden_layers, num_heads=c.num_attention_heads, mlp_ratio=mlp_ratio, qkv_bias=c.qv_bias, **decoder,
    )


def to_transformers(model: VideoMAE | VideoViT) -> nn.Module:
    """The same network as a transformers model: VideoMAEForPreTraining, VideoMAEForVideoClassification or
    VideoMAEModel (see module doc); on model's device, in model's train/eval mode."""
    t = _transformers()
    kind = _kind(model)
    cls = {"pretrain": t.VideoMAEForPreTraining, "classifier": t.VideoMAEForVideoClassification,
           "encoder": t.VideoMAEModel}[kind]
    extra = {"norm_pix_loss": model.norm_pix_loss} if kind == "pretrain" else {}
    if kind == "classifier":
        extra["num_labels"] = model.num_classes
    hf = cls(hf_config(model.config, kind, **extra))
    hf.load_state_dict(_hf_state_dict(model), strict=True)
    for norm in (getattr(hf, "fc_norm", None), getattr(getattr(hf, "decoder", None), "norm", None)):
        if isinstance(norm, nn.LayerNorm):
            norm.eps = 1e-6
    device = next(model.parameters()).device
    return hf.to(device).train(model.training)


def export_hf(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a pmgflow checkpoint as a transformers folder (``save_pretrained``: config.json, model.safetensors)."""
    out_dir = Path(out_dir)
    to_transformers(build_model_from_checkpoint(checkpoint_path)).save_pretrained(out_dir)
    return out_dir


def _single_int(value, name: str) -> int:
    """An int from a transformers size that may be a square (h, w) pair."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise PmgflowError(f"transformers config {name}={value}: pmgflow supports square sizes only")
        value = value[0]
    return int(value)


def from_transformers(hf_model: nn.Module, **model_settings) -> VideoMAE | VideoViT:
    """A pmgflow model with the weights of a transformers VideoMAE model (see module doc for the class mapping).

    ``model_settings`` sets model arguments transformers' config does not hold (``mask_ratio``,
    ``drop_path_rate``, ``head_drop_rate``).
    """
    t = _transformers()
    c = hf_model.config
    if isinstance(hf_model, t.VideoMAEForPreTraining):
        kind, cls = "pretrain", VideoMAE
    elif isinstance(hf_model, t.VideoMAEForVideoClassification):
        kind, cls = "classifier", VideoViT
    elif isinstance(hf_model, t.VideoMAEModel):
        kind, cls = "encoder", VideoViT
    else:
        raise PmgflowError(f"cannot convert {type(hf_model).__name__}: expected a transformers VideoMAE model")
    if c.use_mean_pooling != (kind == "classifier"):
        raise PmgflowError(
            f"{type(hf_model).__name__} with use_mean_pooling={c.use_mean_pooling} has no pmgflow counterpart: "
            "pmgflow classifiers mean-pool, its encoders end with a layernorm"
        )
    settings = {"norm_pix_loss": c.norm_pix_loss} if kind == "pretrain" else {}
    if kind == "classifier":
        settings["num_classes"] = c.num_labels
    model = cls(config_from_hf(c, kind), **{**settings, **model_settings})

    renames, qkv = _name_table(kind, c.num_hidden_layers, c.decoder_num_hidden_layers if kind == "pretrain" else 0)
    hf_state = hf_model.state_dict()
    fused = {k: v for k, v in hf_state.items() if any(k.startswith(h) for _, h in qkv)}
    state, unknown = _rename({k: v for k, v in hf_state.items() if k not in fused},
                             [(h, o) for o, h in renames])
    if unknown:
        raise PmgflowError(f"transformers weights without a pmgflow counterpart: {', '.join(unknown)}")
    for ours, hf in qkv:
        state[ours + "weight"] = torch.cat([fused[f"{hf}{p}.weight"] for p in _QKV_HF])
        if c.qv_bias:
            q = fused[hf + "query.bias"]
            state[ours + "bias"] = torch.cat([q, torch.zeros_like(q), fused[hf + "value.bias"]])
    model.load_state_dict(state, strict=True)
    return model


def import_videomae_checkpoint(path_or_state_dict: str | os.PathLike | dict) -> dict[str, torch.Tensor]:
    """An official VideoMAE checkpoint (file or loaded dict) as a pmgflow state dict.

    Weights may sit under ``model`` or ``module`` and carry a ``module.`` (DDP) prefix. A pre-training checkpoint
    (``encoder.`` / ``decoder.`` keys) loads into :class:`VideoMAE` (or its encoder part into a VideoViT with
    :func:`~pmgflow.model.videomae.load_encoder`); a fine-tuning one loads into :class:`VideoViT`. Separate
    ``q_bias`` / ``v_bias`` become the fused qkv bias with a zero key bias. Files load with ``weights_only=True``.
    """
    where = "checkpoint"
    if isinstance(path_or_state_dict, dict):
        state = path_or_state_dict
    else:
        where = f"checkpoint {path_or_state_dict}"
        state = load_checkpoint(path_or_state_dict)
    for wrapper in ("model", "module"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    state = {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}
    if not state:
        raise PmgflowError(f"{where} holds no weights")

    out = {}
    for key, value in state.items():
        if key.endswith("pos_embed"):
            # VideoMAE's default position table is fixed; pmgflow rebuilds it, a learned one has no place here.
            if not torch.allclose(value.float().reshape(1, -1, value.shape[-1]),
                                  sinusoid_table(value.numel() // value.shape[-1], value.shape[-1]), atol=1e-5):
                raise PmgflowError(f"{where}: {key} is a learned position embedding; pmgflow uses the fixed table")
        elif key.endswith("attn.q_bias"):
            block = key[: -len("q_bias")]
            v = state[block + "v_bias"]
            out[block + "qkv.bias"] = torch.cat([value, torch.zeros_like(value), v])
        elif not key.endswith("attn.v_bias"):
            out[key] = value
    return out


def _model_from_official(path: Path, preset: str) -> VideoMAE | VideoViT:
    """The pmgflow model of an official VideoMAE checkpoint file, whose architecture is the model preset's (the
    file holds none): VideoMAE for pre-training weights, else a VideoViT (with a head if the file has one)."""
    from pmgflow.spec.model import ModelSpec

    state = import_videomae_checkpoint(path)
    config = VideoViTConfig.from_spec(ModelSpec(preset=preset))
    if any(k.startswith("decoder.") for k in state):
        model = VideoMAE(config)
    else:
        head = state.get("head.weight")
        model = VideoViT(config, num_classes=0 if head is None else head.shape[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PmgflowError(f"{path}: the weights do not fit preset {preset!r} ({str(exc).splitlines()[0]}); "
                           "pick the preset the checkpoint was trained with") from None
    return model


def _model_from_folder(path: Path) -> VideoMAE | VideoViT:
    """The pmgflow model of a transformers VideoMAE folder (config.json + weights), read offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never reach for a hub
    t = _transformers()
    arch = (t.AutoConfig.from_pretrained(path).architectures or ["VideoMAEModel"])[0]
    if not hasattr(t, arch) or not arch.startswith("VideoMAE"):
        raise PmgflowError(f"{path}: architecture {arch!r} is not a transformers VideoMAE model")
    return from_transformers(getattr(t, arch).from_pretrained(path))


def import_checkpoint(source: str | os.PathLike, out: str | os.PathLike, preset: str = "base") -> str:
    """Write official VideoMAE weights (a file, architecture of model preset ``preset``) or a transformers
    VideoMAE folder as a pmgflow checkpoint at ``out``; returns its kind ("pretrain" or "finetune")."""
    source = Path(source)
    if source.is_dir():
        model = _model_from_folder(source)
    elif source.is_file():
        model = _model_from_official(source, preset)
    else:
        raise PmgflowError(f"{source}: no such file or folder")
    state = checkpoint_state(model, imported_from=str(source))
    save_checkpoint(out, state)
    return state["kind"]


__all__ = [
    "config_from_hf", "export_hf", "from_transformers", "hf_config", "import_checkpoint", "import_videomae_checkpoint",
    "to_pixel_values", "to_transformers",
]
