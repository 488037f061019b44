"""Pre-flight: everything a sweep's trials will read is checked before the first one trains.

A missing dataset root or split file, too many unreadable videos, a decoded-frame plan over the loader's cap,
or a missing image folder would otherwise surface only when a trial reaches it: for a fine-tuning target, after
its pre-training (days, at paper scale). Every problem is collected and reported at once, each with its trial
and field. Nothing here decodes a video: datasets are indexed and their files' headers probed (cached).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from pmgflow.errors import PmgflowError
from pmgflow.spec.base import canonical_json
from pmgflow.spec.data import IMAGE_EXTENSIONS, FolderSource, VideoDatasetSpec, VideoFramesSource
from pmgflow.spec.sweep import Sweep, Trial


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


def _checks(trial: Trial) -> Iterator[tuple[str, str, Callable[[], str | None]]]:
    """(field, cache key, check) for every input of one trial that the user provides.

    The embedded action set is not among them: pmgflow renders it itself, inside the trial that needs it.
    """
    pre = trial.spec.pretrain
    if not trial.spec.scratch:
        if isinstance(pre.source, FolderSource):
            yield "pretrain.source.path", f"folder:{pre.source.path}", lambda: _folder_problem(pre.source)
        elif isinstance(pre.source, VideoFramesSource) and isinstance(pre.source.dataset, VideoDatasetSpec):
            ds = pre.source.dataset
            yield "pretrain.source.dataset", canonical_json(ds), lambda: _dataset_problem(ds, None, None)
        if pre.real_mix is not None and isinstance(pre.real_mix.dataset, VideoDatasetSpec):
            ds = pre.real_mix.dataset
            yield ("pretrain.real_mix.dataset", f"{canonical_json(ds)}|{pre.model.img_size}",
                   lambda: _dataset_problem(ds, pre.loader, pre.model.img_size))
    for name, target in trial.spec.finetune.items():
        if not isinstance(target.dataset, VideoDatasetSpec):
            continue
        ds, size = target.dataset, target.model.img_size
        yield (f"finetune.{name}.dataset", f"{canonical_json(ds)}|{size}|{canonical_json(target.loader)}",
               lambda ds=ds, target=target, size=size: _dataset_problem(ds, target.loader, size))


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
