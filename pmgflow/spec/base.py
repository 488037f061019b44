"""Spec base class, YAML loading with readable errors, and the content hash that names outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pmgflow.errors import SpecError

S = TypeVar("S", bound=BaseModel)


class Spec(BaseModel):
    """Base of every spec: unknown fields are errors, defaults are validated, assignment re-validates."""

    model_config = ConfigDict(extra="forbid", validate_default=True, validate_assignment=True)


def canonical_json(spec: BaseModel | dict) -> str:
    """JSON with sorted keys and no whitespace: the same spec always gives the same text."""
    data = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(spec: BaseModel | dict, length: int = 12) -> str:
    """Stable sha256 content hash of a spec (hex, first `length` characters); names run dirs and caches."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:length]


# How a run executes -- where, on how many threads, with which data loader, how often the loss is read back,
# fused or compiled kernels -- changes at most the rounding of what it computes: not part of a run's name.
EXECUTION_FIELDS = frozenset({"threads", "device", "loader", "log_every", "fused_adamw", "compile"})


def run_key(spec: BaseModel) -> str:
    """The hash that names a training run's directory (<stage>-<key>): its spec without execution fields."""
    return spec_hash(spec.model_dump(mode="json", exclude=set(EXECUTION_FIELDS)))


def format_validation_error(err: ValidationError, source: str) -> str:
    """One readable message: the file, then one line per bad field path with what was expected."""
    lines = [f"{source}: invalid spec ({err.error_count()} error{'s' if err.error_count() > 1 else ''})"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `pmgflow schema`)"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML raises SpecError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


def validate_spec(cls: type[S], data: Any, source: str) -> S:
    """Validate data against a spec class; errors become one SpecError naming `source` and the field paths."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source)) from None


def load_spec(cls: type[S], path: str | Path) -> S:
    """Load and validate a YAML spec file."""
    return validate_spec(cls, read_yaml(path), str(path))
