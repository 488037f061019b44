"""The embedded action set: procedurally rendered actions of an articulated figure (no download).

Each video shows one figure (head, torso, upper and lower arms and legs as anti-aliased capsules) whose joint
angles follow an action-specific function of a cycle phase. Body proportions, size, position, facing, speed,
phase, colours, the smooth low-contrast background and a small camera jitter are random per video, so the
classes differ in motion rather than appearance (a cluttered high-contrast background made a similar set
unlearnable at 32x32). Every cycle lasts about 10 to 16 frames: an 8-frame clip at stride 2 to 4 sees one.

The set is written in the UCF101 layout and cached by :mod:`pmgflow.data.embedded` (:data:`ACTION_SET`, spec
kind ``actions``), like the motion set, whose classes differ in the trajectory of a rigid object instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from pmgflow.data.embedded import EmbeddedSet, background, colour_near

# Bump when the renderer changes: a cached set written by another version is rendered again.
RENDER_VERSION = 1

# Ordered most distinct first: a spec with N classes takes the first N.
ACTIONS = [
    "wave", "clap", "jump", "squat", "kick", "punch",
    "bow", "jumping_jacks", "arm_circles", "walk", "run", "side_step",
]  # fmt: skip

# Pose: angles in radians measured from straight down, positive towards the figure's front (side view) or
# outwards (front view, mirrored for the left limbs). ua/fa: upper/fore arm, th/sh: thigh/shin; _n near side
# (or right), _f far side (or left); lean: torso tilt forwards; air: lift off the ground; dx: forward travel;
# all in units of the standing height. Each function takes the phase (array over frames) and an amplitude.
Pose = dict[str, np.ndarray | float]


def _both(**kw: np.ndarray | float) -> Pose:
    """Give near and far limbs the same angles (symmetric poses)."""
    out: Pose = {}
    for key, value in kw.items():
        if key in ("ua", "fa", "th", "sh"):
            out[key + "_n"] = out[key + "_f"] = value
        else:
            out[key] = value
    return out


def _wave(p, a):
    arm = {"ua_n": 2.2 + 0.15 * np.sin(p), "fa_n": math.pi + 0.9 * a * np.sin(p), "ua_f": 0.12, "fa_f": 0.12}
    return _both(th=0.07, sh=0.07) | arm


def _clap(p, a):
    closed = 0.5 * (1 - np.sin(p))
    return _both(ua=0.35 + 0.75 * (1 - closed), fa=2.4 + 1.8 * a * closed, th=0.07, sh=0.07)


def _jump(p, a):
    crouch, up = np.maximum(0, -np.sin(p)), np.maximum(0, np.sin(p))
    return _both(
        th=0.07 + 0.5 * crouch, sh=0.07 - 0.5 * crouch, ua=0.25 + 2.3 * up, fa=0.35 + 2.3 * up, air=0.2 * a * up
    )


def _squat(p, a):
    k = 0.5 * a * (1 - np.cos(p))
    return _both(th=1.35 * k, sh=-0.5 * k, lean=0.45 * k, ua=1.5 * k, fa=1.5 * k)


def _kick(p, a):
    b = np.maximum(0, np.sin(p))
    th = 1.45 * a * b
    return {"th_n": th, "sh_n": th - 1.2 * np.sin(np.pi * b), "th_f": -0.12, "sh_f": -0.12,
            "ua_n": 0.5, "fa_n": 2.6, "ua_f": 0.5, "fa_f": 2.6, "lean": -0.25 * b}  # fmt: skip


def _punch(p, a):
    near, far = np.maximum(0, np.sin(p)) * a, np.maximum(0, -np.sin(p)) * a
    return {"ua_n": 0.3 + 1.27 * near, "fa_n": 2.8 - 1.23 * near, "ua_f": 0.3 + 1.27 * far, "fa_f": 2.8 - 1.23 * far,
            "th_n": 0.3, "sh_n": 0.2, "th_f": -0.25, "sh_f": -0.3, "lean": 0.1}  # fmt: skip


def _bow(p, a):
    k = 0.5 * a * (1 - np.cos(p))
    return _both(lean=1.15 * k, ua=0.2 * k, fa=0.25 * k, th=-0.1 * k, sh=-0.1 * k)


def _jumping_jacks(p, a):
    o = 0.5 * (1 - np.cos(p))
    return _both(ua=0.15 + 2.55 * a * o, fa=0.15 + 2.7 * a * o, th=0.05 + 0.33 * o, sh=0.05 + 0.33 * o,
                 air=0.07 * np.abs(np.sin(p)))  # fmt: skip


def _arm_circles(p, a):
    return _both(ua=p, fa=p, th=0.07, sh=0.07)


def _gait(p, swing, bend, arm, elbow, lean, air, speed):
    """Walking and running: legs and arms swing in opposition; the leg moving forward bends its knee."""
    s, c = np.sin(p), np.cos(p)
    return {"th_n": swing * s, "sh_n": swing * s - bend[0] - bend[1] * np.maximum(0, c),
            "th_f": -swing * s, "sh_f": -swing * s - bend[0] - bend[1] * np.maximum(0, -c),
            "ua_n": -arm * s, "fa_n": -arm * s + elbow, "ua_f": arm * s, "fa_f": arm * s + elbow,
            "lean": lean, "air": air * np.abs(np.sin(2 * p)), "dx": speed * p / (2 * np.pi)}  # fmt: skip


def _walk(p, a):
    return _gait(p, 0.42 * a, (0.15, 0.6), 0.35, 0.25, 0.05, 0.0, 0.3)


def _run(p, a):
    return _gait(p, 0.75 * a, (0.4, 1.2), 0.65, 1.5, 0.25, 0.05, 0.35)


def _side_step(p, a):
    o = 0.5 * (1 - np.cos(2 * p))
    return _both(th=0.05 + 0.3 * o, sh=0.05 + 0.3 * o, ua=0.2 + 0.3 * o, fa=0.2 + 0.3 * o) | {"dx": 0.3 * a * np.sin(p)}


# action: (pose function, front view?, cycle length in frames, feet kept in place: "both", "far" or None = travel)
_MOTIONS: dict[str, tuple[Callable[[np.ndarray, float], Pose], bool, float, str | None]] = {
    "wave": (_wave, True, 11, "both"),
    "clap": (_clap, True, 11, "both"),
    "jump": (_jump, True, 13, "both"),
    "squat": (_squat, False, 14, "both"),
    "kick": (_kick, False, 13, "far"),
    "punch": (_punch, False, 12, "both"),
    "bow": (_bow, False, 14, "both"),
    "jumping_jacks": (_jumping_jacks, True, 12, "both"),
    "arm_circles": (_arm_circles, True, 13, "both"),
    "walk": (_walk, False, 14, None),
    "run": (_run, False, 11, None),
    "side_step": (_side_step, True, 14, None),
}
assert list(_MOTIONS) == ACTIONS


def _direction(angle: np.ndarray) -> np.ndarray:
    """Unit vectors (y up) for angles from straight down, positive towards +x: (..., 2)."""
    return np.stack([np.sin(angle), -np.cos(angle)], axis=-1)


def _skeleton(
    pose: Pose, frames: int, front: bool, anchor: str | None, body: dict[str, float]
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Capsules (start (T, 2), end (T, 2), part) in body units (y up, feet on y = 0), in drawing order."""

    def angle(key: str, side: float = 1.0) -> np.ndarray:
        return side * np.broadcast_to(np.asarray(pose.get(key, 0.0), float), (frames,))

    lean = angle("lean")
    pelvis = np.zeros((frames, 2))
    up = _direction(np.pi - lean)  # the torso's axis, tilted forwards by `lean`
    neck = pelvis + body["torso"] * up
    head = neck + (body["neck"] + body["head"]) * up
    across = np.array([1.0, 0.0])
    limbs = {}
    for side, sign in (("n", 1.0), ("f", -1.0 if front else 1.0)):
        offset = sign * across if front else 0 * across
        shoulder, hip = neck + body["shoulder"] * offset, pelvis + body["hip"] * offset
        elbow = shoulder + body["upper_arm"] * _direction(angle("ua_" + side, sign))
        hand = elbow + body["forearm"] * _direction(angle("fa_" + side, sign))
        knee = hip + body["thigh"] * _direction(angle("th_" + side, sign))
        foot = knee + body["shin"] * _direction(angle("sh_" + side, sign))
        limbs[side] = (shoulder, elbow, hand, hip, knee, foot)
    feet = np.stack([limbs["n"][5], limbs["f"][5]])
    # Stand on the lowest foot, lifted by `air`; stationary actions keep the feet in place (the hips move).
    shift = np.zeros((frames, 2))
    shift[:, 1] = body["r_limb"] - feet[..., 1].min(axis=0) + angle("air")
    anchored = {"both": feet[..., 0].mean(axis=0), "far": feet[1, :, 0], None: 0.0}[anchor]
    shift[:, 0] = angle("dx") - anchored
    if front:
        order = ["f_leg", "n_leg", "torso", "f_arm", "n_arm", "head"]
    else:
        order = ["f_arm", "f_leg", "torso", "n_leg", "head", "n_arm"]
    capsules = []
    for part in order:
        if part == "torso":
            capsules.append((pelvis, neck, "torso"))
        elif part == "head":
            capsules.append((head, head, "head"))
        else:
            side, kind = part.split("_")
            shoulder, elbow, hand, hip, knee, foot = limbs[side]
            joints = (shoulder, elbow, hand) if kind == "arm" else (hip, knee, foot)
            name = f"{kind}_{'far' if side == 'f' and not front else 'near'}"
            capsules += [(joints[0], joints[1], name), (joints[1], joints[2], name)]
    return [(a + shift, b + shift, part) for a, b, part in capsules]


def _random_body(rng: np.random.Generator) -> dict[str, float]:
    """Segment lengths and thicknesses (units of the standing height) with random proportions."""
    arm, leg, trunk = rng.uniform(0.9, 1.1, size=3)
    thick = rng.uniform(0.85, 1.2)
    body = {
        "thigh": 0.24 * leg, "shin": 0.23 * leg, "torso": 0.30 * trunk, "neck": 0.05,
        "head": 0.09 * rng.uniform(0.9, 1.1),
        "upper_arm": 0.17 * arm, "forearm": 0.16 * arm, "shoulder": 0.09 * thick, "hip": 0.055 * thick,
        "r_limb": 0.05 * thick, "r_torso": 0.08 * thick,
    }  # fmt: skip
    return body


def _draw_capsule(image: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float, colour: np.ndarray) -> None:
    """Paint an anti-aliased capsule from a to b ((T, 2) pixel x, y per frame) over float (T, H, W, 3) in place."""
    _, height, width, _ = image.shape
    reach = radius + 1.0
    lo = np.floor(np.minimum(a, b).min(axis=0) - reach).astype(int)
    hi = np.ceil(np.maximum(a, b).max(axis=0) + reach).astype(int)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], width), min(hi[1], height)
    if x0 >= x1 or y0 >= y1:
        return
    # Only the box the capsule sweeps over all frames is computed: limbs cover a small part of the frame.
    px = (np.arange(x0, x1, dtype=np.float32) + 0.5)[None, None, :] - a[:, 0, None, None]
    py = (np.arange(y0, y1, dtype=np.float32) + 0.5)[None, :, None] - a[:, 1, None, None]
    abx, aby = (b[:, 0] - a[:, 0])[:, None, None], (b[:, 1] - a[:, 1])[:, None, None]
    t = np.clip((px * abx + py * aby) / np.maximum(abx * abx + aby * aby, 1e-9), 0.0, 1.0)
    dist = np.sqrt((px - t * abx) ** 2 + (py - t * aby) ** 2)
    alpha = np.clip(radius + 0.5 - dist, 0.0, 1.0)[..., None]
    region = image[:, y0:y1, x0:x1]
    region += alpha * (colour - region)


def render_action(action: str, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """Render one video of `action`: uint8 (frames, size, size, 3)."""
    if action not in _MOTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    motion, front, period, anchor = _MOTIONS[action]
    body = _random_body(rng)
    period *= rng.uniform(0.85, 1.15)
    phase = 2 * np.pi * np.arange(frames) / period + rng.uniform(0, 2 * np.pi)
    pose = motion(phase, rng.uniform(0.85, 1.1))
    capsules = _skeleton(pose, frames, front, anchor, body)

    # Body units -> pixels: height about 0.6 of the frame, random facing and place, a smooth camera jitter.
    height = size * rng.uniform(0.55, 0.66)
    facing = rng.choice([-1.0, 1.0])
    travel = np.broadcast_to(np.asarray(pose.get("dx", 0.0)), (frames,)) * height
    cx = size * rng.uniform(0.42, 0.58) - facing * 0.5 * (travel.max() + travel.min())
    ground = size * rng.uniform(0.8, 0.88)
    jitter = np.clip(np.cumsum(rng.normal(0, 0.25, size=(frames, 2)), axis=0), -1.5, 1.5)

    grid = (np.arange(size) + 0.5) / size
    image, level = background(rng, grid[None] - jitter[:, 1:] / size, grid[None] - jitter[:, :1] / size)

    # Figure colours contrast with the background's mean luminance (lighter or darker, by chance).
    sign = 1.0 if level < 0.5 else -1.0
    if rng.random() < 0.3 and 0.3 < level < 0.7:
        sign = -sign

    def shade() -> np.ndarray:
        return colour_near(rng, float(np.clip(level + sign * rng.uniform(0.3, 0.45), 0.03, 0.97)), 0.2)

    shirt, trousers, skin = shade(), shade(), shade()
    far = 0.75 if sign > 0 else 1.35  # the far limbs drawn a little closer to the background
    colours = {"torso": shirt, "arm_near": shirt, "arm_far": np.clip(shirt * far, 0, 1),
               "leg_near": trousers, "leg_far": np.clip(trousers * far, 0, 1), "head": skin}  # fmt: skip
    radii = {"torso": body["r_torso"], "head": body["head"]}
    for start, end, part in capsules:
        a = np.stack([cx + facing * height * start[:, 0], ground - height * start[:, 1]], axis=-1) - jitter
        b = np.stack([cx + facing * height * end[:, 0], ground - height * end[:, 1]], axis=-1) - jitter
        _draw_capsule(image, a, b, height * radii.get(part, body["r_limb"]), colours[part].astype(np.float32))
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


ACTION_SET = EmbeddedSet("actions", tuple(ACTIONS), render_action, RENDER_VERSION)
