"""Textures for the synthetic scenes: real photos shipped with scikit-image and procedural patterns.

Every texture maps texture coordinates ``uv`` ([N, 2], ``u`` to the right, ``v`` down the image,
period 1 unless stated) to linear RGB in [0, 1] ([N, 3] float64). Image textures repeat and are
looked up bilinearly (texel centres at +0.5, like pixels).

Photos: only scikit-image sample images that ship inside the wheel (no download) are used, see
`PHOTOS` and `GRAY_PHOTOS`; each is loaded once and downsized to at most `MAX_TEXTURE` pixels on
its longer side. Without scikit-image a deterministic procedural noise image stands in, so the
generator still works (less realistically).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PHOTOS",
    "GRAY_PHOTOS",
    "MAX_TEXTURE",
    "Texture",
    "Solid",
    "ImageTexture",
    "Checker",
    "Stripes",
    "Facade",
    "photo",
    "photo_texture",
    "random_texture",
]

# colour photos and grey-level photos in skimage.data that load offline (checked with skimage 0.26)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")
GRAY_PHOTOS = ("brick", "grass", "gravel", "camera", "coins", "moon", "clock", "text", "page", "cell")
MAX_TEXTURE = 256


class Texture:
    def sample(self, uv: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Solid(Texture):
    color: tuple[float, float, float]

    def sample(self, uv: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.color, dtype=np.float64), (len(uv), 3)).copy()


class ImageTexture(Texture):
    """A repeating image ([H, W, 3] floats in [0, 1]) with bilinear filtering."""

    def __init__(self, image: np.ndarray, name: str = "image"):
        image = np.asarray(image, dtype=np.float64)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"texture {name!r} must be [H, W, 3], got {image.shape}")
        self.image = image
        self.name = name

    def sample(self, uv: np.ndarray) -> np.ndarray:
        h, w = self.image.shape[:2]
        x = uv[:, 0] * w - 0.5
        y = uv[:, 1] * h - 0.5
        x0f = np.floor(x)
        y0f = np.floor(y)
        fx = (x - x0f)[:, None]
        fy = (y - y0f)[:, None]
        x0 = x0f.astype(np.int64) % w
        y0 = y0f.astype(np.int64) % h
        x1 = (x0 + 1) % w
        y1 = (y0 + 1) % h
        img = self.image
        top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
        bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
        return top * (1 - fy) + bottom * fy

    def __repr__(self) -> str:
        return f"ImageTexture({self.name!r}, {self.image.shape[1]}x{self.image.shape[0]})"


@dataclass(frozen=True)
class Checker(Texture):
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    cells: tuple[int, int] = (8, 8)

    def sample(self, uv: np.ndarray) -> np.ndarray:
        i = np.floor(uv[:, 0] * self.cells[0]) + np.floor(uv[:, 1] * self.cells[1])
        odd = (np.mod(i, 2) == 1)[:, None]
        return np.where(odd, np.asarray(self.color_b, float), np.asarray(self.color_a, float))


@dataclass(frozen=True)
class Stripes(Texture):
    """Stripes across ``axis`` (0: vertical stripes varying with u, 1: horizontal varying with v)."""

    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    count: int = 6
    axis: int = 0
    duty: float = 0.5

    def sample(self, uv: np.ndarray) -> np.ndarray:
        frac = np.mod(uv[:, self.axis] * self.count, 1.0)
        on = (frac < self.duty)[:, None]
        return np.where(on, np.asarray(self.color_b, float), np.asarray(self.color_a, float))


@dataclass(frozen=True)
class Facade(Texture):
    """A building facade: a wall texture with a grid of windows, uv in bays (1 window per unit)."""

    wall: Texture
    glass: tuple[float, float, float] = (0.12, 0.16, 0.22)
    frame_u: tuple[float, float] = (0.25, 0.75)
    frame_v: tuple[float, float] = (0.25, 0.7)

    def sample(self, uv: np.ndarray) -> np.ndarray:
        fu = np.mod(uv[:, 0], 1.0)
        fv = np.mod(uv[:, 1], 1.0)
        win = (fu > self.frame_u[0]) & (fu < self.frame_u[1]) & (fv > self.frame_v[0]) & (fv < self.frame_v[1])
        out = self.wall.sample(uv)
        if win.any():
            # a faint vertical gradient in the glass reads as a sky reflection
            g = np.asarray(self.glass, float)[None, :] * (1.0 + 0.6 * (1.0 - fv[win, None]))
            out[win] = np.clip(g, 0, 1)
        return out


def _resize_max(img: np.ndarray, max_size: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = max_size / max(h, w)
    if scale >= 1:
        return img
    from PIL import Image

    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BOX))


def _noise_image(name: str, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    base = rng.uniform(0, 1, size=(8, 8, 3))
    img = np.kron(base, np.ones((size // 8, size // 8, 1)))
    return (img * 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def photo(name: str, max_size: int = MAX_TEXTURE) -> np.ndarray:
    """A scikit-image sample photo as uint8 [H, W, 3] (grey photos replicated to RGB), cached."""
    if name not in PHOTOS + GRAY_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; available: {PHOTOS + GRAY_PHOTOS}")
    try:
        import skimage.data

        img = np.asarray(getattr(skimage.data, name)())
    except Exception:  # no scikit-image, or a data file missing from this install
        img = _noise_image(name)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    img = _resize_max(img, max_size)
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=None)
def photo_texture(name: str, tint: tuple[float, float, float] = (1.0, 1.0, 1.0), contrast: float = 1.0) -> ImageTexture:
    """A photo as a texture, multiplied by ``tint``; ``contrast`` < 1 pulls it towards its mean."""
    img = photo(name).astype(np.float64) / 255.0
    if contrast != 1.0:
        img = img.mean() + contrast * (img - img.mean())
    img = img * np.asarray(tint, dtype=np.float64)
    return ImageTexture(np.clip(img, 0, 1), name)


def random_color(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.95) -> tuple[float, float, float]:
    return tuple(float(x) for x in rng.uniform(lo, hi, size=3))


def random_texture(rng: np.random.Generator, photo_prob: float = 0.6) -> Texture:
    """A random photo (colour, or grey tinted) or procedural pattern."""
    r = rng.uniform()
    if r < photo_prob:
        if rng.uniform() < 0.6:
            return photo_texture(str(rng.choice(PHOTOS)))
        tint = tuple(round(x, 3) for x in random_color(rng, 0.4, 1.0))
        return photo_texture(str(rng.choice(GRAY_PHOTOS)), tint)
    if r < photo_prob + (1 - photo_prob) / 2:
        n = int(rng.integers(2, 7))
        return Checker(random_color(rng), random_color(rng), (2 * n, n))
    return Stripes(random_color(rng), random_color(rng), int(rng.integers(3, 10)), int(rng.integers(0, 2)))
