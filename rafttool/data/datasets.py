"""Find image pairs with ground-truth flow in the standard datasets' official on-disk layouts.

Users bring datasets as they downloaded them, so every finder reads the benchmark's own folder
structure unchanged and accepts a root that is the dataset, its ``training`` folder, or a folder
holding it a few levels up. Finders only build path records (``FlowSample``); pixels are read
lazily by ``FlowSample.load`` so listing a large dataset stays cheap.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rafttool.io.flowfile import read_flow
from rafttool.io.images import read_image
from rafttool.io.kitti import read_kitti_flow

# How far below the given root we look for a dataset: root/datasets/Sintel/training is 3 levels.
SEARCH_DEPTH = 3

# Families whose GT comes from LiDAR/stereo and covers only some pixels: resizing must not blur it.
SPARSE_FAMILIES = frozenset({"kitti", "hd1k"})


class DatasetError(ValueError):
    """A dataset folder or list file we cannot use; the message is one line for the CLI."""


@dataclass(frozen=True)
class FlowSample:
    """One image pair and the paths of its ground truth; nothing is read until ``load``."""

    image1_path: Path
    image2_path: Path
    flow_path: Path | None
    family: str
    split_name: str
    sequence: str
    occlusion_path: Path | None = None
    invalid_path: Path | None = None
    noc_flow_path: Path | None = None

    @property
    def sparse(self) -> bool:
        """True when the GT is sparse (KITTI-style), so augmentation must resize it by scattering."""
        return self.family in SPARSE_FAMILIES

    def load(self) -> dict[str, np.ndarray]:
        """Read the pair and its GT.

        Returns ``image1``, ``image2`` (uint8 RGB), ``flow`` (float32 HxWx2, NaN where unknown; all
        NaN without GT) and ``valid`` (bool HxW: finite GT, KITTI valid flag, outside Sintel's
        invalid mask), plus ``occluded`` (Sintel) and ``noc_valid`` (KITTI) when those files exist.
        """
        image1 = read_image(self.image1_path)
        image2 = read_image(self.image2_path)
        shape = image1.shape[:2]
        if image2.shape[:2] != shape:
            raise DatasetError(
                f"images differ in size: '{self.image1_path}' is {_size(shape)}, "
                f"'{self.image2_path}' is {_size(image2.shape)}"
            )
        if self.flow_path is None:
            flow = np.full((*shape, 2), np.nan, dtype=np.float32)
        else:
            flow = read_flow(self.flow_path)
            if flow.shape[:2] != shape:
                raise DatasetError(
                    f"flow '{self.flow_path}' is {_size(flow.shape)} but its images are {_size(shape)}"
                )
        valid = np.isfinite(flow).all(axis=2)
        data = {"image1": image1, "image2": image2, "flow": flow, "valid": valid}
        if self.invalid_path is not None:
            valid &= ~self._mask(self.invalid_path, shape)
        if self.occlusion_path is not None:
            data["occluded"] = self._mask(self.occlusion_path, shape)
        if self.noc_flow_path is not None:
            _, noc_valid = read_kitti_flow(self.noc_flow_path)
            if noc_valid.shape != shape:
                raise DatasetError(
                    f"flow '{self.noc_flow_path}' is {_size(noc_valid.shape)} but its images are {_size(shape)}"
                )
            data["noc_valid"] = noc_valid
        return data

    @staticmethod
    def _mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
        """Read a binary mask PNG (255 = set), checking it matches the images."""
        mask = read_image(path)[..., 0] > 127
        if mask.shape != shape:
            raise DatasetError(f"mask '{path}' is {_size(mask.shape)} but its images are {_size(shape)}")
        return mask


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


# --------------------------------------------------------------------------- directory search


def _subdirs(directory: Path) -> list[Path]:
    """Visible subdirectories, sorted; unreadable folders count as empty rather than failing the search."""
    try:
        with os.scandir(directory) as entries:
            return sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError:
        return []


def _walk_dirs(root: Path, depth: int = SEARCH_DEPTH) -> Iterator[Path]:
    """Yield ``root`` and its subfolders down to ``depth`` levels, breadth first.

    Only the top ``depth`` levels are listed and entry types come from ``scandir``, so a dataset's
    thousands of frames are never stat'ed one by one.
    """
    level = [root]
    for current in range(depth + 1):
        yield from level
        if current < depth:
            level = [child for parent in level for child in _subdirs(parent)]


def _dataset_roots(root: Path, is_root: Callable[[Path], bool]) -> list[Path]:
    """Folders under ``root`` (itself included) that ``is_root`` recognises, without symlinked duplicates."""
    found: dict[str, Path] = {}
    for directory in _walk_dirs(Path(root)):
        if is_root(directory):
            found.setdefault(os.path.realpath(directory), directory)
    return list(found.values())


def _names(directory: Path) -> set[str]:
    """File names in one folder, read once so pairing needs no per-file stat."""
    try:
        with os.scandir(directory) as entries:
            return {e.name for e in entries}
    except OSError:
        return set()


def _sorted(samples: list[FlowSample]) -> list[FlowSample]:
    return sorted(samples, key=lambda s: (s.split_name, s.sequence, str(s.image1_path)))


def _next_name(number: str, template: str) -> str:
    """The file name of the next frame, keeping the zero padding of ``number``."""
    return template.format(f"{int(number) + 1:0{len(number)}d}")


def _numbered_pairs(
    gt_dir: Path,
    gt_name: re.Pattern[str],
    frames_dir: Path,
    frame_name: str,
    *,
    family: str,
    split_name: str,
    sequence: str,
) -> Iterator[FlowSample]:
    """Frames N -> N+1 of ``frames_dir`` for each GT file in ``gt_dir`` that ``gt_name`` matches (group 1 is N).

    ``frame_name`` is a frame's file name with ``{}`` for N. A pair is kept only when both frames
    exist, because the data we get often has neighbouring frames without GT or GT without frames.
    """
    frames = _names(frames_dir)
    for flow_name in sorted(_names(gt_dir)):
        match = gt_name.fullmatch(flow_name)
        if match is None:
            continue
        number = match.group(1)
        first, second = frame_name.format(number), _next_name(number, frame_name)
        if first in frames and second in frames:
            yield FlowSample(
                image1_path=frames_dir / first,
                image2_path=frames_dir / second,
                flow_path=gt_dir / flow_name,
                family=family,
                split_name=split_name,
                sequence=sequence,
            )


# --------------------------------------------------------------------------- MPI-Sintel

_SINTEL_FLOW = re.compile(r"frame_(\d+)\.flo")
SINTEL_PASSES = ("clean", "final")


def _is_sintel_training(directory: Path) -> bool:
    return (directory / "flow").is_dir() and any((directory / p).is_dir() for p in SINTEL_PASSES)


def find_sintel(root: str | os.PathLike[str]) -> list[FlowSample]:
    """MPI-Sintel ``training/{clean,final}/SEQ/frame_XXXX.png`` with ``training/flow/SEQ/frame_XXXX.flo``.

    The flow of frame XXXX points to frame XXXX+1 and is shared by both passes; a pair is kept only
    when its GT and both frames exist in that pass, because the data we get often has a sequence
    in one pass only or neighbouring frames without GT.
    """
    samples = []
    for training in _dataset_roots(Path(root), _is_sintel_training):
        for sequence_dir in _subdirs(training / "flow"):
            sequence = sequence_dir.name
            occlusions_dir, invalid_dir = training / "occlusions" / sequence, training / "invalid" / sequence
            occlusions, invalids = _names(occlusions_dir), _names(invalid_dir)
            for pass_name in SINTEL_PASSES:
                frames_dir = training / pass_name / sequence
                pairs = _numbered_pairs(
                    sequence_dir, _SINTEL_FLOW, frames_dir, "frame_{}.png",
                    family="sintel", split_name=f"sintel-{pass_name}", sequence=sequence,
                )
                for sample in pairs:
                    first = sample.image1_path.name
                    samples.append(
                        replace(
                            sample,
                            occlusion_path=occlusions_dir / first if first in occlusions else None,
                            invalid_path=invalid_dir / first if first in invalids else None,
                        )
                    )
    return _sorted(samples)


# --------------------------------------------------------------------------- KITTI 2012 / 2015

_KITTI_GT = re.compile(r"(\d+)_10\.png")
# Image folders in order of preference, per benchmark; the folder names are what tell 2012 from 2015.
KITTI_IMAGE_DIRS = {"kitti-2012": ("colored_0", "image_0"), "kitti-2015": ("image_2",)}


def _is_kitti_training(directory: Path) -> bool:
    has_gt = (directory / "flow_occ").is_dir() or (directory / "flow_noc").is_dir()
    return has_gt and any((directory / d).is_dir() for dirs in KITTI_IMAGE_DIRS.values() for d in dirs)


def find_kitti(root: str | os.PathLike[str]) -> list[FlowSample]:
    """KITTI 2012 (``colored_0``/``image_0``) and 2015 (``image_2``) flow training pairs NNNNNN_10 -> _11.

    ``flow_occ`` (all pixels with GT) is the main GT and ``flow_noc`` the non-occluded subset; a frame
    with only ``flow_noc`` still has valid GT, so it is kept with that as its main GT. For 2012 the
    colour images are preferred per frame, falling back to grayscale.
    """
    samples = []
    for training in _dataset_roots(Path(root), _is_kitti_training):
        occ, noc = _names(training / "flow_occ"), _names(training / "flow_noc")
        gt_names = sorted(n for n in occ | noc if _KITTI_GT.fullmatch(n))
        for split_name, image_dirs in KITTI_IMAGE_DIRS.items():
            listings = [(training / d, _names(training / d)) for d in image_dirs if (training / d).is_dir()]
            for gt_name in gt_names:
                frame = _KITTI_GT.fullmatch(gt_name).group(1)
                second = f"{frame}_11.png"
                image_dir = next((d for d, names in listings if gt_name in names and second in names), None)
                if image_dir is None:
                    continue
                samples.append(
                    FlowSample(
                        image1_path=image_dir / gt_name,
                        image2_path=image_dir / second,
                        flow_path=training / ("flow_occ" if gt_name in occ else "flow_noc") / gt_name,
                        family="kitti",
                        split_name=split_name,
                        sequence=frame,
                        noc_flow_path=training / "flow_noc" / gt_name if gt_name in noc else None,
                    )
                )
    return _sorted(samples)


# --------------------------------------------------------------------------- FlyingChairs

# (flow suffix, first image suffix, second image suffix): the official release and the examples.
CHAIRS_LAYOUTS = (("_flow.flo", "_img1.ppm", "_img2.ppm"), ("-gt.flo", "-img0.ppm", "-img1.ppm"))


def _is_chairs_dir(directory: Path) -> bool:
    """True if the folder holds a Chairs flow file; stops at the first one, as ``data/`` holds 68k files."""
    try:
        with os.scandir(directory) as entries:
            return any(e.name.endswith(flow) for e in entries for flow, _, _ in CHAIRS_LAYOUTS)
    except OSError:
        return False


def find_chairs(root: str | os.PathLike[str]) -> list[FlowSample]:
    """FlyingChairs pairs: ``NNNNN_img1.ppm``/``_img2.ppm``/``_flow.flo`` or ``NNNNNNN-img0/img1.ppm``/``-gt.flo``."""
    samples = []
    for directory in _dataset_roots(Path(root), _is_chairs_dir):
        names = _names(directory)
        for name in sorted(names):
            for flow_suffix, first_suffix, second_suffix in CHAIRS_LAYOUTS:
                if not name.endswith(flow_suffix):
                    continue
                stem = name[: -len(flow_suffix)]
                first, second = stem + first_suffix, stem + second_suffix
                if first in names and second in names:
                    samples.append(
                        FlowSample(
                            image1_path=directory / first,
                            image2_path=directory / second,
                            flow_path=directory / name,
                            family="chairs",
                            split_name="chairs",
                            sequence=stem,
                        )
                    )
    return _sorted(samples)


# --------------------------------------------------------------------------- FlyingThings3D

_THINGS_FLOW = re.compile(r"OpticalFlowIntoFuture_(\d+)_L\.pfm")
THINGS_PASSES = ("clean", "final")


def _is_things_root(directory: Path) -> bool:
    return (directory / "optical_flow").is_dir() and any(
        (directory / f"frames_{p}pass").is_dir() for p in THINGS_PASSES
    )


def find_things(root: str | os.PathLike[str]) -> list[FlowSample]:
    """FlyingThings3D left-view forward pairs, ``frames_{clean,final}pass/{TRAIN,TEST}/L/NNNN/left/NNNN.png``.

    GT is ``optical_flow/SUBSET/L/NNNN/into_future/left/OpticalFlowIntoFuture_NNNN_L.pfm``; the
    sequence is ``SUBSET/L/NNNN`` so callers can keep TRAIN and TEST apart.
    """
    samples = []
    for things in _dataset_roots(Path(root), _is_things_root):
        for flow_dir in sorted((things / "optical_flow").glob("*/*/*/into_future/left")):
            sequence = flow_dir.relative_to(things / "optical_flow").parents[1].as_posix()
            for pass_name in THINGS_PASSES:
                frames_dir = things / f"frames_{pass_name}pass" / sequence / "left"
                samples += _numbered_pairs(
                    flow_dir, _THINGS_FLOW, frames_dir, "{}.png",
                    family="things", split_name=f"things-{pass_name}", sequence=sequence,
                )
    return _sorted(samples)


# --------------------------------------------------------------------------- HD1K

_HD1K_GT = re.compile(r"(\d+)_(\d+)\.png")


def _is_hd1k_root(directory: Path) -> bool:
    return (directory / "hd1k_input" / "image_2").is_dir() and (directory / "hd1k_flow_gt" / "flow_occ").is_dir()


def find_hd1k(root: str | os.PathLike[str]) -> list[FlowSample]:
    """HD1K ``hd1k_input/image_2/SSSSSS_FFFF.png`` pairs F -> F+1 with KITTI-format GT in ``hd1k_flow_gt/flow_occ``."""
    samples = []
    for hd1k in _dataset_roots(Path(root), _is_hd1k_root):
        image_dir, gt_dir = hd1k / "hd1k_input" / "image_2", hd1k / "hd1k_flow_gt" / "flow_occ"
        frames = _names(image_dir)
        for gt_name in sorted(_names(gt_dir)):
            match = _HD1K_GT.fullmatch(gt_name)
            if match is None:
                continue
            sequence, number = match.groups()
            second = _next_name(number, f"{sequence}_{{}}.png")
            if gt_name in frames and second in frames:
                samples.append(
                    FlowSample(
                        image1_path=image_dir / gt_name,
                        image2_path=image_dir / second,
                        flow_path=gt_dir / gt_name,
                        family="hd1k",
                        split_name="hd1k",
                        sequence=sequence,
                    )
                )
    return _sorted(samples)


# --------------------------------------------------------------------------- Middlebury

_MIDDLEBURY_GT = re.compile(r"flow(\d+)\.flo")


def _is_middlebury_root(directory: Path) -> bool:
    return (directory / "other-data").is_dir() and (directory / "other-gt-flow").is_dir()


def find_middlebury(root: str | os.PathLike[str]) -> list[FlowSample]:
    """Middlebury ``other-data/SEQ/frameNN.png`` -> ``frameNN+1.png`` with ``other-gt-flow/SEQ/flowNN.flo``."""
    samples = []
    for middlebury in _dataset_roots(Path(root), _is_middlebury_root):
        for gt_dir in _subdirs(middlebury / "other-gt-flow"):
            frames_dir = middlebury / "other-data" / gt_dir.name
            samples += _numbered_pairs(
                gt_dir, _MIDDLEBURY_GT, frames_dir, "frame{}.png",
                family="middlebury", split_name="middlebury", sequence=gt_dir.name,
            )
    return _sorted(samples)


# --------------------------------------------------------------------------- list files


def find_list(path: str | os.PathLike[str]) -> list[FlowSample]:
    """Pairs from a text file of ``img1 img2 [gt]`` lines, in file order.

    Paths are relative to the list file's folder (absolute ones are kept); blank lines and ``#``
    comments are ignored. A missing file is an error naming the line, since the user listed it
    explicitly and silently dropping it would skew an evaluation.
    """
    list_path = Path(path)
    try:
        text = list_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read list file '{list_path}': {exc}") from None
    samples = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = re.split(r"\s#", line, maxsplit=1)[0].split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{list_path}:{line_number}"
        if len(fields) not in (2, 3):
            raise DatasetError(f"{where}: expected 'img1 img2 [gt]', got {len(fields)} fields")
        paths = [list_path.parent / field for field in fields]
        for field, resolved in zip(fields, paths):
            if not resolved.is_file():
                raise DatasetError(f"{where}: '{field}' not found (paths are relative to the list file)")
        samples.append(
            FlowSample(
                image1_path=paths[0],
                image2_path=paths[1],
                flow_path=paths[2] if len(paths) == 3 else None,
                family="list",
                split_name="list",
                sequence=Path(fields[0]).parent.as_posix(),
            )
        )
    return samples


# --------------------------------------------------------------------------- detection

FINDERS: dict[str, Callable[[str | os.PathLike[str]], list[FlowSample]]] = {
    "sintel": find_sintel,
    "kitti": find_kitti,
    "chairs": find_chairs,
    "things": find_things,
    "hd1k": find_hd1k,
    "middlebury": find_middlebury,
}

_EXPECTED = (
    "expected MPI-Sintel training/{clean,final}/SEQ/frame_NNNN.png + training/flow/SEQ/frame_NNNN.flo, "
    "KITTI training/{colored_0,image_0,image_2}/NNNNNN_10.png + training/flow_occ/NNNNNN_10.png, "
    "FlyingChairs NNNNN_img1.ppm + NNNNN_flow.flo (or NNNNNNN-img0.ppm + NNNNNNN-gt.flo), "
    "FlyingThings3D frames_cleanpass/ + optical_flow/, HD1K hd1k_input/ + hd1k_flow_gt/, "
    f"Middlebury other-data/ + other-gt-flow/ (searched {SEARCH_DEPTH} levels deep), "
    "or a list file of 'img1 img2 [gt]' lines"
)


def detect_datasets(root: str | os.PathLike[str]) -> dict[str, list[FlowSample]]:
    """Every dataset found at or below ``root`` (or in a list file), keyed by split name.

    Keys are e.g. 'sintel-clean', 'sintel-final', 'kitti-2012', 'chairs', in a stable order;
    splits without any usable pair are left out. Raises ``DatasetError`` when nothing is found.
    """
    root = Path(root)
    if root.is_file():
        samples = find_list(root)
        if not samples:
            raise DatasetError(f"list file '{root}' has no 'img1 img2 [gt]' lines")
    elif root.is_dir():
        samples = [sample for finder in FINDERS.values() for sample in finder(root)]
    else:
        raise DatasetError(f"no such file or directory: '{root}'")
    splits: dict[str, list[FlowSample]] = {}
    for sample in samples:
        splits.setdefault(sample.split_name, []).append(sample)
    if not splits:
        raise DatasetError(f"no optical-flow dataset found in {root}: {_EXPECTED}")
    return splits
