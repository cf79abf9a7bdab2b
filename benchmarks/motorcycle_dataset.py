"""Write scikit-image's real stereo pair (Middlebury 'motorcycle') as a list-file dataset.

The pair ships with scikit-image, so every machine can evaluate on real camera data with GT:

    python benchmarks/motorcycle_dataset.py /tmp/motorcycle
    raft eval /tmp/motorcycle/pairs.txt --method raft --method dis --markdown
"""

from __future__ import annotations

import sys
from pathlib import Path

from rafttool.data.stereo import motorcycle_pair
from rafttool.io import write_flow
from rafttool.io.images import write_image


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pair = motorcycle_pair()
    write_image(folder / "motorcycle_left.png", pair["image1"])
    write_image(folder / "motorcycle_right.png", pair["image2"])
    write_flow(folder / "motorcycle_gt.flo", pair["flow"])
    (folder / "pairs.txt").write_text("motorcycle_left.png motorcycle_right.png motorcycle_gt.flo\n")
    print(folder / "pairs.txt")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "motorcycle"))
