"""The CamVid subset bundled in the package (segkit/data/sample/camvid), in the SegNet layout.

96 train and 32 val frames at half resolution (180x240), rebuilt by `python -m segkit.data.make_sample`.
Data: CamVid (Brostow, Fauqueur, Cipolla 2009), research use; see README.
"""

from pathlib import Path

from segkit.data import camvid

SAMPLE_DIR = Path(__file__).resolve().parent / "sample" / "camvid"


def load(data_dir=None, split: str = "train", cache: bool = True, holdout: str | None = None):
    ds, info = camvid.load(data_dir or SAMPLE_DIR, split, cache=cache, holdout=holdout)
    return ds, info.__class__(**{**info.__dict__, "name": "sample"})
