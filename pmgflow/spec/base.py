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


# Spec files are small: anything larger, deeper or more repetitive than this is a mistake or an attack.
MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_NODES = 100_000  # values after expanding every alias (a "billion laughs" file expands to 10^9)
MAX_SPEC_DEPTH = 64
MINIMAL_SPEC = "e.g. `epochs: 10` (every field has a default: `pmgflow schema pretrain` lists them)"


def _check_nodes(node: yaml.Node, path: Path) -> None:
    """Refuse a recursive alias, nesting deeper than MAX_SPEC_DEPTH or more than MAX_SPEC_NODES values expanded."""
    sizes: dict[int, int] = {}  # expanded size of each node already measured (aliases share node objects)
    open_nodes: set[int] = set()

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"{path}: nested deeper than {MAX_SPEC_DEPTH} levels")
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in open_nodes:
            raise SpecError(f"{path}: an alias refers to a node that contains it (recursive alias)")
        open_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v, depth + 1) for v in n.value)
        else:
            total = 1
        open_nodes.discard(id(n))
        if total > MAX_SPEC_NODES:
            raise SpecError(f"{path}: more than {MAX_SPEC_NODES} values once its aliases are expanded "
                            "(an alias bomb?)")
        sizes[id(n)] = total
        return total

    size(node, 0)


def _load(text: str, path: Path) -> Any:
    """Compose the node graph, check it, then build the Python data (None for an empty document)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping safely; a missing, oversized, binary, empty, recursive or bad file raises SpecError.

    Only plain YAML (safe loader); the node graph is measured before any Python object is built, so an alias
    bomb or a self-referencing alias is refused in milliseconds.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {path.stat().st_size} bytes; a spec file is at most {MAX_SPEC_BYTES} bytes")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); is it a binary file?") from None
    if "\x00" in text:
        raise SpecError(f"{path}: contains NUL characters; is it a binary file?")
    try:
        data = _load(text, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except (RecursionError, ValueError, OverflowError) as exc:  # odd scalars (huge dates, ints) the loader rejects
        raise SpecError(f"{path}: cannot be read as YAML: {type(exc).__name__}: {exc}") from None
    if data is None:
        raise SpecError(f"{path}: empty spec; write at least one field, {MINIMAL_SPEC}")
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
