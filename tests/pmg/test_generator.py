"""PseudoMotionGenerator: shapes, ranges, determinism and the behaviour of each transform family."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pmgflow.pmg.generator import (PseudoMotionGenerator, apply_color, color_frames, matrix_powers, mix_videos,
                                   mix_videos_, stays_inside, warp, warp_grid)
from pmgflow.pmg.transforms import TRANSFORMS, scale3
from pmgflow.spec.pmg import AugmentSpec, PMGSpec


def gen(name, frames=8, size=32, mode="composed", params=None, **kw):
    return PseudoMotionGenerator(PMGSpec(frames=frames, size=size, mode=mode,
                                         transforms=[{"name": name, "params": params or {}}], **kw))


def photo(size=64, n=2):
    """Real photos from scikit-image, resized to size x size."""
    skdata = pytest.importorskip("skimage.data")
    imgs = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()][:n]
    crops = [torch.from_numpy(np.ascontiguousarray(i[:300, :300, :3])).permute(2, 0, 1).float() / 255 for i in imgs]
    return F.interpolate(torch.stack(crops), size=(size, size), mode="area")


def disc(size=32, radius=6):
    c = torch.arange(size) - (size - 1) / 2
    r = (c[None, :] ** 2 + c[:, None] ** 2).sqrt()
    return (r <= radius).float().expand(3, size, size)[None].clone()


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("mode", ["composed", "recursive"])
def test_every_transform_shape_range_determinism(name, mode):
    images = photo(48, 4 if name != "cutmix" else 4)
    g = gen(name, mode=mode)
    a = g(images, torch.Generator().manual_seed(3))
    b = g(images, torch.Generator().manual_seed(3))
    c = g(images, torch.Generator().manual_seed(4))
    assert a.shape == (4, 3, 8, 32, 32) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    if name != "identity":
        assert not torch.equal(a, c)
        assert float((a[:, :, 1:] - a[:, :, :-1]).abs().mean()) > 1e-4  # it moves


def test_identity_frames_all_equal():
    v = gen("identity")(photo(32, 2), torch.Generator().manual_seed(0))
    assert torch.equal(v, v[:, :, :1].expand_as(v))
    assert torch.allclose(v[:, :, 0], photo(32, 2), atol=1e-5)


@pytest.mark.parametrize("direction,grows", [("in", True), ("out", False)])
def test_zoom_in_grows_zoom_out_shrinks(direction, grows):
    g = gen("zoom", frames=8, params={"direction": direction, "step": [1.05, 1.05], "center": 0.0})
    v = g(disc(32, 5), torch.Generator().manual_seed(0))
    area = v[0, 0].gt(0.5).flatten(1).sum(1).float()
    diffs = area[1:] - area[:-1]
    assert (diffs >= 0).all() if grows else (diffs <= 0).all()
    assert (area[-1] > 1.5 * area[0]) if grows else (area[0] > 1.5 * area[-1])


def test_fade_is_monotone():
    g = gen("fade", frames=10)
    v = g(photo(32, 4), torch.Generator().manual_seed(1))
    mean = v.mean(dim=(1, 3, 4))  # (B, T)
    d = mean[:, 1:] - mean[:, :-1]
    monotone = (d >= -1e-6).all(1) | (d <= 1e-6).all(1)
    assert monotone.all()
    assert (mean[:, 0] - mean[:, -1]).abs().min() > 0.05


def test_cutmix_patch_moves():
    black, white = torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)
    g = gen("cutmix", frames=8, params={"speed": [0.04, 0.04], "size": [0.3, 0.3]})
    v = g(torch.cat([black, white]), torch.Generator().manual_seed(0))
    mask = v[0, 0].gt(0.5).float()  # the white patch pasted on the black image
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cy = (mask * ys).flatten(1).sum(1) / mask.flatten(1).sum(1)
    cx = (mask * xs).flatten(1).sum(1) / mask.flatten(1).sum(1)
    assert (mask.flatten(1).sum(1) > 50).all()
    travelled = ((cx[-1] - cx[0]) ** 2 + (cy[-1] - cy[0]) ** 2).sqrt()
    assert travelled > 0.04 * 32 * 7 * 0.8  # ~speed * side * steps, minus edge clipping


@pytest.mark.parametrize("name", ["affine", "perspective", "color_jitter", "fade"])
def test_composed_equals_recursive_after_one_step(name):
    images = photo(32, 2)
    params = {"direction": "in"} if name == "zoom" else {}
    comp = gen(name, frames=2, mode="composed", params=params)(images, torch.Generator().manual_seed(5))
    rec = gen(name, frames=2, mode="recursive", params=params)(images, torch.Generator().manual_seed(5))
    assert torch.allclose(comp, rec, atol=1e-5)


def high_frequency_energy(x):
    lap = x[..., 1:-1, 1:-1] * 4 - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return float(lap.pow(2).mean())


def test_composed_stays_sharper_than_recursive_after_16_frames():
    images = photo(64, 2)
    params = {"rotate": [2.0, 3.0], "translate": [0.01, 0.02], "scale": [1.0, 1.0], "shear": [0.0, 0.0]}
    comp = gen("affine", frames=16, size=64, mode="composed", params=params)(images, torch.Generator().manual_seed(2))
    rec = gen("affine", frames=16, size=64, mode="recursive", params=params)(images, torch.Generator().manual_seed(2))
    e_comp, e_rec = high_frequency_energy(comp[:, :, -1]), high_frequency_energy(rec[:, :, -1])
    assert e_comp > 1.5 * e_rec
    # composed resamples once whatever t: frame 15 is about as sharp as frame 1 (recursive is not)
    assert e_comp > 0.8 * high_frequency_energy(comp[:, :, 1])
    assert e_rec < 0.6 * high_frequency_energy(rec[:, :, 1])


def test_mixup_is_a_convex_combination():
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(6, 3, 4, 8, 8)
    out = mix_videos(videos, AugmentSpec(kind="mixup", alpha=1.0), g)
    flat, o = videos.flatten(1), out.flatten(1)
    for i in range(6):
        best = None
        for j in range(6):
            if j == i:
                continue
            d = flat[i] - flat[j]
            lam = float(((o[i] - flat[j]) @ d) / (d @ d))
            resid = float((o[i] - (lam * flat[i] + (1 - lam) * flat[j])).abs().max())
            if best is None or resid < best[0]:
                best = (resid, lam)
        assert best[0] < 1e-5 and -1e-6 <= best[1] <= 1 + 1e-6


def test_videomix_pastes_one_box_in_every_frame():
    videos = torch.cat([torch.zeros(1, 3, 4, 16, 16), torch.ones(1, 3, 4, 16, 16)])
    out = mix_videos(videos, AugmentSpec(kind="videomix"), torch.Generator().manual_seed(1))
    box = out[0, 0] > 0.5
    assert torch.equal(box, box[:1].expand_as(box))  # same box in every frame
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_weights_pick_transforms_in_proportion():
    spec = PMGSpec(frames=2, size=8, transforms=[{"name": "identity", "weight": 3}, {"name": "fade", "weight": 1}])
    _, choice = PseudoMotionGenerator(spec).generate(torch.rand(4000, 3, 8, 8), torch.Generator().manual_seed(0))
    share = float((choice == 0).float().mean())
    assert 0.72 < share < 0.78


def test_generation_runs_on_a_non_square_larger_source():
    v = PseudoMotionGenerator(PMGSpec(frames=4, size=16))(torch.rand(3, 3, 40, 56), torch.Generator().manual_seed(0))
    assert v.shape == (3, 3, 4, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cpu_and_gpu_agree():
    spec = PMGSpec(frames=8, size=32, transforms=list(TRANSFORMS))
    images = photo(48, 4)
    cpu = PseudoMotionGenerator(spec)(images, torch.Generator().manual_seed(0))
    gpu = PseudoMotionGenerator(spec)(images.cuda(), torch.Generator().manual_seed(0)).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4)


@pytest.mark.parametrize("kind", ["none", "mixup", "videomix"])
def test_rendering_does_not_depend_on_the_chunk_size(monkeypatch, kind):
    """CPU renders a few videos at a time, CUDA a whole block: the videos must be the same."""
    import pmgflow.pmg.generator as generator

    spec = PMGSpec(frames=6, size=24, transforms=sorted(TRANSFORMS), augment={"kind": kind})
    images = torch.rand(13, 3, 30, 30)
    whole = PseudoMotionGenerator(spec)(images, torch.Generator().manual_seed(7))
    monkeypatch.setattr(generator, "CHUNK_PIXELS", 6 * 24 * 24 * 2)  # two videos per chunk
    assert generator.chunk_size(6, 24, torch.device("cpu")) == 2
    chunked = PseudoMotionGenerator(spec)(images, torch.Generator().manual_seed(7))
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_out_buffer_receives_the_videos_and_bad_buffers_are_refused():
    spec = PMGSpec(frames=4, size=16, transforms=sorted(TRANSFORMS), augment={"kind": "mixup"})
    images = torch.rand(5, 3, 20, 20)
    fresh = PseudoMotionGenerator(spec)(images, torch.Generator().manual_seed(1))
    buffer = torch.full((5, 3, 4, 16, 16), float("nan"))
    got = PseudoMotionGenerator(spec)(images, torch.Generator().manual_seed(1), out=buffer)
    assert got.data_ptr() == buffer.data_ptr()
    assert torch.equal(fresh, buffer)
    with pytest.raises(ValueError, match="out must be"):
        PseudoMotionGenerator(spec)(images, out=torch.empty(5, 3, 4, 16, 15))


def test_in_place_mixing_equals_mixing_a_copy():
    videos = torch.rand(7, 3, 4, 8, 8)
    for kind in ("mixup", "videomix"):
        spec = AugmentSpec(kind=kind, alpha=0.8)
        copy = mix_videos(videos, spec, torch.Generator().manual_seed(3))
        inplace = mix_videos_(videos.clone(), spec, torch.Generator().manual_seed(3), chunk=3)
        assert torch.allclose(copy, inplace, atol=1e-6)
        assert not torch.equal(copy, videos)


def test_every_video_is_mixed_with_another_one():
    """Partners follow one cycle: with lambda in (0,1), no video is left unmixed or mixed with itself."""
    videos = torch.arange(6.0).view(6, 1, 1, 1, 1).expand(6, 3, 2, 4, 4).contiguous()
    out = mix_videos(videos, AugmentSpec(kind="mixup", alpha=1.0, prob=1.0), torch.Generator().manual_seed(0))
    values = out[:, 0, 0, 0, 0]
    assert (values != torch.arange(6.0)).all()


@pytest.mark.parametrize("name", ["sliding_window", "zoom", "affine", "perspective"])
def test_warp_equals_reflected_sampling(name):
    images = photo(40, 2)
    m = TRANSFORMS[name]().motion(2, 8, torch.Generator().manual_seed(0))
    mats = matrix_powers(m.geo_init, m.geo_step, 8)
    expected = F.grid_sample(images, warp_grid(mats, 32), mode="bilinear", padding_mode="reflection",
                             align_corners=False)
    assert torch.allclose(warp(images, mats, 32), expected, atol=1e-5)


def test_stays_inside_tells_a_window_from_a_rotation():
    assert stays_inside(scale3(torch.tensor([0.7, 1.0])))
    assert not stays_inside(scale3(torch.tensor([1.1])))
    rot = torch.tensor([[[0.9, -0.44, 0.0], [0.44, 0.9, 0.0], [0.0, 0.0, 1.0]]])
    assert not stays_inside(rot)


def test_color_frames_equals_colouring_every_frame():
    image = torch.rand(3, 3, 8, 8)
    m = TRANSFORMS["color_jitter"]().motion(3, 5, torch.Generator().manual_seed(0))
    mats = matrix_powers(m.color_init, m.color_step, 5)
    expected = apply_color(image.unsqueeze(2).expand(-1, -1, 5, -1, -1), mats)
    assert torch.allclose(color_frames(image, mats, torch.empty(3, 3, 5, 8, 8)), expected, atol=1e-5)
