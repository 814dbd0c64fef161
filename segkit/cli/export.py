"""Export a trained model for serving (SavedModel), for mobile (TFLite), for ONNX runtimes or for shipping
(.keras), checked against the source.

    segkit export --model runs/sample-mobilenetv2_pix2pix-... --format savedmodel --out exported/sample
    segkit export --model runs/sample-mobilenetv2_pix2pix-... --format tflite --out exported/sample.tflite
    segkit export --model RUN --format tflite --quantize fp16 --out exported/sample_fp16.tflite
    segkit export --model RUN --format tflite --quantize int8 --image-size 180 240 --out exported/sample_int8.tflite
    segkit export --model RUN --format onnx --out exported/sample.onnx
    segkit export --model RUN_A RUN_B --format keras --out exported/ensemble.keras   (an ensemble)

--model: a run folder, a .keras file, or for unet_tf a run folder or its saved_model/ folder. The work
is segkit.exporters.export_model; what each format holds and the check's tolerances are described there.
"""

from __future__ import annotations

import argparse

from segkit import catalog, cli


def build_parser() -> argparse.ArgumentParser:
    names = {"keras": "keras", "savedmodel": "savedmodel", "onnx": "onnx", "none": "tflite float32",
             "fp16": "tflite fp16", "dynamic": "tflite dynamic", "int8": "tflite int8"}
    tolerances = "; ".join(f"{names[k]}: max |dlogit| <= {d} L, mask agreement >= {a}"
                           for k, (d, a) in catalog.EXPORT_TOLERANCES.items())
    parser = cli.parser("export", __doc__, epilog=f"The export fails beyond these tolerances, "
                                                  f"L = max(1, max |logit|): {tolerances}.")
    parser.add_argument("--model", required=True, nargs="+",
                        help="run folder, .keras file, or unet_tf saved_model/ folder (for --format web also a segkit "
                             ".tflite file); two or more run folders or .keras files: their ensemble, the mean of "
                             "their class probabilities")
    parser.add_argument("--format", required=True, choices=catalog.EXPORT_FORMATS,
                        help="keras: a float32 .keras without optimizer state, for shipping; web: a static site that "
                             "runs the model in any browser (MediaPipe Tasks for Web)")
    parser.add_argument("--quantize", default=None, choices=catalog.QUANTIZE,
                        help="tflite and web: dynamic = int8 weights, int8 = int8 weights and activations "
                             "(default: none for tflite, int8 for web)")
    parser.add_argument("--out", required=True,
                        help="output: a folder for savedmodel and web, else a .tflite / .onnx / .keras file")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="tflite input size, any H W; the camera's frame size is best (e.g. 360 480 for CamVid) "
                             "(default: the run's training image size)")
    parser.add_argument("--dataset", choices=catalog.DATASETS, help="dataset for calibration and the check "
                                                                    "(default: the run's)")
    parser.add_argument("--data-dir", help="dataset folder (default: the run's)")
    cli.add_data_option_flag(parser)
    parser.add_argument("--calibration-images", type=cli.bounded_int(1, 100_000), default=64,
                        help="int8: training images the activation ranges are calibrated on (default 64)")
    parser.add_argument("--check-images", type=cli.bounded_int(1, 100_000), default=4,
                        help="validation images the export is checked on (default 4)")
    parser.add_argument("--recipe", help="for files shipped to others: a line naming how the model was made; the "
                                         "sidecar then holds it instead of this machine's folders (run folder, "
                                         "--init-from, --distill-from, source keep only their names; an absolute data "
                                         "folder is written relative to this one)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.image_size is not None and any(not 0 < s <= 16_384 for s in args.image_size):
        from segkit.errors import UserError

        raise UserError(f"--image-size must be two sizes from 1 to 16384, got {args.image_size}")
    from segkit import exporters

    model = args.model[0] if len(args.model) == 1 else args.model
    result = exporters.export_model(model, args.format, args.out, quantize=args.quantize,
                                    image_size=args.image_size and tuple(args.image_size), dataset=args.dataset,
                                    data_dir=args.data_dir, data_options=args.data_option,
                                    calibration_count=args.calibration_images,
                                    check_count=args.check_images, recipe=args.recipe)
    if result.note:
        print(result.note)
    parity = result.parity
    print(f"check on {result.checked_on}: max |logit difference| {parity.max_difference:.3g} "
          f"(logits up to {parity.max_logit:.3g}), mask agreement {parity.agreement:.4f}")
    print(f"wrote {result.out} ({result.size_bytes / 1e6:.1f} MB)")
    return 0
