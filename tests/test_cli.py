"""The command line as a user runs it: preview, data, pretrain -> finetune, and clear errors (exit 2)."""

import json

import yaml
from PIL import Image
from typer.testing import CliRunner

from pmgflow.cli import app

from .conftest import TINY_MODEL

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_preview_default_writes_a_gif_per_transform_and_source_and_a_sheet(tmp_path):
    r = invoke("preview", "--out", tmp_path, "--clips", 2, "--size", 32, "--frames", 6)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["affine.gif", "color_jitter.gif", "contact_sheet.png", "cutmix.gif", "fade.gif",
                            "identity.gif", "perspective.gif", "sliding_window.gif", "zoom.gif",
                            "shapes.gif", "mosi.gif"])
    for name in ("zoom.gif", "shapes.gif", "mosi.gif"):
        gif = Image.open(tmp_path / name)
        assert gif.n_frames == 6 and gif.size == (2 * 32 + 2, 32)
    assert Image.open(tmp_path / "contact_sheet.png").size[1] == 10 * 34


def test_preview_of_chosen_video_sources(tmp_path):
    r = invoke("preview", "--out", tmp_path / "a", "--videos", "shapes,mosi", "--clips", 1, "--size", 32,
               "--frames", 4)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["contact_sheet.png", "mosi.gif", "shapes.gif"]
    r = invoke("preview", "--out", tmp_path / "b", "--videos", "shapes,blobs")
    assert r.exit_code == 2 and "--videos" in r.output and "blobs" in r.output
    assert not (tmp_path / "b").exists()


def test_preview_shows_a_spec_s_own_sources(tmp_path):
    spec = tmp_path / "pretrain.yaml"
    spec.write_text("model: {preset: tiny}\nsource: {kind: fractal, categories: 2, images: 8, size: 32}\n"
                    "videos:\n  - {kind: pmg, fraction: 0.5}\n  - {kind: shapes, fraction: 0.25}\n"
                    "  - {kind: shapes, fraction: 0.25, texture: noise}\n")
    r = invoke("preview", "--out", tmp_path / "out", "--spec", spec, "--clips", 1)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "affine.gif", "contact_sheet.png", "shapes-1.gif", "shapes-2.gif", "zoom.gif"]


def test_preview_from_a_photo_folder(tmp_path):
    from skimage import data

    photos = tmp_path / "photos" / "cats"
    photos.mkdir(parents=True)
    Image.fromarray(data.chelsea()).save(photos / "chelsea.jpg")
    Image.fromarray(data.astronaut()).save(photos / "astronaut.png")
    r = invoke("preview", "--out", tmp_path / "out", "--source", tmp_path / "photos", "--transforms", "zoom,affine",
               "--clips", 2, "--size", 32, "--frames", 4)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "affine.gif", "contact_sheet.png", "mosi.gif", "shapes.gif", "zoom.gif"]


def test_data_fractal_writes_category_folders(tmp_path):
    r = invoke("data", "fractal", "--out", tmp_path, "--categories", 3, "--per-category", 2, "--size", 32)
    assert r.exit_code == 0, r.output
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 3 and all(len(list(f.glob("*.png"))) == 2 for f in folders)


def test_pretrain_then_finetune_through_the_cli(tmp_path):
    pre = tmp_path / "pre.yaml"
    pre.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 8, "threads": 1, "model": TINY_MODEL,
                                   "source": {"kind": "fractal", "categories": 2, "images": 16, "size": 32}}))
    ft = tmp_path / "ft.yaml"
    ft.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 4, "threads": 1, "model": TINY_MODEL,
                                  "test_segments": 1, "test_crops": 1,
                                  "dataset": {"kind": "actions", "classes": 3, "train_per_class": 4,
                                              "test_per_class": 2, "frames": 12, "size": 32}}))
    runs = tmp_path / "runs"
    r = invoke("pretrain", pre, "--out", runs)
    assert r.exit_code == 0, r.output
    (ckpt,) = runs.glob("pretrain-*/model.pt")
    r = invoke("finetune", ft, "--init", ckpt, "--out", runs)
    assert r.exit_code == 0, r.output
    (result,) = runs.glob("finetune-*/result.json")
    res = json.loads(result.read_text())
    assert res["init"] == str(ckpt.resolve()) and res["classes"] == 3 and 0 <= res["top1"] <= 100
    assert "top1" in r.output and str(result.parent) in r.output.replace("\n", "")


def test_bad_spec_is_one_message_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nmask_ratio: 2\nmodel: {presett: tiny}\n")
    r = invoke("pretrain", bad)
    assert r.exit_code == 2
    assert "bad.yaml: invalid spec (2 errors)" in r.output
    assert "mask_ratio" in r.output and "model.presett: unknown field" in r.output
    assert "Traceback" not in r.output


def test_missing_spec_file_and_missing_checkpoint(tmp_path):
    r = invoke("pretrain", tmp_path / "nope.yaml")
    assert r.exit_code == 2 and "nope.yaml: spec file not found" in r.output
    ft = tmp_path / "ft.yaml"
    ft.write_text("epochs: 1\n")
    r = invoke("finetune", ft, "--init", tmp_path / "missing.pt")
    assert r.exit_code == 2 and "missing.pt: checkpoint not found" in r.output


def test_missing_image_folder_is_a_clear_error(tmp_path):
    r = invoke("preview", "--out", tmp_path / "o", "--source", tmp_path / "no_such_dir")
    assert r.exit_code == 2 and "no_such_dir" in r.output


def test_a_gpu_asked_for_where_there_is_none_is_one_message(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("PMGFLOW_RUNS", str(tmp_path / "runs"))
    spec = tmp_path / "ft.yaml"
    spec.write_text(yaml.safe_dump({"model": TINY_MODEL, "device": "cuda", "epochs": 1}))
    r = invoke("finetune", spec)
    assert r.exit_code == 2, r.output
    assert "device 'cuda' was asked for, but no CUDA device is available" in r.output and "Traceback" not in r.output
