"""Unlimited on-the-fly training pairs with exact optical flow, for training RAFT without a dataset.

Each sample is a layered 2-D scene: a background plane and many independently
moving foreground layers (random shapes textured with photograph crops or
procedural patterns), composited back to front with a z-order fixed across the
two frames, so occlusions and disocclusions are exactly those of real layered
motion. Every layer k has a motion T_k (3x3, scene point in frame 1 -> frame 2)
and frame t is rendered by backward mapping: output pixel y of frame 2 shows the
layer's texture at P_k T_k^-1 G y, with P_k the layer placement and G the
output-to-scene zoom/stretch. The flow at a frame-1 pixel is then simply
G^-1 T_k G y - y for the top-most layer owning y, exact by construction.

What transfers to real data (Sintel, KITTI, FlyingChairs) is the mix: many
occluding layers, heavy-tailed displacements, forward-motion homographies,
real-photo textures, and photometric changes between the frames. Sample i is a
pure function of (seed, i), so runs are reproducible and DataLoader workers
simply receive different indices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from rafttool.train.textures import (
    Texture,
    TextureBank,
    hue_saturation_matrix,
    smooth_field,
    warp_image,
)

# Per-layer translation magnitude (before the random zoom), as a mixture of
# (probability, low, high) in pixels: mostly small like Sintel, with a long
# tail for fast motion. Within a bin the magnitude leans to the low end
# (low + (high - low) u^2), as real flow histograms decay.
_TRANSLATION_MIXTURE = ((0.6, 0.0, 10.0), (0.3, 10.0, 40.0), (0.1, 40.0, 150.0))
_SHAPES = ("polygon", "ellipse", "blob", "bar")
_SHAPE_PROBS = (0.35, 0.25, 0.25, 0.15)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class SyntheticFlowConfig:
    """Knobs of the generator; defaults are tuned for transfer to real footage."""

    height: int = 224
    width: int = 288
    min_layers: int = 4  # foreground layers per scene, drawn uniformly
    max_layers: int = 12
    displacement_scale: float = 1.0  # multiplies every sampled translation / zoom
    textures: str = "photos+procedural"  # or "photos" / "procedural"
    photo_fraction: float = 0.6
    low_contrast_prob: float = 0.0  # textures faded to 5-40% contrast, dark to mid grey
    driving_prob: float = 0.15  # ground plane + walls under forward motion (KITTI-like)
    slow_ego_prob: float = 0.0  # driving scenes whose camera barely moves (stopped in traffic)
    zoom_prob: float = 0.15  # background zoom with a mild homography
    relative_motion_prob: float = 0.5  # object motion composed with the background's
    static_object_prob: float = 0.15  # objects without motion of their own
    shading_prob: float = 0.5  # smooth shading attached to a layer
    scale_prob: float = 0.8  # random zoom/stretch of the whole pair
    log2_scale_range: tuple[float, float] = (-0.3, 0.5)
    log2_stretch: float = 0.2
    photometric: bool = True  # master switch for all effects below except erasing
    asymmetric_prob: float = 0.4  # colour/brightness differ between the frames
    illumination_prob: float = 0.25  # smooth gain field on frame 2
    noise_prob: float = 0.3
    blur_prob: float = 0.15
    motion_blur_prob: float = 0.2
    haze_prob: float = 0.15
    jpeg_prob: float = 0.1
    erase_prob: float = 0.5  # occluding rectangle in frame 2, flow unchanged
    # Objects with thin attached parts (chair legs, wheels' spokes, handlebars): a body plus
    # limbs a few pixels wide that move with it, so thin structures over a differently moving
    # background are common; 0 leaves older sample streams unchanged.
    limbed_prob: float = 0.0
    # Mirroring the finished pair keeps scene layouts from becoming a prior on where motion is
    # (driving scenes put fast flow at the bottom corners); 0 leaves older sample streams unchanged.
    h_flip_prob: float = 0.0
    v_flip_prob: float = 0.0
    # Static scenes seen by a camera that only translates sideways: every layer slides along one
    # direction by its disparity (inverse depth, affine over a slanted plane), nearer layers in
    # front and faster. Half of them are rectified stereo pairs (horizontal); 0 leaves older sample
    # streams unchanged.
    parallax_prob: float = 0.0
    max_flow: float = 400.0  # larger flow is marked invalid, as RAFT's loss does
    length: int = 1_000_000  # nominal epoch size; any index >= 0 is valid
    debug: bool = False  # also return per-frame layer-id maps


@dataclass(frozen=True)
class _Layer:
    texture: Texture
    alpha: np.ndarray  # HxWx2 float32 in layer-local pixels: coverage, shading
    scene_to_local: np.ndarray  # 3x3 placement P
    motion: np.ndarray  # 3x3 T: frame-1 scene point -> frame-2 scene point
    bounded: bool  # coverage is zero outside `alpha` (objects); else edges extend


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _about(centre: np.ndarray, linear: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """x -> centre + shift + linear (x - centre): motion whose non-translational part pivots on the object."""
    m = np.eye(3)
    m[:2, :2] = linear
    return _translation(*(centre + shift)) @ m @ _translation(*-centre)


def _random_linear(
    rng: np.random.Generator, rot: float, log_scale: float, aniso: float, shear: float, clip: float
) -> np.ndarray:
    """Rotation, scale, anisotropy and shear around identity; rotation has a heavier tail."""
    if rng.random() < 0.1:
        rot *= 4.0
    s = float(np.exp(np.clip(rng.normal(0.0, log_scale), -clip, clip)))
    a = float(np.exp(rng.normal(0.0, aniso)))
    upper = np.array([[s * a, rng.normal(0.0, shear)], [0.0, s / a]])
    return _rotation(rng.normal(0.0, rot))[:2, :2] @ upper


def _heavy_tailed_magnitude(rng: np.random.Generator, scale: float) -> float:
    probs, lows, highs = zip(*_TRANSLATION_MIXTURE)
    k = rng.choice(len(probs), p=np.asarray(probs))
    return float(lows[k] + (highs[k] - lows[k]) * rng.random() ** 2) * scale


def _heavy_tailed_shift(rng: np.random.Generator, scale: float) -> np.ndarray:
    mag = _heavy_tailed_magnitude(rng, scale)
    ang = rng.uniform(0.0, 2.0 * np.pi)
    return mag * np.array([np.cos(ang), np.sin(ang)])


def _sliding_plane(direction: np.ndarray, disparity: float, gradient: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Motion of a plane under sideways camera translation: p -> p + d(p) u, where the disparity
    d(p) = disparity + gradient . (p - centre) is affine because a plane's inverse depth is."""
    m = np.eye(3)
    m[:2, :2] += np.outer(direction, gradient)
    m[:2, 2] = direction * (disparity - gradient @ centre)
    return m


def _pivot_homography(pivot: tuple[float, float], px: float, py: float) -> np.ndarray:
    """Homography with perspective row (px, py, 1) about `pivot` (fixed point there)."""
    h = np.eye(3)
    h[2, 0], h[2, 1] = px, py
    return _translation(*pivot) @ h @ _translation(-pivot[0], -pivot[1])


def _polygon(rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """Star-shaped random polygon as fixed-point (shift=4) vertices for cv2.fillPoly."""
    n = int(rng.integers(3, 13))
    angles = np.cumsum(rng.uniform(0.3, 1.0, n))
    angles = angles / angles[-1] * 2.0 * np.pi + rng.uniform(0.0, 2.0 * np.pi)
    radii = radius * rng.uniform(0.35, 1.0, n)
    pts = centre + np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])
    return np.round(pts * 16.0).astype(np.int32)


def _shape(rng: np.random.Generator, size: float) -> np.ndarray:
    """Random anti-aliased coverage mask (float32 in [0, 1]) about `size` pixels across."""
    kind = _SHAPES[rng.choice(len(_SHAPES), p=np.asarray(_SHAPE_PROBS))]
    pad = 3
    if kind == "bar":  # thin rods and poles: long thin occluders
        thick = max(2.0, size * rng.uniform(0.03, 0.2))
        canvas = np.zeros((int(thick) + 2 * pad + 1, int(size) + 2 * pad + 1), np.uint8)
        rect = np.array([[pad, pad], [pad + size, pad], [pad + size, pad + thick], [pad, pad + thick]])
        cv2.fillPoly(canvas, [np.round(rect * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        return canvas.astype(np.float32) / 255.0
    n = int(size) + 2 * pad + 1
    canvas = np.zeros((n, n), np.uint8)
    centre = np.array([n / 2.0, n / 2.0])
    if kind == "blob":
        field = smooth_field(rng, n, n, size / rng.uniform(1.5, 4.0))
        r2 = ((np.arange(n) - centre[0]) ** 2)[None, :] + ((np.arange(n) - centre[1]) ** 2)[:, None]
        field *= np.clip(1.0 - r2 / (size / 2.0) ** 2, 0.0, 1.0)
        canvas[field > rng.uniform(0.2, 0.45)] = 255
        canvas = cv2.GaussianBlur(canvas, (3, 3), 0.7)
    else:  # union of 1-3 primitives: concave, multi-part silhouettes
        for _ in range(int(rng.integers(1, 4))):
            offset = rng.uniform(-0.22, 0.22, 2) * size
            radius = size / 2.0 - np.abs(offset).max()
            if kind == "polygon":
                cv2.fillPoly(canvas, [_polygon(rng, centre + offset, radius)], 255, cv2.LINE_AA, shift=4)
            else:
                axes = (max(1, int(radius)), max(1, int(radius * rng.uniform(0.25, 1.0))))
                c = tuple(int(v) for v in centre + offset)
                cv2.ellipse(canvas, c, axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    if rng.random() < 0.2:  # a hole: see-through regions inside objects
        c = tuple(int(v) for v in centre + rng.uniform(-0.2, 0.2, 2) * size)
        r = max(1, int(size * rng.uniform(0.05, 0.2)))
        axes = (r, max(1, int(r * rng.uniform(0.4, 1.0))))
        cv2.ellipse(canvas, c, axes, rng.uniform(0, 180), 0, 360, 0, -1, cv2.LINE_AA)
    if not canvas.any():
        cv2.circle(canvas, (n // 2, n // 2), max(1, int(size / 2)), 255, -1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def _fill_segment(canvas: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float) -> None:
    """Anti-aliased segment of sub-pixel `width`; cv2.line only takes integer thickness."""
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / max(float(np.linalg.norm(d)), 1e-6) * width / 2.0
    quad = np.array([p0 + normal, p1 + normal, p1 - normal, p0 - normal])
    cv2.fillPoly(canvas, [np.round(quad * 16.0).astype(np.int32)], 255, cv2.LINE_AA, shift=4)


def _limbed_shape(rng: np.random.Generator, size: float) -> np.ndarray:
    """Coverage mask of a compact body with 2-6 thin limbs, about `size` pixels across.

    Limbs are either near-parallel legs leaving one side of the body (chairs, tables) or
    spokes at random angles (bikes, figures); a third of the limbs bend once at a knee.
    """
    pad = 3
    n = int(size) + 2 * pad + 1
    canvas = np.zeros((n, n), np.uint8)
    centre = np.array([n / 2.0, n / 2.0])
    body = size * rng.uniform(0.12, 0.28)
    if rng.random() < 0.5:
        cv2.fillPoly(canvas, [_polygon(rng, centre, body)], 255, cv2.LINE_AA, shift=4)
    else:
        axes = (max(1, int(body)), max(1, int(body * rng.uniform(0.3, 1.0))))
        cv2.ellipse(canvas, tuple(int(v) for v in centre), axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    width = max(1.2, size * rng.uniform(0.012, 0.05))
    legs = rng.random() < 0.5
    heading = rng.uniform(0.0, 2.0 * np.pi)
    along, across = np.array([np.cos(heading), np.sin(heading)]), np.array([-np.sin(heading), np.cos(heading)])
    for _ in range(int(rng.integers(2, 7))):
        if legs:  # roots spread along the body's side, tips all pointing one way
            angle = heading + rng.normal(0.0, 0.15)
            start = centre + across * rng.uniform(-body, body) + 0.5 * body * along
            _fill_segment(canvas, centre, start, width)  # a rail from the body, so no leg floats free
        else:
            angle = rng.uniform(0.0, 2.0 * np.pi)
            start = centre.copy()
        length = rng.uniform(0.25, 0.48) * size
        direction = np.array([np.cos(angle), np.sin(angle)])
        end = start + direction * length
        if rng.random() < 1.0 / 3.0:  # a knee: the limb's outer part turns
            knee = start + direction * length * rng.uniform(0.4, 0.7)
            turn = angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.2)
            end = knee + np.array([np.cos(turn), np.sin(turn)]) * float(np.linalg.norm(end - knee))
            _fill_segment(canvas, start, knee, width)
            start = knee
        _fill_segment(canvas, start, end, width)
    return canvas.astype(np.float32) / 255.0


def _motion_blur_kernel(length: float, direction: np.ndarray) -> np.ndarray:
    """Normalised line kernel along `direction`, `length` pixels long."""
    k = 2 * int(np.ceil(length / 2.0)) + 1
    kernel = np.zeros((k, k), np.float32)
    d = direction / max(float(np.linalg.norm(direction)), 1e-6) * length / 2.0
    c = k // 2
    p0 = (int(round((c - d[0]) * 16)), int(round((c - d[1]) * 16)))
    p1 = (int(round((c + d[0]) * 16)), int(round((c + d[1]) * 16)))
    cv2.line(kernel, p0, p1, 1.0, 1, cv2.LINE_AA, shift=4)
    return kernel / max(float(kernel.sum()), 1e-6)


class SyntheticFlowDataset(Dataset):
    """Map-style dataset of synthetic pairs; item i is a pure function of (seed, i).

    Items are dicts of torch tensors: `image1`, `image2` (float32 3xHxW, integer
    values in [0, 255]), `flow` (float32 2xHxW, frame 1 -> frame 2, x then y),
    `valid` (float32 HxW, 1 unless |flow| >= max_flow) and, with `debug`,
    `layers1` / `layers2` (int64 HxW, top-most layer id per pixel, 0 = background).
    Samples are already random, so iterate sequentially (no shuffle needed).
    """

    def __init__(self, config: SyntheticFlowConfig | None = None, seed: int = 0) -> None:
        self.config = config or SyntheticFlowConfig()
        self.seed = seed
        self.textures = TextureBank(self.config.textures, self.config.photo_fraction, self.config.low_contrast_prob)
        h, w = self.config.height, self.config.width
        self._ys, self._xs = np.mgrid[0:h, 0:w].astype(np.float32)

    def __len__(self) -> int:
        return self.config.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.generate(index)
        out = {
            "image1": torch.from_numpy(np.ascontiguousarray(sample["image1"].transpose(2, 0, 1))),
            "image2": torch.from_numpy(np.ascontiguousarray(sample["image2"].transpose(2, 0, 1))),
            "flow": torch.from_numpy(np.ascontiguousarray(sample["flow"].transpose(2, 0, 1))),
            "valid": torch.from_numpy(sample["valid"]),
        }
        if self.config.debug:
            out["layers1"] = torch.from_numpy(sample["layers1"].astype(np.int64))
            out["layers2"] = torch.from_numpy(sample["layers2"].astype(np.int64))
        return out

    def generate(self, index: int) -> dict[str, np.ndarray]:
        """One sample as HxWxC numpy arrays (same keys as items)."""
        if index < 0:
            raise IndexError(index)
        cfg = self.config
        rng = np.random.default_rng([self.seed, int(index)])
        h, w = cfg.height, cfg.width
        sx = sy = 1.0
        if rng.random() < cfg.scale_prob:
            s = 2.0 ** rng.uniform(*cfg.log2_scale_range)
            st = 2.0 ** rng.uniform(-cfg.log2_stretch, cfg.log2_stretch)
            sx, sy = s * np.sqrt(st), s / np.sqrt(st)
        out_to_scene = np.diag([1.0 / sx, 1.0 / sy, 1.0])
        layers = self._scene(rng, h / sy, w / sx)

        maps1 = [layer.scene_to_local @ out_to_scene for layer in layers]
        maps2 = [layer.scene_to_local @ np.linalg.inv(layer.motion) @ out_to_scene for layer in layers]
        img1, ids1 = self._render(layers, maps1)
        img2, ids2 = self._render(layers, maps2)
        flow = self._flow(layers, ids1, out_to_scene)

        if cfg.photometric:
            img1, img2 = self._photometric(rng, img1, img2, flow)
        img1 = np.clip(np.rint(img1), 0.0, 255.0)
        img2 = np.clip(np.rint(img2), 0.0, 255.0)
        if rng.random() < cfg.erase_prob:
            self._erase(rng, img2)
        mag = cv2.magnitude(flow[..., 0], flow[..., 1])
        sample = {
            "image1": img1.astype(np.float32),
            "image2": img2.astype(np.float32),
            "flow": flow,
            "valid": (mag < cfg.max_flow).astype(np.float32),
        }
        if cfg.debug:
            sample["layers1"], sample["layers2"] = ids1, ids2
        for axis, prob in ((1, cfg.h_flip_prob), (0, cfg.v_flip_prob)):
            if prob > 0 and rng.random() < prob:
                _mirror(sample, axis)
        return sample

    # --- scene -------------------------------------------------------------

    def _scene(self, rng: np.random.Generator, hs: float, ws: float) -> list[_Layer]:
        cfg = self.config
        if cfg.parallax_prob > 0 and rng.random() < cfg.parallax_prob:  # old streams unchanged at 0
            return self._parallax(rng, hs, ws)
        if rng.random() < cfg.driving_prob:
            layers = self._driving(rng, hs, ws)
        else:
            layers = [self._background(rng, hs, ws)]
        base = layers[0].motion
        n = int(rng.integers(cfg.min_layers, cfg.max_layers + 1))
        layers += [self._object(rng, hs, ws, base) for _ in range(n)]
        return layers

    def _parallax(self, rng: np.random.Generator, hs: float, ws: float) -> list[_Layer]:
        """A static layered scene under sideways camera motion (a stereo pair when horizontal).

        Each layer is a slanted plane sliding along one shared direction by its disparity;
        layers are drawn back to front in order of disparity, so the nearer a layer, the faster
        it moves and the more it occludes, as parallax has it.
        """
        cfg = self.config
        ds = cfg.displacement_scale
        angle = rng.choice([0.0, np.pi]) if rng.random() < 0.5 else rng.uniform(0.0, 2.0 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        far = _heavy_tailed_magnitude(rng, ds)
        n = int(rng.integers(cfg.min_layers, cfg.max_layers + 1))
        nearer = np.sort(far + np.array([_heavy_tailed_magnitude(rng, ds) for _ in range(n)]))

        def slant(disparity: float, extent: float) -> np.ndarray:
            """Disparity change per pixel, about a third of the plane's own disparity across it at
            most, and a stretch of at most 30% (steeper planes are seen edge-on)."""
            gradient = rng.normal(0.0, 0.15 * (disparity + 1.0) / extent, 2)
            return gradient * min(1.0, 0.3 / (np.linalg.norm(gradient) + 1e-12))

        centre = np.array([ws, hs]) / 2.0
        background = _sliding_plane(direction, far, slant(far, max(hs, ws)), centre)
        coverage = np.ones((int(np.ceil(hs)) + 1, int(np.ceil(ws)) + 1), np.float32)
        layers = [self._plane(rng, coverage, background)]

        def sliding(disparity: float) -> Callable[[np.ndarray, float], np.ndarray]:
            return lambda at, size: _sliding_plane(direction, disparity, slant(disparity, size), at)

        layers += [self._object(rng, hs, ws, background, motion=sliding(d)) for d in nearer]
        return layers

    def _plane(self, rng: np.random.Generator, coverage: np.ndarray, motion: np.ndarray) -> _Layer:
        """A scene-sized layer (local = scene coordinates) whose coverage extends past its edges."""
        hi, wi = coverage.shape
        texture = self.textures.sample(rng, hi, wi, margin=int(0.3 * max(hi, wi)))
        return _Layer(texture, self._with_shading(rng, coverage), np.eye(3), motion, bounded=False)

    def _with_shading(self, rng: np.random.Generator, coverage: np.ndarray) -> np.ndarray:
        """Stack coverage with a shading field that moves with the layer (so it is not a flow error)."""
        h, w = coverage.shape
        shade = np.ones_like(coverage)
        if rng.random() < self.config.shading_prob:
            lo, hi = rng.uniform(0.55, 0.95), rng.uniform(1.0, 1.25)
            shade = lo + (hi - lo) * smooth_field(rng, h, w, rng.uniform(0.3, 1.0) * max(h, w))
        return np.dstack([coverage, shade]).astype(np.float32)

    def _background(self, rng: np.random.Generator, hs: float, ws: float) -> _Layer:
        """Background under a smooth global motion: small affine, or a zoom with mild perspective."""
        ds = self.config.displacement_scale
        centre = rng.uniform((0.0, 0.0), (ws, hs))
        if rng.random() < self.config.zoom_prob:
            zoom = 1.0 + rng.uniform(0.03, 0.35) * ds
            zoom = 1.0 / zoom if rng.random() < 0.35 else zoom
            lin = zoom * _rotation(rng.normal(0.0, 0.02))[:2, :2]
            persp = _pivot_homography(
                tuple(centre), rng.uniform(-0.15, 0.15) / ws, rng.uniform(-0.15, 0.15) / hs
            )
            motion = _about(centre, lin, 0.3 * _heavy_tailed_shift(rng, ds)) @ persp
        else:
            lin = _random_linear(rng, rot=0.015, log_scale=0.025, aniso=0.015, shear=0.01, clip=0.1)
            motion = _about(centre, lin, _heavy_tailed_shift(rng, ds))
        coverage = np.ones((int(np.ceil(hs)) + 1, int(np.ceil(ws)) + 1), np.float32)
        return self._plane(rng, coverage, motion)

    def _driving(self, rng: np.random.Generator, hs: float, ws: float) -> list[_Layer]:
        """Forward camera motion: a far plane, a ground plane and side walls, each a homography.

        A plane under forward translation moves by the homography
        p -> p / (1 - a . p) about the focus of expansion (p relative to it),
        so flow grows towards the image periphery as in KITTI.
        """
        ds = self.config.displacement_scale
        # Forward speed, as the zoom it causes: a stopped camera leaves the road near-static
        # around independently moving objects, which a model must not fill with expansion.
        slow = self.config.slow_ego_prob > 0 and rng.random() < self.config.slow_ego_prob  # old streams unchanged at 0
        ground_speed, wall_speed = ((0.0, 0.03), (0.0, 0.03)) if slow else ((0.05, 0.8), (0.1, 0.9))
        foe = (ws * rng.uniform(0.35, 0.65), hs * rng.uniform(0.3, 0.55))
        camera = _translation(rng.normal(0.0, 4.0) * ds, rng.normal(0.0, 1.5) * ds) @ _rotation(
            rng.normal(0.0, 0.005)
        )
        hi, wi = int(np.ceil(hs)) + 1, int(np.ceil(ws)) + 1
        far = _about(np.array(foe), (1.0 + rng.uniform(0.0, 0.06) * ds) * np.eye(2), np.zeros(2))
        layers = [self._plane(rng, np.ones((hi, wi), np.float32), camera @ far)]

        rows = np.arange(hi, dtype=np.float32)[:, None]
        horizon = foe[1] + rng.uniform(0.0, 0.1) * hs
        ground = np.broadcast_to(np.clip(rows - horizon + 0.5, 0.0, 1.0), (hi, wi)).copy()
        factor = min(3.0, 1.0 + rng.uniform(*ground_speed) * ds)  # zoom at the bottom row
        a = (1.0 - 1.0 / factor) / (hs - foe[1])
        layers.append(self._plane(rng, ground, camera @ _pivot_homography(foe, 0.0, -a)))

        for side in (-1.0, 1.0):
            if rng.random() >= 0.6:
                continue
            edge = foe[0] if side < 0 else ws - foe[0]  # distance from the FOE to the image side
            x_near = foe[0] + side * edge * rng.uniform(0.15, 0.6)
            top, bottom = rng.uniform(0.05, 0.3) * hs, rng.uniform(0.0, 0.15) * hs
            far_x = foe[0] + side * 3.0 * ws
            grow = (far_x - foe[0]) / (x_near - foe[0])
            quad = np.array(
                [
                    [x_near, foe[1] - top],
                    [x_near, foe[1] + bottom],
                    [far_x, foe[1] + bottom * grow],
                    [far_x, foe[1] - top * grow],
                ]
            )
            canvas = np.zeros((hi, wi), np.uint8)
            cv2.fillPoly(canvas, [np.round(quad * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
            factor = min(1.9, 1.0 + rng.uniform(*wall_speed) * ds)  # zoom at the image side
            b = (1.0 - 1.0 / factor) / (side * edge)
            wall = camera @ _pivot_homography(foe, -b, 0.0)
            layers.append(self._plane(rng, canvas.astype(np.float32) / 255.0, wall))
        return layers

    def _object(
        self,
        rng: np.random.Generator,
        hs: float,
        ws: float,
        base: np.ndarray,
        motion: Callable[[np.ndarray, float], np.ndarray] | None = None,
    ) -> _Layer:
        """A textured random shape with its own affine motion, optionally riding on the background's;
        ``motion(centre, size)``, where given, sets the motion instead."""
        cfg = self.config
        size = max(6.0, float(np.exp(rng.uniform(np.log(0.08), np.log(1.0)))) * min(hs, ws))
        limbed = cfg.limbed_prob > 0 and rng.random() < cfg.limbed_prob  # old streams unchanged at 0
        coverage = _limbed_shape(rng, size) if limbed else _shape(rng, size)
        h, w = coverage.shape
        texture = self.textures.sample(rng, h, w)
        centre = rng.uniform((-0.15 * ws, -0.15 * hs), (1.15 * ws, 1.15 * hs))
        spin = _rotation(rng.uniform(-np.pi, np.pi))
        placement = _translation(w / 2.0, h / 2.0) @ spin @ _translation(*-centre)
        if motion is not None:
            return _Layer(texture, self._with_shading(rng, coverage), placement, motion(centre, size), bounded=True)
        if rng.random() < cfg.static_object_prob:
            own = np.eye(3)
        else:
            lin = _random_linear(rng, rot=0.07, log_scale=0.06, aniso=0.03, shear=0.03, clip=0.25)
            own = _about(centre, lin, _heavy_tailed_shift(rng, cfg.displacement_scale))
        if rng.random() < cfg.relative_motion_prob:
            own = base @ own
        return _Layer(texture, self._with_shading(rng, coverage), placement, own, bounded=True)

    # --- rendering ---------------------------------------------------------

    def _roi(self, out_to_local: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """Output box that can see a bounded layer: its local rectangle mapped to the output."""
        h, w = self.config.height, self.config.width
        lh, lw = shape[:2]
        corners = np.array([[-1.0, -1.0, 1.0], [lw, -1.0, 1.0], [-1.0, lh, 1.0], [lw, lh, 1.0]]).T
        p = np.linalg.inv(out_to_local) @ corners
        if np.any(p[2] <= 1e-9):
            return 0, 0, w, h
        x, y = p[0] / p[2], p[1] / p[2]
        x0, y0 = max(0, int(np.floor(x.min())) - 1), max(0, int(np.floor(y.min())) - 1)
        x1, y1 = min(w, int(np.ceil(x.max())) + 2), min(h, int(np.ceil(y.max())) + 2)
        return x0, y0, x1, y1

    def _render(self, layers: list[_Layer], maps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Composite layers back to front; ids are the top-most layer with coverage >= 1/2."""
        h, w = self.config.height, self.config.width
        img = np.zeros((h, w, 3), np.float32)
        ids = np.zeros((h, w), np.int16)
        for k, (layer, m) in enumerate(zip(layers, maps)):
            x0, y0, x1, y1 = self._roi(m, layer.alpha.shape) if layer.bounded else (0, 0, w, h)
            if x1 <= x0 or y1 <= y0:
                continue
            m_roi = m @ _translation(x0, y0)
            border = cv2.BORDER_CONSTANT if layer.bounded else cv2.BORDER_REPLICATE
            alpha = warp_image(layer.alpha, m_roi, x1 - x0, y1 - y0, border)
            tex = layer.texture.sample(m_roi, x1 - x0, y1 - y0)
            tex *= alpha[..., 1:2]
            if k == 0:  # the background covers everything
                img[:] = tex
            else:
                sub = img[y0:y1, x0:x1]
                sub += alpha[..., 0:1] * (tex - sub)
            ids[y0:y1, x0:x1][alpha[..., 0] >= 0.5] = k
        return img, ids

    def _flow(self, layers: list[_Layer], ids: np.ndarray, out_to_scene: np.ndarray) -> np.ndarray:
        """Exact flow G^-1 T_k G y - y of the layer owning each frame-1 pixel."""
        scene_to_out = np.linalg.inv(out_to_scene)
        mats = np.stack([(scene_to_out @ layer.motion @ out_to_scene).ravel() for layer in layers])
        m = mats.T.astype(np.float32)[:, ids]  # 9xHxW: each pixel's motion matrix
        x, y = self._xs, self._ys
        den = m[6] * x + m[7] * y + m[8]
        fx = (m[0] * x + m[1] * y + m[2]) / den - x
        fy = (m[3] * x + m[4] * y + m[5]) / den - y
        return np.dstack([fx, fy])

    # --- photometric -------------------------------------------------------

    def _photometric(
        self, rng: np.random.Generator, img1: np.ndarray, img2: np.ndarray, flow: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Camera and atmosphere effects; they change the frames, never the flow."""
        cfg = self.config
        h, w = cfg.height, cfg.width
        if rng.random() < cfg.motion_blur_prob:  # blur along the dominant motion
            dominant = np.median(flow[::4, ::4].reshape(-1, 2), axis=0)
            speed = float(np.linalg.norm(dominant))
            blurred = []
            for img in (img1, img2):
                length = min(25.0, speed * rng.uniform(0.15, 0.6))  # exposure fraction
                if length >= 1.5:
                    img = cv2.filter2D(img, -1, _motion_blur_kernel(length, dominant))
                blurred.append(img)
            img1, img2 = blurred
        if rng.random() < cfg.haze_prob:  # fog veil with a smooth density
            density = rng.uniform(0.1, 0.6) * smooth_field(rng, h, w, rng.uniform(40.0, 200.0))
            colour = np.clip(rng.uniform(170.0, 255.0) + rng.normal(0.0, 8.0, 3), 0.0, 255.0)
            colour = colour.astype(np.float32)
            d1 = density[..., None]
            d2 = np.clip(d1 * rng.uniform(0.9, 1.1), 0.0, 1.0)
            img1 = img1 + d1 * (colour - img1)
            img2 = img2 + d2 * (colour - img2)
        params1 = self._jitter_params(rng)
        params2 = params1
        if rng.random() < cfg.asymmetric_prob:
            b, c, s, hue, g = params1
            params2 = (
                b * rng.uniform(0.8, 1.25),
                c * rng.uniform(0.85, 1.15),
                s * rng.uniform(0.9, 1.1),
                hue + rng.uniform(-0.08, 0.08),
                g * rng.uniform(0.9, 1.1),
            )
        img1 = self._colour_jitter(img1, params1)
        img2 = self._colour_jitter(img2, params2)
        if rng.random() < cfg.illumination_prob:  # lighting change between the frames
            lo, hi = rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.25)
            img2 = img2 * (lo + (hi - lo) * smooth_field(rng, h, w, rng.uniform(60.0, 250.0)))[..., None]
        if rng.random() < cfg.blur_prob:  # defocus
            sigma = rng.uniform(0.4, 1.5)
            img1 = cv2.GaussianBlur(img1, (0, 0), sigma)
            img2 = cv2.GaussianBlur(img2, (0, 0), sigma * rng.uniform(0.8, 1.2))
        if rng.random() < cfg.noise_prob:
            img1 = img1 + rng.uniform(1.0, 7.0) * rng.standard_normal(img1.shape, dtype=np.float32)
            img2 = img2 + rng.uniform(1.0, 7.0) * rng.standard_normal(img2.shape, dtype=np.float32)
        if rng.random() < cfg.jpeg_prob:
            img1, img2 = (self._jpeg(img, int(rng.integers(30, 91))) for img in (img1, img2))
        return img1, img2

    @staticmethod
    def _jitter_params(rng: np.random.Generator) -> tuple[float, float, float, float, float]:
        """Brightness, contrast, saturation, hue (radians), gamma: ColorJitter-like ranges."""
        saturation = 0.0 if rng.random() < 0.05 else rng.uniform(0.6, 1.4)
        return (
            rng.uniform(0.6, 1.4),
            rng.uniform(0.6, 1.4),
            saturation,
            rng.uniform(-0.6, 0.6),
            float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))),
        )

    @staticmethod
    def _colour_jitter(img: np.ndarray, params: tuple[float, float, float, float, float]) -> np.ndarray:
        """Apply all linear jitters as one 3x4 colour transform, then gamma."""
        b, c, s, hue, gamma = params
        mean_luma = float(np.asarray(cv2.mean(img)[:3]) @ _LUMA)
        m = np.column_stack([b * c * hue_saturation_matrix(hue, s), np.full(3, b * (1.0 - c) * mean_luma)])
        out = cv2.transform(img, m.astype(np.float32))
        np.clip(out, 0.0, 255.0, out=out)
        if abs(gamma - 1.0) > 1e-3:
            out = 255.0 * (out / 255.0) ** np.float32(gamma)
        return out

    @staticmethod
    def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
        bgr = np.clip(np.rint(img[..., ::-1]), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) if ok else img

    def _erase(self, rng: np.random.Generator, img2: np.ndarray) -> None:
        """Fill 1-2 rectangles of frame 2 with its mean colour: occlusions the flow ignores."""
        h, w = self.config.height, self.config.width
        mean = np.rint(np.asarray(cv2.mean(img2)[:3], np.float32))
        for _ in range(int(rng.integers(1, 3))):
            bw, bh = int(w * rng.uniform(0.1, 0.3)), int(h * rng.uniform(0.1, 0.3))
            x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            img2[y0 : y0 + bh, x0 : x0 + bw] = mean


def _mirror(sample: dict[str, np.ndarray], axis: int) -> None:
    """Flip every map of a sample along `axis` (1: left-right, 0: up-down); that flow component changes sign."""
    for key, value in sample.items():
        sample[key] = np.ascontiguousarray(np.flip(value, axis))
    sample["flow"][..., 1 - axis] *= -1.0


def displacement_stats(
    dataset: SyntheticFlowDataset, n: int, percentiles: tuple[float, ...] = (50.0, 90.0, 99.0)
) -> dict[str, float]:
    """Percentiles of |flow| over the first `n` samples (every 4th pixel), to check the target range."""
    mags = []
    for i in range(n):
        flow = dataset.generate(i)["flow"][::4, ::4]
        mags.append(np.sqrt((flow**2).sum(-1)).ravel())
    mag = np.concatenate(mags)
    stats = {f"p{p:g}": float(np.percentile(mag, p)) for p in percentiles}
    stats["mean"] = float(mag.mean())
    stats["max"] = float(mag.max())
    for t in (10.0, 40.0, 100.0):
        stats[f"frac_gt_{t:g}"] = float((mag > t).mean())
    return stats
