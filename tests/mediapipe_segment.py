"""Run a .tflite in MediaPipe's ImageSegmenter (CPU), as a phone app would, and save what it returns.
Runs in the MediaPipe venv (.venv-mp), called by tests/test_export.py:

    .venv-mp/bin/python tests/mediapipe_segment.py MODEL.tflite IMAGE [IMAGE ...] --out DIR

Writes DIR/<image stem>_category.npy (uint8 (H, W) class indices at the image's size) for each image and
prints one JSON line {"labels": [...], "ms": [...]}. MediaPipe reads the image itself.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from mediapipe import Image
from mediapipe.tasks.python.core.base_options import BaseOptions
from mediapipe.tasks.python.vision.image_segmenter import ImageSegmenter, ImageSegmenterOptions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=args.model),
                                    output_category_mask=True, output_confidence_masks=False)
    times = []
    with ImageSegmenter.create_from_options(options) as segmenter:
        labels = list(segmenter.labels)
        for name in args.images:
            image = Image.create_from_file(name)
            start = time.perf_counter()
            result = segmenter.segment(image)
            times.append(round((time.perf_counter() - start) * 1000, 1))
            mask = np.array(result.category_mask.numpy_view(), np.uint8)
            np.save(out / f"{Path(name).stem}_category.npy", mask.reshape(mask.shape[:2]))
    print(json.dumps({"labels": labels, "ms": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
