"""The carving over time (`model.time_carve`), against a brute-force numpy reference: a red square
before a white background moves 5 pixels to the right between two frames of one standing camera;
each pixel's Gaussian sits on its pixel's ray at the square's depth or, for the background, farther.
Which Gaussians a witness sees through is then a matter of which pixels the square covers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrm4d_core.cameras import Cameras, pixel_rays
from lrm4d_core.data.rigs import look_at
from lrm4d_core.model.prior import PriorConstants, decode_prior
from lrm4d_core.model.time_carve import TimeCarveConstants, carved_time_scales

SIZE, FOCAL, SQUARE_DEPTH, BACK_DEPTH, SHIFT = 32, 32.0, 2.0, 3.0, 5
ROWS, COLS = slice(10, 20), 8  # the square's rows, and its first column at time 0
WIDE = 1.5  # every Gaussian's temporal scale before the carving, in input gaps


def _cameras(n: int) -> Cameras:
    """n copies of one camera at the origin looking along +x."""
    pose = look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]])
    return Cameras(torch.tensor(np.tile(K, (n, 1, 1))), torch.tensor(np.tile(pose, (n, 1, 1))), SIZE, SIZE)


def _square(frame: int, colour=(1.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(image [3, H, W], mask [H, W]) of the square at a frame: columns COLS + SHIFT * frame on."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[ROWS, COLS + SHIFT * frame:COLS + SHIFT * frame + 10] = True
    image = np.ones((3, SIZE, SIZE))
    image[:, mask] = np.asarray(colour)[:, None]
    return image, mask


def _scene(frames: list[int], times: list[float]):
    """Inputs of the square at the given frames and times: images [1, V, 3, H, W], background
    [1, V, H, W], Gaussian centres [1, V*H*W, 3] (z-depth SQUARE_DEPTH on the square, BACK_DEPTH
    elsewhere), their times [1, V*H*W] and the masks [V, H, W]."""
    cams = _cameras(len(frames))
    origins, dirs = pixel_rays(cams)  # [V, H, W, 3], unit directions
    images, masks = zip(*(_square(f) for f in frames))
    masks = np.stack(masks)
    z = np.where(masks, SQUARE_DEPTH, BACK_DEPTH)
    along = torch.tensor(z) / dirs[..., 0]  # the camera looks along +x: z-depth is the x coordinate
    xyz = (origins + along[..., None] * dirs).reshape(1, -1, 3)
    times_t = torch.tensor([times], dtype=torch.float64)
    mu = times_t[:, :, None].expand(1, len(frames), SIZE * SIZE).reshape(1, -1)
    return (torch.tensor(np.stack(images))[None], torch.tensor(~masks)[None], xyz, mu, times_t, cams, masks)


def _carve(frames, times, constants, velocity=None):
    images, background, xyz, mu, times_t, cams, masks = _scene(frames, times)
    scale_t = torch.full_like(mu, WIDE)
    out = carved_time_scales(xyz, velocity, mu, scale_t, images, background, cams, times_t,
                             torch.tensor([1.0], dtype=torch.float64), constants)
    return out.reshape(len(frames), SIZE, SIZE), masks, xyz


def _dilate(mask: np.ndarray, window: int) -> np.ndarray:
    """Brute-force window x window dilation of a boolean mask."""
    half, out = window // 2, np.zeros_like(mask)
    for r in range(mask.shape[0]):
        for c in range(mask.shape[1]):
            out[r, c] = mask[max(r - half, 0):r + half + 1, max(c - half, 0):c + half + 1].any()
    return out


@pytest.mark.parametrize("window", [1, 3])
def test_gaussians_a_later_input_sees_through_fade_before_it(window):
    """The square's Gaussians of frame 0 that frame 1 sees background behind (the square has left
    them, and no pixel of it is within the window) get temporal scale width x 1 gap; the rest,
    background included (white seen as white), keep theirs. The same for frame 1 seen from frame 0."""
    constants = TimeCarveConstants(width=0.5, window=window)
    got, masks, _ = _carve([0, 1], [0.0, 1.0], constants)
    for own, other in ((0, 1), (1, 0)):
        expected = masks[own] & ~_dilate(masks[other], window)
        assert expected.sum() == 10 * (SHIFT - window // 2)  # the reference is not empty
        carved = got[own].numpy() < WIDE
        np.testing.assert_array_equal(carved, expected)
        np.testing.assert_allclose(got[own].numpy()[expected], 0.5, atol=1e-12)


def test_a_gaussian_that_moves_with_the_square_is_not_carved():
    """Given the square's true velocity (5 pixels at its depth per gap, along the image's x axis,
    world -y here), frame 0's square lands on frame 1's square: nothing of it fades."""
    images, background, xyz, mu, times_t, cams, masks = _scene([0, 1], [0.0, 1.0])
    velocity = torch.zeros_like(xyz)
    right = cams.cam_to_world[0, :3, 0]  # the image's x axis in the world
    on_square = torch.tensor(masks.reshape(-1))
    on_square[SIZE * SIZE:] = False  # frame 0's square only
    velocity[0, on_square] = right * SHIFT * SQUARE_DEPTH / FOCAL
    got, _, _ = _carve([0, 1], [0.0, 1.0], TimeCarveConstants(width=0.5, window=1), velocity=velocity)
    assert got[0][torch.tensor(masks[0])].min() == WIDE
    assert got[1].lt(WIDE).any()  # frame 1's own Gaussians, given no velocity of their own, still are


def test_witnesses_are_inputs_at_other_times_within_range():
    """A second camera at the same time (less than `min_gap`) or one beyond `max_gap` carves
    nothing; the same input at 3 gaps carves to width x 3."""
    for times, constants, expect in (([0.0, 0.2], TimeCarveConstants(width=0.5), None),
                                     ([0.0, 5.0], TimeCarveConstants(width=0.5, max_gap=4.0), None),
                                     ([0.0, 3.0], TimeCarveConstants(width=0.5, max_gap=4.0), 0.5 * 3.0)):
        images, background, xyz, mu, times_t, cams, masks = _scene([0, 1], times)
        out = carved_time_scales(xyz, None, mu, torch.full_like(mu, 9.0), images, background, cams, times_t,
                                 torch.tensor([1.0], dtype=torch.float64), constants).reshape(2, SIZE, SIZE)
        if expect is None:
            assert out.eq(9.0).all()
        else:
            assert math.isclose(float(out.min()), expect, rel_tol=1e-9)


def test_an_occluded_ghost_is_kept():
    """If a nearer surface covers the square's old place at frame 1 (the witness sees something in
    front of the Gaussian, not behind it), nothing is carved."""
    images, background, xyz, mu, times_t, cams, masks = _scene([0, 1], [0.0, 1.0])
    images[0, 1, :, :, :] = 0.2  # frame 1 sees a grey wall ...
    background[0, 1] = False
    z = torch.full((SIZE, SIZE), 1.0, dtype=torch.float64)  # ... at depth 1, nearer than the square
    origins, dirs = pixel_rays(cams[1:2])
    xyz[0, SIZE * SIZE:] = (origins[0] + (z / dirs[0, ..., 0])[..., None] * dirs[0]).reshape(-1, 3)
    out = carved_time_scales(xyz, None, mu, torch.full_like(mu, WIDE), images, background, cams, times_t,
                             torch.tensor([1.0], dtype=torch.float64), TimeCarveConstants(width=0.5, window=1))
    assert out.reshape(2, SIZE, SIZE)[0].eq(WIDE).all()


def test_a_steady_witness_that_sees_another_colour_carves():
    """Frame 1 shows a blue wall at the square's depth. From the same camera (steady: a depth error
    would not move the square's image there) that carves all of frame 0's square with `steady` 1 px
    and none of it with `steady` 0; from a camera 0.5 to the side (a 15% depth error moves the image
    by about 2.5 px) it carves none with `steady` 1 px and all with `steady` 10 px."""
    for side, steady, carved in ((0.0, 1.0, True), (0.0, 0.0, False), (0.5, 1.0, False), (0.5, 10.0, True)):
        images, background, xyz, mu, times_t, cams, masks = _scene([0, 0], [0.0, 1.0])
        right = cams.cam_to_world[1, :3, 0].clone()
        cams.cam_to_world[1, :3, 3] += side * right
        origins, dirs = pixel_rays(cams[1:2])
        xyz[0, SIZE * SIZE:] = (origins[0] + (SQUARE_DEPTH / dirs[0, ..., 0])[..., None] * dirs[0]).reshape(-1, 3)
        images[0, 1] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)[:, None, None]
        background[0, 1] = False
        out = carved_time_scales(xyz, None, mu, torch.full_like(mu, WIDE), images, background, cams, times_t,
                                 torch.tensor([1.0], dtype=torch.float64),
                                 TimeCarveConstants(width=0.5, window=1, steady=steady)).reshape(2, SIZE, SIZE)
        square = out[0][torch.tensor(masks[0])]
        assert bool(square.lt(WIDE).all() if carved else square.eq(WIDE).all()), (side, steady)


def test_gaussians_kept_by_the_caller_are_not_carved():
    """`keep` (the stereo's static pixels) exempts Gaussians from the carving."""
    images, background, xyz, mu, times_t, cams, masks = _scene([0, 1], [0.0, 1.0])
    keep = torch.zeros(1, 2 * SIZE * SIZE, dtype=torch.bool)
    keep[0, :SIZE * SIZE] = True
    out = carved_time_scales(xyz, None, mu, torch.full_like(mu, WIDE), images, background, cams, times_t,
                             torch.tensor([1.0], dtype=torch.float64), TimeCarveConstants(width=0.5), keep=keep)
    out = out.reshape(2, SIZE, SIZE)
    assert out[0].eq(WIDE).all() and out[1].lt(WIDE).any()


def test_decode_prior_carves_at_inference_only():
    """Through `decode_prior` with a head that outputs zeros and the prior depth at the scene's
    depths: at inference frame 0's square Gaussians that frame 1 sees through get a temporal scale
    of at most width x gap; in training they keep the prior's."""
    images, background, xyz, mu, times_t, cams, masks = _scene([0, 1], [0.0, 1.0])
    origins, dirs = pixel_rays(cams)
    V, P = 2, SIZE * SIZE
    depth = (xyz.reshape(V, SIZE, SIZE, 3) - origins).norm(dim=-1)
    raw = torch.zeros(1, V * P, 20, dtype=torch.float64)
    raw[..., 11] = raw[..., 15] = 1.0  # identity quaternions (q_left, q_right)
    constants = PriorConstants(far=50.0, carve={"width": 0.25, "window": 1})
    args = (raw, images, cams, times_t, origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3), depth[None],
            torch.ones(3, dtype=torch.float64), constants, 5.0)
    trained = decode_prior(*args, inference=False)
    inferred = decode_prior(*args, inference=True)
    gone = torch.tensor(masks[0] & ~masks[1]).reshape(-1)
    assert inferred.scales[0, :P, 3][gone].max() <= 0.25 + 1e-9
    assert trained.scales[0, :P, 3][gone].min() > 1.0
    assert torch.equal(inferred.scales[0, :P, 3][~gone], trained.scales[0, :P, 3][~gone])


def test_constants_are_checked():
    with pytest.raises(ValueError):
        TimeCarveConstants(width=0.5, window=2)
    with pytest.raises(ValueError):
        TimeCarveConstants(width=0.5, min_gap=2.0, max_gap=1.0)
    assert PriorConstants(carve={"width": 0.5}).carve == TimeCarveConstants(width=0.5)
