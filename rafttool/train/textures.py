"""Texture sources for the synthetic optical-flow generator.

Transfer to real footage depends more on texture *variety* with real image
statistics than on scene realism: a generator textured with noise alone fits
its own data but fails on real pairs. Layers are therefore textured with random
crops of real photographs (the samples bundled with scikit-image, read from
disk, never downloaded) mixed with procedural patterns that cover what the few
photographs lack: flat and smoothly shaded areas, periodic structure, and the
occlusion-rich statistics of dead-leaves images.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

# Bundled scikit-image samples used as texture sources. motorcycle_* is the
# project's evaluation stereo pair and must never leak into training; motion
# blurred, binary, tiny and purely synthetic files are left out.
PHOTO_FILES: tuple[str, ...] = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "logo.png",
    "moon.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)

# Central fraction kept per file: the fundus photograph is a disc on black.
_PHOTO_CROP: dict[str, float] = {"retina.jpg": 0.68}

_PYRAMID_LEVELS = 3

# RGB <-> YIQ: hue rotation and saturation are linear in the IQ plane, so a
# whole colour jitter folds into a single 3x3 matrix.
_RGB2YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)


def hue_saturation_matrix(hue: float, saturation: float) -> np.ndarray:
    """3x3 RGB matrix rotating hue by `hue` radians and scaling chroma, keeping luma."""
    c, s = np.cos(hue), np.sin(hue)
    iq = saturation * np.array([[c, -s], [s, c]])
    yiq = np.eye(3)
    yiq[1:, 1:] = iq
    return _YIQ2RGB @ yiq @ _RGB2YIQ


def warp_image(
    src: np.ndarray,
    out_to_src: np.ndarray,
    width: int,
    height: int,
    border: int = cv2.BORDER_REFLECT_101,
) -> np.ndarray:
    """Backward-map `src` with a 3x3 matrix taking output pixels to source pixels.

    Affine maps use warpAffine, which is faster; projective ones warpPerspective.
    """
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if abs(out_to_src[2, 0]) < 1e-12 and abs(out_to_src[2, 1]) < 1e-12:
        m = (out_to_src[:2] / out_to_src[2, 2]).astype(np.float64)
        return cv2.warpAffine(src, m, (width, height), flags=flags, borderMode=border)
    return cv2.warpPerspective(
        src, out_to_src.astype(np.float64), (width, height), flags=flags, borderMode=border
    )


def smooth_field(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Random smooth float32 field in [0, 1] with features about `cell` pixels wide.

    Used for shading, haze density, illumination changes and blob-shaped masks.
    """
    gh = max(2, int(np.ceil(height / cell)) + 1)
    gw = max(2, int(np.ceil(width / cell)) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(field.min()), float(field.max())
    return (field - lo) / max(hi - lo, 1e-6)


def fractal_noise(
    rng: np.random.Generator, height: int, width: int, cell: float, persistence: float
) -> np.ndarray:
    """Multi-octave value noise in [0, 1]: detail at every scale below `cell`."""
    total = np.zeros((height, width), np.float32)
    amp, norm = 1.0, 0.0
    while cell >= 2.0:  # finer octaves would only alias
        total += amp * smooth_field(rng, height, width, cell)
        norm += amp
        amp *= persistence
        cell /= 2.0
    if norm == 0.0:
        return rng.random((height, width), dtype=np.float32)
    total /= norm
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def _palette(rng: np.random.Generator) -> np.ndarray:
    """Random colour ramp as a 256x1x3 uint8 lookup table with 2-4 stops."""
    n = int(rng.integers(2, 5))
    stops = np.sort(np.concatenate([[0.0, 1.0], rng.random(n - 2)]))
    colours = rng.uniform(0.0, 255.0, (n, 3))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=-1)
    return lut.astype(np.uint8).reshape(256, 1, 3)


def _colourise(rng: np.random.Generator, scalar: np.ndarray) -> np.ndarray:
    """Map a [0, 1] field through a random colour ramp (uint8 HxWx3)."""
    s = np.clip(scalar * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(cv2.merge([s, s, s]), _palette(rng))


def _noise_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cell = float(np.exp(rng.uniform(np.log(3.0), np.log(96.0))))
    field = fractal_noise(rng, h, w, cell, persistence=rng.uniform(0.35, 0.8))
    if rng.random() < 0.3:  # ridged / turbulent variant: thin bright creases
        field = 1.0 - np.abs(2.0 * field - 1.0)
    return _colourise(rng, field)


def _dead_leaves(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Occluding random ellipses with power-law radii: scale-invariant like natural images."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    n = int(rng.integers(80, 500))
    rmin = rng.uniform(1.5, 4.0)
    rmax = max(rmin + 1.0, rng.uniform(0.08, 0.5) * min(h, w))
    # Inverse CDF of a density proportional to r^-3 on [rmin, rmax].
    u = rng.random(n)
    radii = (rmin**-2 - u * (rmin**-2 - rmax**-2)) ** -0.5
    centres = rng.uniform((0, 0), (w, h), (n, 2))
    aspect = rng.uniform(0.3, 1.0, n)
    angles = rng.uniform(0, 180, n)
    if rng.random() < 0.5:
        lut = _palette(rng)[:, 0, :]
        colours = lut[rng.integers(0, 256, n)]
    else:
        colours = rng.integers(0, 256, (n, 3))
    for (cx, cy), r, a, ang, col in zip(centres, radii, aspect, angles, colours):
        axes = (max(1, int(r)), max(1, int(r * a)))
        cv2.ellipse(img, (int(cx), int(cy)), axes, float(ang), 0, 360, col.tolist(), -1, cv2.LINE_AA)
    return img


def _stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sine, square-wave or checker patterns: periodic structure that defeats naive matching."""
    theta = rng.uniform(0, np.pi)
    freq = 2.0 * np.pi / float(np.exp(rng.uniform(np.log(4.0), np.log(60.0))))
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    u = (xs * np.cos(theta) + ys * np.sin(theta)) * freq + rng.uniform(0, 2 * np.pi)
    if rng.random() < 0.4:  # wavy stripes
        u = u + rng.uniform(1.0, 6.0) * smooth_field(rng, h, w, rng.uniform(20, 120))
    wave = np.sin(u)
    if rng.random() < 0.35:
        v = (ys * np.cos(theta) - xs * np.sin(theta)) * freq * rng.uniform(0.5, 2.0)
        wave = wave * np.sin(v)
    sharp = float(np.exp(rng.uniform(0.0, np.log(10.0))))
    return _colourise(rng, 0.5 + 0.5 * np.tanh(sharp * wave))


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth ramps with faint noise: the near-textureless areas (sky, walls) real scenes have."""
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    if rng.random() < 0.5:
        theta = rng.uniform(0, 2 * np.pi)
        ramp = xs * np.cos(theta) + ys * np.sin(theta)
    else:
        cx, cy = rng.uniform(-0.5, 1.5) * w, rng.uniform(-0.5, 1.5) * h
        ramp = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    ramp = ramp + rng.uniform(0.0, 0.08) * fractal_noise(rng, h, w, rng.uniform(4, 32), 0.6)
    return _colourise(rng, np.clip(ramp, 0.0, 1.0))


_PROCEDURAL = ((_noise_texture, 0.35), (_dead_leaves, 0.3), (_stripes, 0.2), (_gradient, 0.15))


@dataclass(frozen=True)
class Texture:
    """A source image plus the map from layer-local to source pixel coordinates.

    Keeping the two apart lets the renderer fold texture placement and layer
    motion into one resampling: each frame is interpolated once (sharp), and
    both frames sample the same continuous texture, which keeps the flow exact.
    """

    image: np.ndarray  # uint8, HxW or HxWx3
    to_image: np.ndarray  # 3x3 affine: layer-local pixel -> source pixel
    colour: np.ndarray  # 3 x (channels + 1) affine colour map, applied after sampling

    def sample(self, out_to_local: np.ndarray, width: int, height: int) -> np.ndarray:
        """Render the texture seen through `out_to_local` as float32 HxWx3 RGB."""
        pix = warp_image(self.image, self.to_image @ out_to_local, width, height)
        return cv2.transform(pix.astype(np.float32), self.colour.astype(np.float32))


def _grey_colour(rng: np.random.Generator) -> np.ndarray:
    """Tint a grey photo between two random colours (sometimes inverted)."""
    lo = rng.uniform(0.0, 110.0, 3)
    hi = rng.uniform(145.0, 255.0, 3)
    if rng.random() < 0.25:
        lo[:] = lo.mean()
        hi[:] = hi.mean()
    if rng.random() < 0.15:
        lo, hi = hi, lo
    return np.column_stack([(hi - lo) / 255.0, lo])


def _rgb_colour(rng: np.random.Generator) -> np.ndarray:
    """Hue/saturation/contrast/brightness jitter, sometimes channel swaps or negatives."""
    hue = rng.uniform(-np.pi, np.pi) if rng.random() < 0.4 else rng.normal(0.0, 0.2)
    m = hue_saturation_matrix(hue, rng.uniform(0.4, 1.4))
    if rng.random() < 0.15:
        m = m[rng.permutation(3)]
    contrast = rng.uniform(0.6, 1.3)
    offset = (1.0 - contrast) * 128.0 + rng.uniform(-30.0, 30.0)
    if rng.random() < 0.07:
        contrast, offset = -contrast, 255.0 - offset
    return np.column_stack([contrast * m, np.full(3, offset)])


def _low_contrast(rng: np.random.Generator, texture: Texture) -> Texture:
    """The texture faded to 5-40% of its contrast around a dark-to-middle grey level.

    Real scenes are full of dim, nearly flat surfaces (shadowed ground, cloth, night sky) whose
    motion must come from their faint texture and edges, not be borrowed from a bright neighbour.
    """
    gain = float(np.exp(rng.uniform(np.log(0.05), np.log(0.4))))
    level = rng.uniform(15.0, 140.0)
    linear, offset = texture.colour[:, :-1], texture.colour[:, -1]
    mean = linear.sum(axis=1) * 127.5 + offset  # the colour of a mid-grey source pixel
    colour = np.column_stack([gain * linear, gain * (offset - mean) + level])
    return Texture(texture.image, texture.to_image, colour)


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _read_photo(path: str) -> np.ndarray:
    from skimage import io

    img = io.imread(path)
    if img.ndim == 3 and img.shape[2] == 4:  # composite transparent logos over white
        alpha = img[..., 3:].astype(np.float32) / 255.0
        img = (img[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    frac = _PHOTO_CROP.get(os.path.basename(path))
    if frac is not None:
        h, w = img.shape[:2]
        dy, dx = int(h * (1 - frac) / 2), int(w * (1 - frac) / 2)
        img = img[dy : h - dy, dx : w - dx]
    return np.ascontiguousarray(img, dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple[tuple[np.ndarray, ...], ...]:
    """Image pyramids of the bundled photographs; empty if scikit-image is missing.

    Cached per process, so DataLoader workers forked after the first call share it.
    """
    try:
        import skimage.data
    except ImportError:
        warnings.warn(
            "scikit-image is not installed (pip install 'rafttool[train]'): synthetic "
            "training data falls back to procedural textures only, which transfers worse",
            stacklevel=2,
        )
        return ()
    root = os.path.dirname(skimage.data.__file__)
    pyramids = []
    for name in PHOTO_FILES:
        path = os.path.join(root, name)
        if not os.path.exists(path):
            continue
        levels = [_read_photo(path)]
        for _ in range(_PYRAMID_LEVELS - 1):
            levels.append(cv2.pyrDown(levels[-1]))
        pyramids.append(tuple(levels))
    return tuple(pyramids)


class TextureBank:
    """Draws random textures: photograph crops and procedural patterns.

    `kinds` is "photos", "procedural" or "photos+procedural"; without
    scikit-image every draw is procedural.
    """

    def __init__(self, kinds: str = "photos+procedural", photo_fraction: float = 0.6, low_contrast_prob: float = 0.0) -> None:
        parts = set(kinds.split("+"))
        if not parts <= {"photos", "procedural"}:
            raise ValueError(f"unknown texture kinds {kinds!r}")
        self.photos = load_photos() if "photos" in parts else ()
        if parts == {"photos"}:
            photo_fraction = 1.0
        elif parts == {"procedural"}:
            photo_fraction = 0.0
        self.photo_fraction = photo_fraction if self.photos else 0.0
        self.low_contrast_prob = low_contrast_prob

    def sample(self, rng: np.random.Generator, height: int, width: int, margin: int = 0) -> Texture:
        """A texture for the local region [0, width) x [0, height).

        `margin` pads procedural textures on every side so that content moving
        into view is fresh rather than a mirror image of what is already there.
        """
        if rng.random() < self.photo_fraction:
            texture = self._photo(rng, height, width)
        else:
            h, w = height + 2 * margin, width + 2 * margin
            funcs, weights = zip(*_PROCEDURAL)
            func = funcs[rng.choice(len(funcs), p=np.asarray(weights))]
            colour = np.column_stack([np.eye(3), np.zeros(3)])
            texture = Texture(func(rng, h, w), _translation(margin, margin), colour)
        if self.low_contrast_prob and rng.random() < self.low_contrast_prob:
            texture = _low_contrast(rng, texture)
        return texture

    def _photo(self, rng: np.random.Generator, height: int, width: int) -> Texture:
        pyramid = self.photos[int(rng.integers(len(self.photos)))]
        scale = float(np.exp(rng.uniform(np.log(0.3), np.log(3.0))))  # source px per local px
        # Pick the pyramid level that leaves at most ~1.4x minification: less aliasing.
        level = min(_PYRAMID_LEVELS - 1, max(0, int(np.round(np.log2(scale)))))
        src = pyramid[level]
        scale /= 2**level
        sh, sw = src.shape[:2]
        stretch = float(np.exp(rng.normal(0.0, 0.1)))
        flip = -1.0 if rng.random() < 0.5 else 1.0
        angle = rng.uniform(-np.pi, np.pi) if rng.random() < 0.5 else rng.normal(0.0, 0.15)
        to_image = (
            _translation(rng.uniform(0, sw), rng.uniform(0, sh))
            @ _rotation(angle)
            @ np.diag([flip * scale * stretch, scale / stretch, 1.0])
            @ _translation(-width / 2.0, -height / 2.0)
        )
        colour = _grey_colour(rng) if src.ndim == 2 else _rgb_colour(rng)
        return Texture(src, to_image, colour)
