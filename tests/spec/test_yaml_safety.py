"""Spec loading is safe by construction: hostile or broken files end in one SpecError, never a traceback or a hang."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pmgflow.cli import app
from pmgflow.errors import SpecError
from pmgflow.spec.base import MAX_SPEC_BYTES, load_spec, read_yaml
from pmgflow.spec.sweep import load_sweep
from pmgflow.spec.train import PretrainSpec

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))

HOSTILE = {
    "alias bomb": (BOMB.encode(), "alias bomb"),
    "recursive alias": (b"a: &a [*a]\n", "recursive alias"),
    "binary": (bytes(range(256)) * 4, "not UTF-8 text"),
    "nul": (b"epochs: 1\x00\n", "NUL characters"),
    "empty": (b"", "empty spec; write at least one field"),
    "comments only": (b"# nothing here\n", "empty spec"),
    "deep": (b"a: " + b"[" * 200 + b"]" * 200 + b"\n", "nested deeper than 64 levels"),
    "python tag": (b"a: !!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
    "list": (b"- 1\n- 2\n", "expected a mapping"),
    "bad yaml": (b"a: [1, 2\n", "not valid YAML at line"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_files_get_one_message(tmp_path, name):
    content, message = HOSTILE[name]
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError, match=message) as info:
        read_yaml(path)
    assert str(info.value).startswith(str(path))


def test_oversized_file(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * MAX_SPEC_BYTES)
    with pytest.raises(SpecError, match="a spec file is at most"):
        read_yaml(path)


@pytest.mark.parametrize("command", ["sweep", "pretrain"])
@pytest.mark.parametrize("name", ["alias bomb", "recursive alias", "binary", "empty"])
def test_commands_exit_2_without_a_traceback(tmp_path, command, name):
    path = tmp_path / "spec.yaml"
    path.write_bytes(HOSTILE[name][0])
    result = CliRunner().invoke(app, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and HOSTILE[name][1].split(";")[0] in result.output


def _loads_or_spec_error(path) -> None:
    for load in (lambda: load_spec(PretrainSpec, path), lambda: load_sweep(path)):
        try:
            load()
        except SpecError:
            pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_bytes_load_or_raise_spec_error(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    _loads_or_spec_error(path)


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)
FIELDS = st.sampled_from(["epochs", "batch_size", "model", "pmg", "source", "name", "base", "axes", "extends",
                          "mask_ratio", "resources", "finetune", "pretrain"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(FIELDS | st.text(max_size=10), YAML_VALUES, max_size=5))
def test_any_yaml_mapping_loads_or_raises_spec_error(tmp_path, data):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    _loads_or_spec_error(path)
