"""Specs: validation messages name the field, YAML errors name the file, hashes ignore key order."""

import pytest
import yaml
from pydantic import TypeAdapter

from pmgflow.errors import SpecError
from pmgflow.spec.base import load_spec, spec_hash, validate_spec
from pmgflow.spec.data import FolderSource, FractalSource, ImageSourceSpec
from pmgflow.spec.model import ModelSpec
from pmgflow.spec.pmg import PMGSpec
from pmgflow.spec.train import FinetuneSpec, PretrainSpec


def error_of(cls, data):
    with pytest.raises(SpecError) as exc:
        validate_spec(cls, data, "exp.yaml")
    return str(exc.value)


def test_unknown_field_is_rejected_with_its_path():
    msg = error_of(PretrainSpec, {"pmg": {"augment": {"kind": "mixup", "alpha_typo": 1}}})
    assert msg.startswith("exp.yaml: invalid spec")
    assert "pmg.augment.alpha_typo: unknown field" in msg


def test_wrong_type_is_rejected_with_its_path():
    msg = error_of(PretrainSpec, {"batch_size": "many"})
    assert "batch_size:" in msg and "'many'" in msg


def test_out_of_range_is_rejected_with_its_path():
    msg = error_of(PretrainSpec, {"mask_ratio": 1.5})
    assert "mask_ratio: Input should be less than 1" in msg


def test_unknown_transform_and_bad_transform_params():
    assert "unknown transform 'spin'" in error_of(PMGSpec, {"transforms": ["spin"]})
    msg = error_of(PMGSpec, {"transforms": [{"name": "zoom", "params": {"step": [1.1, 1.0]}}]})
    assert "transforms.0" in msg and "above high" in msg
    assert "stepp" in error_of(PMGSpec, {"transforms": [{"name": "zoom", "params": {"stepp": [1, 2]}}]})


def test_transform_defaults_are_resolved_into_the_spec():
    spec = PMGSpec(transforms=["zoom"])
    assert spec.transforms[0].params["step"] == [1.01, 1.04]
    assert spec_hash(spec) == spec_hash(PMGSpec(transforms=[{"name": "zoom", "params": {"step": [1.01, 1.04]}}]))
    assert spec_hash(spec) != spec_hash(PMGSpec(transforms=[{"name": "zoom", "params": {"step": [1.01, 1.05]}}]))


def test_hash_does_not_depend_on_key_order():
    a = PretrainSpec.model_validate({"epochs": 3, "batch_size": 16, "model": {"preset": "tiny", "depth": 2}})
    b = PretrainSpec.model_validate({"model": {"depth": 2, "preset": "tiny"}, "batch_size": 16, "epochs": 3})
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash(PretrainSpec.model_validate({"epochs": 4, "batch_size": 16}))
    assert len(spec_hash(a)) == 12


def test_image_source_union_dispatches_on_kind(tmp_path):
    adapter = TypeAdapter(ImageSourceSpec)
    assert isinstance(adapter.validate_python({"kind": "fractal", "categories": 3, "images": 9}), FractalSource)
    assert isinstance(adapter.validate_python({"kind": "folder", "path": str(tmp_path)}), FolderSource)
    msg = error_of(PretrainSpec, {"source": {"kind": "photos"}})
    assert "source" in msg and "fractal" in msg


def test_model_presets_fill_and_override():
    base = ModelSpec(preset="base")
    assert (base.embed_dim, base.depth, base.patch, base.img_size, base.decoder_embed_dim) == (768, 12, 16, 224, 384)
    assert ModelSpec(preset="base", depth=6).depth == 6
    assert "not a multiple of patch" in error_of(ModelSpec, {"img_size": 30})


def test_pmg_shape_follows_the_model():
    spec = PretrainSpec(model={"preset": "small"})
    assert (spec.pmg.frames, spec.pmg.size) == (16, 64)
    assert "pmg.frames (4) differs" in error_of(PretrainSpec, {"pmg": {"frames": 4}})


def test_finetune_limits_are_exclusive():
    assert "train_fraction or per_class" in error_of(FinetuneSpec, {"train_fraction": 0.5, "per_class": 3})


def test_load_spec_names_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match="nope.yaml: spec file not found"):
        load_spec(PretrainSpec, missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_spec(PretrainSpec, bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"epochs": -1}))
    with pytest.raises(SpecError, match=r"wrong.yaml: invalid spec \(1 error\)\n  epochs: "):
        load_spec(PretrainSpec, wrong)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"epochs": 2, "pmg": {"transforms": ["zoom", "affine"], "augment": {"kind": "mixup"}}}))
    spec = load_spec(PretrainSpec, good)
    assert spec.epochs == 2 and [t.name for t in spec.pmg.transforms] == ["zoom", "affine"]
