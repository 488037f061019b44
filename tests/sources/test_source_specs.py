"""A pre-training spec's `videos`: bad sources are named by their path, shares add up to 1, and PMG alone keeps
the run key it had before `videos` existed."""

import pytest
import yaml

from pmgflow.errors import SpecError
from pmgflow.spec.base import canonical_json, load_spec, run_key, validate_spec
from pmgflow.spec.pmg import PMGSpec
from pmgflow.spec.sources import MoSIVideos, PMGVideos, ShapesVideos
from pmgflow.spec.train import PretrainSpec


def load(tmp_path, data: dict) -> PretrainSpec:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(PretrainSpec, path)


def error_of(tmp_path, data: dict) -> str:
    with pytest.raises(SpecError) as exc:
        load(tmp_path, data)
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'exp.yaml'}: invalid spec")
    return message


def test_a_mixed_spec_loads_with_its_sources(tmp_path):
    spec = load(tmp_path, {"videos": [
        {"kind": "pmg", "fraction": 0.5},
        {"kind": "shapes", "fraction": 0.3, "motion": "moving", "shapes": ["polygon"], "texture": "image"},
        {"kind": "mosi", "fraction": 0.2, "window": [0.6, 0.7], "one_axis": False}]})
    pmg, shapes, mosi = spec.videos
    assert isinstance(pmg, PMGVideos) and isinstance(shapes, ShapesVideos) and isinstance(mosi, MoSIVideos)
    assert shapes.motion == "moving" and shapes.shapes == ["polygon"] and shapes.objects == (8, 12)
    assert mosi.window == (0.6, 0.7) and not mosi.one_axis
    assert spec.video_kinds == ("pmg", "shapes", "mosi")
    again = PretrainSpec.model_validate(spec.model_dump(mode="json"))  # a dumped spec reads back the same
    assert again == spec and run_key(again) == run_key(spec)


@pytest.mark.parametrize("source, path, words", [
    ({"kind": "shapes", "speed": [0.03, 0.01]}, "videos.0.shapes.speed", "lower bound 0.03 is above"),
    ({"kind": "shapes", "speed": [0.0, 0.6]}, "videos.0.shapes.speed", "not within [0.0, 0.5]"),
    ({"kind": "shapes", "objects": [0, 4]}, "videos.0.shapes.objects", "not within [1, 64]"),
    ({"kind": "shapes", "radius": [0.5, 0.1]}, "videos.0.shapes.radius", "lower bound"),
    ({"kind": "shapes", "radius_power": -1}, "videos.0.shapes.radius_power", "greater than or equal to 0"),
    ({"kind": "shapes", "shapes": []}, "videos.0.shapes.shapes", "at least 1 item"),
    ({"kind": "shapes", "shapes": ["star"]}, "videos.0.shapes.shapes.0", "'circle' or 'polygon'"),
    ({"kind": "shapes", "motion": "bouncing"}, "videos.0.shapes.motion", "'static'"),
    ({"kind": "shapes", "texture": "wood"}, "videos.0.shapes.texture", "'flat'"),
    ({"kind": "shapes", "acceleration": 0.5}, "videos.0.shapes.acceleration", "less than or equal to 0.1"),
    ({"kind": "shapes", "colour": "red"}, "videos.0.shapes.colour", "unknown field"),
    ({"kind": "shapes", "fraction": 0}, "videos.0.shapes.fraction", "greater than 0"),
    ({"kind": "mosi", "window": [0.9, 0.5]}, "videos.0.mosi.window", "lower bound 0.9 is above"),
    ({"kind": "mosi", "window": [0.01, 0.5]}, "videos.0.mosi.window", "not within [0.05, 1.0]"),
    ({"kind": "mosi", "speeds": [0.1, -0.6]}, "videos.0.mosi.speeds", "within [-0.5, 0.5]"),
    ({"kind": "mosi", "speeds": []}, "videos.0.mosi.speeds", "at least 1 item"),
    ({"kind": "pmg", "transforms": ["zoom"]}, "videos.0.pmg.transforms", "unknown field"),
])
def test_a_bad_source_parameter_is_named_by_its_path(tmp_path, source, path, words):
    message = error_of(tmp_path, {"videos": [{**source, "fraction": source.get("fraction", 1.0)}]})
    assert f"  {path}: " in message
    assert words in message


def test_the_path_numbers_the_source(tmp_path):
    message = error_of(tmp_path, {"videos": [{"kind": "pmg", "fraction": 0.5},
                                             {"kind": "mosi", "fraction": 0.5, "speeds": [0.9]}]})
    assert "  videos.1.mosi.speeds: " in message and "videos.0" not in message


def test_shares_must_add_up_to_one(tmp_path):
    message = error_of(tmp_path, {"videos": [{"kind": "pmg", "fraction": 0.5}, {"kind": "shapes", "fraction": 0.4}]})
    assert "fractions add up to 0.9, not 1" in message
    message = error_of(tmp_path, {"videos": [{"kind": "shapes"}, {"kind": "mosi"}]})  # each 1 by default
    assert "fractions add up to 2, not 1" in message
    assert error_of(tmp_path, {"videos": [{"kind": "mosi", "fraction": 0.5}]})
    thirds = load(tmp_path, {"videos": [{"kind": k, "fraction": 1 / 3} for k in ("pmg", "shapes", "mosi")]})
    assert len(thirds.videos) == 3  # 1/3 + 1/3 + 1/3 is 1 up to rounding


def test_pmg_is_listed_at_most_once(tmp_path):
    message = error_of(tmp_path, {"videos": [{"kind": "pmg", "fraction": 0.5}, {"kind": "pmg", "fraction": 0.5}]})
    assert "pmg is listed more than once" in message
    twice = load(tmp_path, {"videos": [{"kind": "shapes", "fraction": 0.5}, {"kind": "shapes", "fraction": 0.5,
                                                                           "texture": "noise"}]})
    assert twice.video_kinds == ("shapes", "shapes")  # other kinds may repeat, with other parameters


def test_unknown_or_missing_kinds_and_empty_lists_are_rejected(tmp_path):
    message = error_of(tmp_path, {"videos": [{"kind": "dots"}]})
    assert "  videos.0: " in message and "'dots'" in message and "'pmg', 'shapes', 'mosi'" in message
    assert "  videos.0: " in error_of(tmp_path, {"videos": [{"fraction": 1.0}]})
    assert "  videos: " in error_of(tmp_path, {"videos": []})
    assert "  videos: " in error_of(tmp_path, {"videos": "shapes"})


def test_pmg_alone_is_the_spec_without_videos(tmp_path):
    plain = load(tmp_path, {"epochs": 3})
    for videos in ([{"kind": "pmg"}], [{"kind": "pmg", "fraction": 1.0}]):
        spelled = load(tmp_path, {"epochs": 3, "videos": videos})
        assert spelled.videos is None and spelled.video_kinds == ("pmg",)
        assert "videos" not in spelled.model_dump() and "videos" not in spelled.model_dump(mode="json")
        assert spelled == plain
        assert run_key(spelled) == run_key(plain) and canonical_json(spelled) == canonical_json(plain)
    assert "videos" not in PretrainSpec().model_dump(mode="json")
    assert run_key(PretrainSpec(videos=[PMGVideos()])) == run_key(PretrainSpec())


def test_a_mixed_spec_has_its_own_run_key():
    plain = PretrainSpec(epochs=3)
    keys = {run_key(plain)}
    for videos in ([{"kind": "pmg", "fraction": 0.5}, {"kind": "shapes", "fraction": 0.5}],
                   [{"kind": "pmg", "fraction": 0.75}, {"kind": "shapes", "fraction": 0.25}],
                   [{"kind": "pmg", "fraction": 0.5}, {"kind": "shapes", "fraction": 0.5, "motion": "static"}],
                   [{"kind": "pmg", "fraction": 0.5}, {"kind": "mosi", "fraction": 0.5}],
                   [{"kind": "shapes"}],
                   [{"kind": "mosi"}]):
        spec = PretrainSpec(epochs=3, videos=videos)
        assert spec.videos is not None and "videos" in spec.model_dump()
        keys.add(run_key(spec))
    assert len(keys) == 7
    # Defaults are written out: a source's key does not change when its defaults are spelled.
    short = PretrainSpec(videos=[{"kind": "shapes"}])
    spelled = PretrainSpec(videos=[{"kind": "shapes", "fraction": 1.0, "objects": [8, 12], "motion": "accelerating"}])
    assert run_key(short) == run_key(spelled)


def test_source_specs_alone_validate_their_fields():
    assert ShapesVideos().kind == "shapes" and MoSIVideos().kind == "mosi" and PMGVideos().fraction == 1.0
    for cls, data, field in ((ShapesVideos, {"speed": (0.2, 0.1)}, "speed"),
                             (ShapesVideos, {"objects": (2, 65)}, "objects"),
                             (MoSIVideos, {"window": (0.5, 1.2)}, "window"),
                             (MoSIVideos, {"speeds": [0.51]}, "speeds")):
        with pytest.raises(SpecError) as exc:
            validate_spec(cls, data, "source")
        assert f"  {field}: " in str(exc.value)
    assert ShapesVideos(objects=(1, 64), speed=(0.0, 0.5), radius=(0.005, 2.0)).objects == (1, 64)
    assert MoSIVideos(window=(0.05, 1.0), speeds=[-0.5, 0.5]).window == (0.05, 1.0)


def test_assigning_a_field_keeps_the_pmg_spec_a_model(recwarn):
    spec = PretrainSpec(model={"preset": "tiny"}, videos=[{"kind": "shapes"}])
    spec.epochs = 3
    assert isinstance(spec.pmg, PMGSpec) and spec.pmg.frames == 8
    assert spec.model_dump()["pmg"]["size"] == 32
    assert not [w for w in recwarn if "serializ" in str(w.message).lower()]
