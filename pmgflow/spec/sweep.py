"""Sweep specs: a base trial, axes that vary it (grid across axes, zipped within a group), and how to run it.

A sweep YAML may `extends: other.yaml` (deep-merged, relative to the including file, chains allowed) and use
`${VAR}` / `${VAR:-default}` environment placeholders in any string. Axis values are written into the RAW
trial mapping at a dotted path before validation, so presets and defaults resolve after the override; every
expanded trial is validated before anything runs, and an error names the file, the trial and the field.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Discriminator, Field, Tag, model_validator

from pmgflow.errors import SpecError
from pmgflow.spec.base import Spec, read_yaml, run_key, spec_hash, validate_spec
from pmgflow.spec.train import FinetuneSpec, PretrainSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class TrialSpec(Spec):
    """One trial: a pre-training (epochs 0 = scratch) and the fine-tunings that start from its checkpoint."""

    pretrain: PretrainSpec = Field(default_factory=PretrainSpec, description="The pre-training; epochs 0 = scratch "
                                   "(no pre-training: every target is fine-tuned from a random init).")
    finetune: dict[str, FinetuneSpec] = Field(min_length=1, description="Fine-tuning targets by name "
                                              "(e.g. actions, ucf101); each starts from the pre-trained checkpoint.")

    @model_validator(mode="before")
    @classmethod
    def _targets_follow_pretrain_model(cls, data: Any) -> Any:
        # A scratch target is built from its own `model`: default it to the pre-training's, so scratch and
        # pre-trained rows of an ablation compare the same architecture.
        if isinstance(data, dict) and isinstance(data.get("finetune"), dict):
            pre = data.get("pretrain")
            model = pre.get("model", {}) if isinstance(pre, dict) else {}
            data = {**data, "finetune": {name: ({"model": copy.deepcopy(model), **t} if isinstance(t, dict) else t)
                                         for name, t in data["finetune"].items()}}
        return data

    @model_validator(mode="after")
    def _init_is_the_sweeps(self) -> "TrialSpec":
        for name, target in self.finetune.items():
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"finetune target name {name!r}: use letters, digits, '_', '-', '.'")
            if target.init is not None:
                raise ValueError(f"finetune.{name}.init: leave it unset; a sweep fine-tunes from its own pre-training")
        return self

    @property
    def scratch(self) -> bool:
        """No pre-training: pretrain.epochs is 0."""
        return self.pretrain.epochs == 0


class AxisPart(Spec):
    """One dotted path of a zipped axis group and its values."""

    path: str = Field(description="Dotted path into the trial (e.g. pretrain.epochs, finetune.*.train_fraction; "
                      "list indices allowed, '*' = every key of a mapping).")
    values: list[Any] = Field(min_length=1, description="Values written at the path, one per trial of the axis.")


class Axis(AxisPart):
    """A single axis: the trial grid takes each of its values in turn."""

    name: str | None = Field(None, description="Column title of the axis (default: the path's last field).")
    labels: list[str] | None = Field(None, description="Row labels of the values in tables (default: the values).")

    @model_validator(mode="after")
    def _labels_match(self) -> "Axis":
        _check_labels(self.labels, len(self.values))
        return self

    @property
    def parts(self) -> list[AxisPart]:
        return [AxisPart(path=self.path, values=self.values)]


class ZipAxis(Spec):
    """A group of paths that vary together: value i of every part goes into the same trial."""

    zip: list[AxisPart] = Field(min_length=1, description="The zipped paths, all with the same number of values.")
    name: str | None = Field(None, description="Column title of the group (default: the first path's last field).")
    labels: list[str] | None = Field(None, description="Row labels of the zipped values (default: the values).")

    @model_validator(mode="after")
    def _same_length(self) -> "ZipAxis":
        lengths = {len(p.values) for p in self.zip}
        if len(lengths) > 1:
            raise ValueError(f"zipped paths must have the same number of values, got {sorted(lengths)}")
        _check_labels(self.labels, len(self.zip[0].values))
        return self

    @property
    def parts(self) -> list[AxisPart]:
        return list(self.zip)


def _axis_kind(value: Any) -> str:
    return "zip" if (isinstance(value, dict) and "zip" in value) or isinstance(value, ZipAxis) else "axis"


AxisSpec = Annotated[Union[Annotated[Axis, Tag("axis")], Annotated[ZipAxis, Tag("zip")]], Discriminator(_axis_kind)]


def _check_labels(labels: list[str] | None, n: int) -> None:
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} values")


def axis_name(axis: Axis | ZipAxis) -> str:
    """The axis's column title: its name, else the last named field of its (first) path."""
    if axis.name:
        return axis.name
    fields = [p for p in axis.parts[0].path.split(".") if p != "*" and not p.isdigit()]
    return fields[-1] if fields else axis.parts[0].path


class Resources(Spec):
    """What each trial gets from Ray."""

    cpu: float = Field(1, gt=0, description="CPUs per trial (also its torch threads).")
    gpu: float = Field(0, ge=0, description="GPUs per trial; above 1, pre-training runs data-parallel in a Ray "
                       "Train TorchTrainer with one worker per GPU.")
    workers: int | None = Field(None, ge=1, description="Data-parallel pre-training workers (default: the GPU count "
                                "when gpu > 1, else 1: the trial's own process).")

    @property
    def num_workers(self) -> int:
        """Data-parallel pre-training workers of a trial."""
        return self.workers or (int(self.gpu) if self.gpu > 1 else 1)


class TrackingSpec(Spec):
    """Where MLflow records the sweep."""

    experiment: str | None = Field(None, description="MLflow experiment name (default: pmgflow-<sweep name>).")


class TableSpec(Spec):
    """The ablation table `pmgflow report` builds."""

    metric: str = Field("top1", description="Metric per fine-tuning target in the table (top1 or top1_single).")
    row: str | None = Field(None, description="Axis name on the rows and the plot's x axis (default: the first).")
    paper: str | None = Field(None, description="The paper's table shown beside ours (see pmgflow.orchestrate.paper).")


class SweepSpec(Spec):
    """An ablation: a base trial, the axes that vary it, resources, tracking and the report table."""

    name: str = Field(pattern=NAME_PATTERN, description="Sweep name (MLflow parent run, Tune experiment).")
    description: str = Field("", description="What the sweep measures (shown in MLflow).")
    base: dict[str, Any] = Field(default_factory=dict, description="The raw trial mapping the axes modify "
                                 "(validated as a TrialSpec after the axis values are written).")
    axes: list[AxisSpec] = Field(default_factory=list, description="Axes: the cross product of all axes is "
                                       "the trial grid; the paths of a zip group vary together.")
    resources: Resources = Field(default_factory=Resources, description="Ray resources per trial.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow settings.")
    max_failures: int = Field(0, ge=0, description="Retries of a failed trial (it resumes from its checkpoint).")
    seeds: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, min_length=1, description="Fine-tuning seeds: each target of a trial is fine-tuned once per seed "
        "(its `seed` set to it), all from the trial's one pre-training; the table shows the mean over seeds with "
        "its sample std. Default: one run per target with its own `seed` (the table shows a bootstrap 95 % "
        "interval over test videos).")
    table: TableSpec = Field(default_factory=TableSpec, description="The report's ablation table.")

    @model_validator(mode="after")
    def _axis_names(self) -> "SweepSpec":
        names = [axis_name(a) for a in self.axes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"axes share the name {', '.join(dup)}: give each a distinct `name`")
        if self.table.row is not None and self.table.row not in names:
            raise ValueError(f"table.row {self.table.row!r} is not an axis name ({', '.join(names) or 'no axes'})")
        if self.seeds is not None and len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"seeds {self.seeds} repeat a seed: give each seed once")
        return self

    @property
    def experiment(self) -> str:
        """MLflow experiment of the sweep."""
        return self.tracking.experiment or f"pmgflow-{self.name}"

    @property
    def axis_names(self) -> list[str]:
        return [axis_name(a) for a in self.axes]

    @property
    def row_axis(self) -> str | None:
        """The axis on the rows of the table (None without axes)."""
        return self.table.row or (self.axis_names[0] if self.axes else None)


# --- loading: extends, environment placeholders ------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, source: str, where: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of a YAML tree; an unset VAR without default is an error."""
    if isinstance(value, dict):
        return {k: expand_env(v, source, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, source, f"{where}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise SpecError(f"{source}: {where}: environment variable {var} is not set "
                        f"(set it, or write ${{{var}:-default}} to give a default)")

    return _PLACEHOLDER.sub(sub, value)


def deep_merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Child over parent: mappings merge key by key, anything else (lists too) is replaced, and so is a
    mapping whose `kind` changes (a folder source overridden by a fractal one keeps none of its fields)."""
    out = copy.deepcopy(parent)
    for key, value in child.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("kind", old.get("kind")) == old.get("kind"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_sweep_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A sweep YAML with its `extends` chain merged and its environment placeholders expanded."""
    path = Path(path)
    real = path.resolve()
    if real in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, real))
        raise SpecError(f"{path}: `extends` cycle: {cycle}")
    data = expand_env(read_yaml(path), str(path))
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise SpecError(f"{path}: extends: expected a file name, got {type(parent).__name__}")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise SpecError(f"{path}: extends: {parent_path} not found")
    return deep_merge(read_sweep_yaml(parent_path, (*_chain, real)), data)


# --- expansion ---------------------------------------------------------------------------------------------


def _key(node: Any, part: str, here: str) -> int | str:
    """The key of `part` in node: a list index or a mapping key."""
    if isinstance(node, list):
        if not part.lstrip("-").isdigit():
            raise ValueError(f"{here} is a list: {part!r} is not an index")
        index = int(part)
        if not -len(node) <= index < len(node):
            raise ValueError(f"{here} has {len(node)} items: index {index} is out of range")
        return index
    if isinstance(node, dict):
        return part
    raise ValueError(f"{here} is a {type(node).__name__} ({node!r}), not a mapping or a list")


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Write value at a dotted path (creating missing mappings; digits index lists; '*' = every key)."""
    parts = path.split(".")
    if not all(parts):
        raise ValueError(f"path {path!r} has an empty field")

    def walk(node: Any, i: int, here: str) -> None:
        part = parts[i]
        if part == "*":
            if not isinstance(node, dict) or not node:
                raise ValueError(f"{here or 'the trial'}: '*' needs a non-empty mapping")
            keys = list(node)
        else:
            keys = [_key(node, part, here or "the trial")]
        for key in keys:
            sub = f"{here}.{key}" if here else str(key)
            if i == len(parts) - 1:
                node[key] = copy.deepcopy(value)
                continue
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            walk(node[key], i + 1, sub)

    walk(tree, 0, "")


def format_value(value: Any) -> str:
    """A short label for an axis value: scalars as text, lists joined by '+', mappings by their kind."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "+".join(format_value(v) for v in value) or "[]"
    if isinstance(value, dict):
        if "kind" in value:
            return str(value["kind"])
        if "name" in value:
            return str(value["name"])
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


@dataclass(frozen=True)
class Trial:
    """One expanded trial: its index in the grid, the axis values that made it, and its validated spec."""

    index: int
    values: dict[str, Any]
    labels: dict[str, str]
    spec: TrialSpec
    seeds: tuple[int, ...] | None = None  # the sweep's fine-tuning seeds (None: each target's own seed, once)

    @property
    def hash(self) -> str:
        """Content hash of the trial (finds its MLflow child run on a re-run); threads and device do not count."""
        content = {"pretrain": run_key(self.spec.pretrain),
                   "finetune": {name: run_key(t) for name, t in self.spec.finetune.items()}}
        return spec_hash(content | ({"seeds": list(self.seeds)} if self.seeds else {}))

    @property
    def pretrain_key(self) -> str | None:
        """The pre-training's run key (its run dir is pretrain-<key>); None for scratch."""
        return None if self.spec.scratch else run_key(self.spec.pretrain)

    def describe(self) -> str:
        """'epochs=5, transforms=zoom' (or 'base' without axes)."""
        return ", ".join(f"{k}={v}" for k, v in self.labels.items()) or "base"


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: its spec, its source file and every expanded, validated trial."""

    spec: SweepSpec
    source: Path
    raw: dict[str, Any]
    trials: list[Trial] = field(default_factory=list)

    @property
    def hash(self) -> str:
        """Hash of the sweep's name and trials (resources, tracking and table do not change it)."""
        return spec_hash({"name": self.spec.name, "trials": [t.hash for t in self.trials]})

    def pretrainings(self) -> dict[str, list[int]]:
        """Pre-training key -> indices of the trials that use it (trials differing only in fine-tuning share one)."""
        shared: dict[str, list[int]] = {}
        for t in self.trials:
            if t.pretrain_key is not None:
                shared.setdefault(t.pretrain_key, []).append(t.index)
        return shared


def expand_trials(spec: SweepSpec, source: str) -> list[Trial]:
    """Every trial of the grid (cross product of axes, zip within a group), each validated as a TrialSpec."""
    trials = []
    ranges = [range(len(axis.parts[0].values)) for axis in spec.axes]
    for index, choice in enumerate(itertools.product(*ranges)):
        raw = copy.deepcopy(spec.base)
        values, labels = {}, {}
        for a, (axis, i) in enumerate(zip(spec.axes, choice)):
            for part in axis.parts:
                values[part.path] = part.values[i]
            labels[axis_name(axis)] = axis.labels[i] if axis.labels else format_value(axis.parts[0].values[i])
        where = ", ".join(f"{p}={format_value(v)}" for p, v in values.items()) or "the base trial"
        for a, axis in enumerate(spec.axes):
            for part in axis.parts:
                try:
                    set_path(raw, part.path, values[part.path])
                except ValueError as exc:
                    raise SpecError(f"{source}: trial {index} ({where}): axes.{a} path {part.path!r}: {exc}") from None
        trial_spec = validate_spec(TrialSpec, raw, f"{source}: trial {index} ({where})")
        trials.append(Trial(index, values, labels, trial_spec, tuple(spec.seeds) if spec.seeds else None))
    return trials


def load_sweep(path: str | Path) -> Sweep:
    """Read, merge, validate and expand a sweep YAML; any error names the file (and the trial and field)."""
    path = Path(path)
    raw = read_sweep_yaml(path)
    spec = validate_spec(SweepSpec, raw, str(path))
    trials = expand_trials(spec, str(path))
    hashes = [t.hash for t in trials]
    for t in trials:
        if hashes.count(t.hash) > 1:
            twins = [i for i, h in enumerate(hashes) if h == t.hash]
            raise SpecError(f"{path}: trials {twins} have the same spec ({t.describe()}); remove the duplicate values")
    return Sweep(spec, path, raw, trials)
