"""Sweep specs: grid and zip expansion, extends chains and cycles, placeholders, and errors that name the
file, the trial and the field."""

import pytest

from pmgflow.errors import SpecError
from pmgflow.spec.sweep import deep_merge, load_sweep, run_key, set_path

from .conftest import TINY_BASE, tiny_sweep, write_yaml


def test_grid_is_the_cross_product_and_zip_varies_together(tmp_path):
    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml", axes=[
        {"path": "pretrain.epochs", "values": [0, 2]},
        {"zip": [{"path": "pretrain.source.images", "values": [16, 32]},
                 {"path": "pretrain.source.categories", "values": [2, 4]}], "name": "scale",
         "labels": ["small", "large"]},
    ]))
    got = [(t.spec.pretrain.epochs, t.spec.pretrain.source.images, t.spec.pretrain.source.categories, t.labels)
           for t in sweep.trials]
    assert got == [(0, 16, 2, {"epochs": "0", "scale": "small"}), (0, 32, 4, {"epochs": "0", "scale": "large"}),
                   (2, 16, 2, {"epochs": "2", "scale": "small"}), (2, 32, 4, {"epochs": "2", "scale": "large"})]
    assert [t.index for t in sweep.trials] == [0, 1, 2, 3]
    assert sweep.trials[0].spec.scratch and sweep.trials[0].pretrain_key is None
    assert sweep.spec.axis_names == ["epochs", "scale"] and sweep.spec.row_axis == "epochs"


def test_trials_differing_only_in_finetuning_share_one_pretraining(tmp_path):
    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml", axes=[
        {"path": "finetune.*.train_fraction", "values": [0.5, 1.0]},
        {"path": "pretrain.epochs", "values": [0, 1]},
    ]))
    assert [t.spec.finetune["actions"].train_fraction for t in sweep.trials] == [0.5, 0.5, 1.0, 1.0]
    assert list(sweep.pretrainings().values()) == [[1, 3]]
    assert sweep.trials[1].pretrain_key == run_key(sweep.trials[1].spec.pretrain)
    assert len({t.hash for t in sweep.trials}) == 4


def test_axes_write_the_raw_mapping_so_presets_resolve_after_overrides(tmp_path):
    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml", axes=[
        {"path": "pretrain.model", "values": [{"preset": "small"}]},
        {"path": "pretrain.pmg.transforms.0", "values": ["perspective"]},
    ], base={**TINY_BASE, "pretrain": {**TINY_BASE["pretrain"], "pmg": {"transforms": ["zoom", "affine"]}}}))
    pre = sweep.trials[0].spec.pretrain
    assert (pre.model.embed_dim, pre.model.img_size) == (192, 64)  # the small preset, not tiny's overrides
    assert pre.pmg.size == 64  # PMG follows the model
    assert [c.name for c in pre.pmg.transforms] == ["perspective", "affine"]
    # a scratch target is built like the pre-training's model
    assert sweep.trials[0].spec.finetune["actions"].model == pre.model


def test_extends_chain_deep_merges_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write_yaml(tmp_path / "root.yaml", {"name": "root", "base": TINY_BASE, "resources": {"cpu": 2, "gpu": 0}})
    write_yaml(tmp_path / "sub" / "mid.yaml", {"extends": "../root.yaml", "base": {"pretrain": {"epochs": 3}}})
    write_yaml(tmp_path / "sub" / "leaf.yaml", {"extends": "mid.yaml", "name": "leaf",
                                                "base": {"pretrain": {"source": {"kind": "fractal", "images": 32}}}})
    sweep = load_sweep(tmp_path / "sub" / "leaf.yaml")
    pre = sweep.trials[0].spec.pretrain
    assert sweep.spec.name == "leaf" and sweep.spec.resources.cpu == 2
    assert pre.epochs == 3 and pre.source.images == 32 and pre.source.categories == 2  # merged, not replaced
    assert pre.model.embed_dim == 32


def test_a_mapping_whose_kind_changes_is_replaced_not_merged():
    merged = deep_merge({"s": {"kind": "folder", "path": "/x", "images": 5}}, {"s": {"kind": "fractal", "images": 9}})
    assert merged == {"s": {"kind": "fractal", "images": 9}}


def test_extends_cycle_is_an_error(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"extends": "b.yaml", "name": "a"})
    write_yaml(tmp_path / "b.yaml", {"extends": "a.yaml", "name": "b"})
    with pytest.raises(SpecError, match=r"`extends` cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_sweep(tmp_path / "a.yaml")


def test_bad_axis_field_names_file_trial_values_and_field(tmp_path):
    path = tiny_sweep(tmp_path / "bad.yaml", axes=[{"path": "pretrain.epochs", "values": [1, -1]}])
    with pytest.raises(SpecError) as err:
        load_sweep(path)
    message = str(err.value)
    assert message.startswith(f"{path}: trial 1 (pretrain.epochs=-1): invalid spec")
    assert "  pretrain.epochs: Input should be greater than or equal to 0" in message

    path = tiny_sweep(tmp_path / "typo.yaml", axes=[{"path": "pretrain.epochz", "values": [2]}])
    with pytest.raises(SpecError, match=r"typo\.yaml: trial 0 \(pretrain.epochz=2\).*\n  pretrain.epochz: unknown field"):
        load_sweep(path)


def test_axis_path_through_a_scalar_is_an_error_naming_the_path(tmp_path):
    path = tiny_sweep(tmp_path / "s.yaml", axes=[{"path": "pretrain.epochs.x", "values": [1]}])
    with pytest.raises(SpecError, match=r"s\.yaml: trial 0 \(pretrain.epochs.x=1\): axes.0 path 'pretrain.epochs.x': "
                                        r"pretrain.epochs is a int \(1\), not a mapping or a list"):
        load_sweep(path)
    path = tiny_sweep(tmp_path / "t.yaml", axes=[{"path": "pretrain.pmg.transforms.5", "values": ["zoom"]}],
                      base={**TINY_BASE, "pretrain": {**TINY_BASE["pretrain"], "pmg": {"transforms": ["zoom"]}}})
    with pytest.raises(SpecError, match=r"index 5 is out of range"):
        load_sweep(path)


def test_sweep_level_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(SpecError, match=r"s\.yaml: invalid spec \(1 error\)\n  axes.0.axis: Value error, 1 labels for 2"):
        load_sweep(tiny_sweep(tmp_path / "s.yaml", axes=[{"path": "pretrain.epochs", "values": [1, 2], "labels": ["a"]}]))
    with pytest.raises(SpecError, match=r"table.row 'nope' is not an axis name"):
        load_sweep(tiny_sweep(tmp_path / "r.yaml", axes=[{"path": "pretrain.epochs", "values": [1]}],
                              table={"row": "nope"}))
    with pytest.raises(SpecError, match=r"trials \[0, 1\] have the same spec"):
        load_sweep(tiny_sweep(tmp_path / "d.yaml", axes=[{"path": "pretrain.epochs", "values": [1, 1]}]))


def test_environment_placeholders(tmp_path, monkeypatch):
    base = {**TINY_BASE, "finetune": {"ucf": {"dataset": {"kind": "ucf101", "root": "${UCF_TEST_ROOT:-/data/ucf}"}}}}
    path = tiny_sweep(tmp_path / "s.yaml", base=base)
    monkeypatch.delenv("UCF_TEST_ROOT", raising=False)
    assert str(load_sweep(path).trials[0].spec.finetune["ucf"].dataset.root) == "/data/ucf"
    monkeypatch.setenv("UCF_TEST_ROOT", str(tmp_path / "videos"))
    assert load_sweep(path).trials[0].spec.finetune["ucf"].dataset.root == tmp_path / "videos"
    base["finetune"]["ucf"]["dataset"]["root"] = "${UCF_UNSET_ROOT_XYZ}"
    with pytest.raises(SpecError, match=r"s\.yaml: base.finetune.ucf.dataset.root: environment variable "
                                        r"UCF_UNSET_ROOT_XYZ is not set"):
        load_sweep(tiny_sweep(tmp_path / "s.yaml", base=base))


def test_init_is_set_by_the_sweep_not_the_file(tmp_path):
    base = {**TINY_BASE, "finetune": {"actions": {**TINY_BASE["finetune"]["actions"], "init": "/x/model.pt"}}}
    with pytest.raises(SpecError, match=r"finetune.actions.init: leave it unset"):
        load_sweep(tiny_sweep(tmp_path / "s.yaml", base=base))


def test_set_path_creates_mappings_and_star_means_every_key():
    tree = {"finetune": {"a": {}, "b": {"epochs": 1}}}
    set_path(tree, "finetune.*.dataset.classes", 3)
    set_path(tree, "pretrain.model.depth", 2)
    assert tree == {"finetune": {"a": {"dataset": {"classes": 3}}, "b": {"epochs": 1, "dataset": {"classes": 3}}},
                    "pretrain": {"model": {"depth": 2}}}


def test_run_keys_leave_out_execution_fields(tmp_path):
    one = load_sweep(tiny_sweep(tmp_path / "a.yaml")).trials[0]
    other = load_sweep(tiny_sweep(tmp_path / "b.yaml", axes=[{"path": "pretrain.threads", "values": [2]}])).trials[0]
    assert one.hash == other.hash and one.pretrain_key == other.pretrain_key


def test_only_selects_trials_by_axis_labels(tmp_path):
    from pmgflow.orchestrate.sweep import select_trials

    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml", axes=[
        {"path": "pretrain.epochs", "values": [0, 1, 2], "labels": ["scratch", "short", "long"], "name": "init"},
        {"path": "finetune.*.train_fraction", "values": [0.5, 1.0], "name": "fraction"},
    ]))
    assert select_trials(sweep, None) == set(range(6))
    assert select_trials(sweep, ["init=scratch,long"]) == {0, 1, 4, 5}
    assert select_trials(sweep, ["init=scratch,long", "fraction=0.5"]) == {0, 4}
    with pytest.raises(SpecError, match="axis init has no label middle; its labels: long, scratch, short"):
        select_trials(sweep, ["init=middle"])
    with pytest.raises(SpecError, match="AXIS one of init, fraction"):
        select_trials(sweep, ["epochs=0"])
