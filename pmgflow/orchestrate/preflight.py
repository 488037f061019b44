"""Pre-flight: everything a sweep's trials (or one `pmgflow pretrain` / `finetune` run) will read is checked
before the first one trains.

A missing dataset root or split file, too many unreadable videos, a decoded-frame plan over the loader's cap,
a missing image folder or an unusable init checkpoint would otherwise surface only when a trial reaches it: for
a fine-tuning target, after its pre-training (days, at paper scale). Every problem is collected and reported at
once, each with its trial and field. Nothing here decodes a video: datasets are indexed and their files' headers
probed (cached).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pmgflow.errors import PmgflowError
from pmgflow.spec.base import canonical_json
from pmgflow.spec.data import IMAGE_EXTENSIONS, FolderSource, VideoDatasetSpec, VideoFramesSource
from pmgflow.spec.sweep import Sweep, Trial
from pmgflow.spec.train import FinetuneSpec, PretrainSpec

Check = tuple[str, str, Callable[[], "str | None"]]


class PreflightError(PmgflowError):
    """One or more inputs of a sweep's trials are missing or unusable (all of them listed)."""


def _dataset_problem(dataset, loader, size: int | None) -> str | None:
    """Why a dataset cannot be trained on (missing layout, unreadable videos, caps), or None."""
    from pmgflow.data.layouts import index_dataset
    from pmgflow.data.store import plan_store, store_size

    try:
        indexes = [index_dataset(dataset, subset) for subset in ("train", "test")]
        if size is not None:
            plan_store(indexes, store_size(size), loader)
    except PmgflowError as exc:
        return str(exc)
    except OSError as exc:  # e.g. a root below a file, or unreadable split files
        return f"{exc.filename or dataset.root}: {exc.strerror or exc}"
    return None


def _folder_problem(source: FolderSource) -> str | None:
    root = Path(source.path)
    if not root.is_dir():
        return f"{root}: image folder not found"
    extensions = {e.lower() for e in source.extensions or IMAGE_EXTENSIONS}
    if not any(p.suffix.lower() in extensions for p in root.rglob("*")):
        return f"{root}: no image files ({', '.join(sorted(extensions))})"
    return None


def _pretrain_checks(pre: PretrainSpec, at: str) -> Iterator[Check]:
    """(field, cache key, check) for every input of a pre-training that the user provides; fields start with `at`."""
    if isinstance(pre.source, FolderSource):
        yield f"{at}source.path", f"folder:{pre.source.path}", lambda: _folder_problem(pre.source)
    elif isinstance(pre.source, VideoFramesSource) and isinstance(pre.source.dataset, VideoDatasetSpec):
        frames = pre.source.dataset
        yield f"{at}source.dataset", canonical_json(frames), lambda: _dataset_problem(frames, None, None)
    if pre.real_mix is not None and isinstance(pre.real_mix.dataset, VideoDatasetSpec):
        mix = pre.real_mix.dataset
        yield (f"{at}real_mix.dataset", f"{canonical_json(mix)}|{pre.model.img_size}",
               lambda: _dataset_problem(mix, pre.loader, pre.model.img_size))


def _finetune_checks(target: FinetuneSpec, at: str, size: int) -> Iterator[Check]:
    """The same for a fine-tuning whose clips are `size` pixels (the model's, or its init checkpoint's)."""
    if isinstance(target.dataset, VideoDatasetSpec):
        ds = target.dataset
        yield (f"{at}dataset", f"{canonical_json(ds)}|{size}|{canonical_json(target.loader)}",
               lambda: _dataset_problem(ds, target.loader, size))


def _checks(trial: Trial) -> Iterator[Check]:
    """(field, cache key, check) for every input of one trial that the user provides.

    The embedded sets (actions, motions) are not among them: pmgflow renders them inside the trials that need them.
    """
    if not trial.spec.scratch:
        yield from _pretrain_checks(trial.spec.pretrain, "pretrain.")
    for name, target in trial.spec.finetune.items():
        yield from _finetune_checks(target, f"finetune.{name}.", target.model.img_size)


def preflight_problems(sweep: Sweep) -> tuple[int, list[str]]:
    """(distinct inputs checked, one line per problem with its trial and field)."""
    seen: dict[str, str | None] = {}
    problems: list[str] = []
    for trial in sweep.trials:
        for field, key, check in _checks(trial):
            if key not in seen:
                seen[key] = check()
            if seen[key] is not None:
                problems.append(f"  trial {trial.index} ({trial.describe()}), {field}: {seen[key]}")
    return len(seen), problems


def preflight(sweep: Sweep, echo: Callable[[str], None] | None = None) -> None:
    """Check every trial's inputs (each distinct input once); raise PreflightError listing every problem."""
    checked, problems = preflight_problems(sweep)
    if echo is not None:
        echo(f"pre-flight: {checked} input(s) of {len(sweep.trials)} trial(s) checked, {len(problems)} problem(s)")
    if problems:
        raise PreflightError(f"{sweep.source}: {len(problems)} problem(s) found before any trial started:\n"
                             + "\n".join(problems))


# --- one run: `pmgflow pretrain SPEC`, `pmgflow finetune SPEC [--init CKPT]` ----------------------------------


def _looks_like_torch(path: Path) -> bool:
    """Whether a file begins as torch.save output does: a zip archive, or (older files) a pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def init_problems(spec: FinetuneSpec, field: str = "init") -> tuple[list[str], int]:
    """('field: problem' lines of the init checkpoint, clip size the fine-tuning will train at).

    The checkpoint is read (weights only) and the classifier built from it with the spec's settings, as
    fine-tuning builds it: a missing or unreadable file, one that is not a pmgflow checkpoint, a model_config the
    video ViT does not take and weights that do not fit it all show here, before any data is read. The spec's
    `model` is the scratch architecture: with a checkpoint, the checkpoint's is used (its clip size too).
    """
    from pmgflow.train.finetune import build_classifier

    path = spec.init
    if path is None:
        return [], spec.model.img_size
    if not path.is_file():
        return [f"{field}: {path}: checkpoint not found"], 0
    if not os.access(path, os.R_OK):
        return [f"{field}: {path}: checkpoint not readable (permission denied)"], 0
    try:
        model, _ = build_classifier(spec, 2, path)
    except PmgflowError as exc:
        if exc.__cause__ is not None and not _looks_like_torch(path):  # torch's own error can be a bare byte value
            return [f"{field}: {path}: not a torch checkpoint (neither a zip archive, as torch.save writes, nor a "
                    "pickle)"], 0
        return [f"{field}: {str(exc).splitlines()[0]}"], 0
    except (TypeError, ValueError, KeyError) as exc:  # a model_config the video ViT does not take
        return [f"{field}: checkpoint {path}: its model_config does not build a video ViT ({exc})"], 0
    return [], model.config.img_size


def preflight_run(spec: PretrainSpec | FinetuneSpec, source: str | Path, init_field: str = "init") -> None:
    """Check the inputs of one pre-training or fine-tuning run; raise PreflightError listing every problem.

    A fine-tuning's init checkpoint comes first: when it is unusable, that is the one problem reported and no
    dataset is indexed. `init_field` names where the checkpoint came from (`init` in the spec, or `--init`).
    """
    if isinstance(spec, FinetuneSpec):
        problems, size = init_problems(spec, init_field)
        checks = [] if problems else _finetune_checks(spec, "", size)
    else:
        problems, checks = [], _pretrain_checks(spec, "")
    problems += [f"{field}: {problem}" for field, _, check in checks if (problem := check()) is not None]
    if problems:
        raise PreflightError(f"{source}: {len(problems)} problem(s) found before training started:\n"
                             + "\n".join(f"  {p}" for p in problems))
