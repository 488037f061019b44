"""Motion strength: PMG's per-frame steps, measured on its output by phase correlation, at 32x32 and 224x224.

Ranges are fractions of the frame per frame of a 16-frame clip: the same motion end to end at any size and
frame count, scaled by `strength`.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pmgflow.pmg.generator import PseudoMotionGenerator
from pmgflow.pmg.transforms import TRANSFORMS, scale_steps
from pmgflow.spec.pmg import PMGSpec

registration = pytest.importorskip("skimage.registration")


def photo(size):
    skdata = pytest.importorskip("skimage.data")
    img = torch.from_numpy(np.ascontiguousarray(skdata.astronaut()[:400, :400, :3])).permute(2, 0, 1).float() / 255
    return F.interpolate(img[None], size=(size, size), mode="area")


def shift_per_frame(frames: int, size: int, translate: float, strength: float = 1.0) -> np.ndarray:
    """(dy, dx) pixels per frame between frames 1 and 3 of a pure translation clip, by phase correlation."""
    spec = PMGSpec(frames=frames, size=size, strength=strength, transforms=[{"name": "affine", "params": {
        "rotate": [0, 0], "scale": [1, 1], "shear": [0, 0], "translate": [translate, translate]}}])
    video = PseudoMotionGenerator(spec)(photo(size), torch.Generator().manual_seed(0))[0]
    grey = video.mean(0).numpy()
    # Frames 1 and 3 are both away from the first frame; the central window avoids the reflected border.
    m = size // 4
    shift, _, _ = registration.phase_cross_correlation(grey[1, m:-m, m:-m], grey[3, m:-m, m:-m], upsample_factor=20)
    return np.abs(shift) / 2


@pytest.mark.parametrize("frames,size", [(8, 32), (16, 224)])
def test_translation_per_frame_is_the_intended_fraction_of_the_frame(frames, size):
    translate = 0.015  # the default range's bound
    expected = translate * (16 - 1) / (frames - 1) * size  # 1.03 px at 8x32x32, 3.36 px at 16x224x224
    measured = shift_per_frame(frames, size, translate)
    assert measured == pytest.approx([expected, expected], abs=0.1 + 0.03 * expected)


def test_a_clip_covers_the_same_motion_end_to_end_at_any_frame_count():
    # 8 frames take steps 15/7 times those of 16 frames: first to last frame, the same displacement.
    short, long = shift_per_frame(8, 112, 0.01), shift_per_frame(16, 112, 0.01)
    assert short * 7 == pytest.approx(long * 15, rel=0.08)


def test_strength_scales_the_displacement():
    for strength in (0.5, 1.0, 2.0):
        expected = 0.01 * 112 * strength
        assert shift_per_frame(16, 112, 0.01, strength) == pytest.approx([expected] * 2, abs=0.1 + 0.05 * expected)


def test_scale_steps_by_kind():
    affine = TRANSFORMS["affine"].Params()
    scaled = scale_steps(affine, 2.0)
    assert scaled.translate == pytest.approx((-0.03, 0.03))  # added per frame: multiplied
    assert scaled.scale == pytest.approx((0.98 ** 2, 1.02 ** 2))  # factor per frame: raised to the power
    fade = scale_steps(TRANSFORMS["fade"].Params(), 2.0)
    assert fade.step == pytest.approx((1 - 0.97 ** 2, 1 - 0.92 ** 2))  # fraction lost per frame: (1-x)^k kept
    window = scale_steps(TRANSFORMS["sliding_window"].Params(), 2.0)
    assert window.window == (0.6, 0.8) and window.speed == pytest.approx((0.02, 0.06))  # a size is not a step
    assert scale_steps(affine, 1.0) is affine


def test_step_scale_of_the_spec():
    assert PMGSpec(frames=16).step_scale == 1.0
    assert PMGSpec(frames=8, strength=0.5).step_scale == pytest.approx(0.5 * 15 / 7)
    with pytest.raises(ValueError, match="strength"):
        PMGSpec(strength=0)
