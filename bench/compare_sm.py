"""Our resnet34_unet against segmentation_models' Unet("resnet34"), side by side in one invocation.

    python -m bench.compare_sm                        # 224x224, batch 8, 12 classes, Dice loss, 2 rounds
    python -m bench.compare_sm --rounds 3 --steps 30 --precision float32
    python -m bench.compare_sm --sm-precision mixed_bfloat16   # both sides in mixed bf16: equal precision

segmentation_models 1.0.1 runs on tf-keras (Keras 2), which must not share a venv with Keras 3, so it has
its own, `.venv-sm`, made once with `python -m bench.compare_sm --setup`, i.e.

    python3 -m venv .venv-sm && .venv-sm/bin/pip install segmentation_models==1.0.1 "tf-keras==2.21.*" \\
        tensorflow-cpu==2.21.0

(it is not in requirements.txt). Runs alternate, ours, theirs, ours, theirs, ..., each in its own
process, so that a change in the machine's load over the minutes hits both alike.

Both sides train on the same batches: the `shapes` scenes, cached, through data.pipeline.prepare
(random scale, crop, flip, jitter), 12 output classes, Dice loss, Adam(W), an IoU metric every step.
Ours: `python -m bench.train_speed --model resnet34_unet --loss dice` (train.py's code path, --precision
as given; auto = mixed bfloat16 on this kind of CPU). Theirs: `sm.Unet("resnet34", encoder_weights=None,
classes=12, activation="softmax")`, compiled with Adam, `sm.losses.DiceLoss()` on one-hot masks and
`sm.metrics.IOUScore()`, in float32 (its default; tf-keras on CPU) or, with `--sm-precision mixed_bfloat16`,
under tf-keras' `mixed_bfloat16` global policy (equal precision with ours), timed the same way: model.fit
with steps_per_epoch after warm-up steps, steady images/s between the first and last timed batch;
inference with predict_on_batch. Reported: each run, the mean of each side, and the ratio ours / theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import machine

ROOT = Path(__file__).resolve().parents[1]
SM_VENV = ROOT / ".venv-sm"
SM_PACKAGES = ["segmentation_models==1.0.1", "tf-keras==2.21.*", "tensorflow-cpu==2.21.0"]
RUN_TIMEOUT = 1800  # seconds for one side's run


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--image-size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-classes", type=int, default=12)
    parser.add_argument("--precision", default="auto", help="ours: as train.py's --precision")
    parser.add_argument("--sm-precision", default="float32", choices=("float32", "mixed_bfloat16"),
                        help="theirs: tf-keras' global policy (float32 is segmentation_models' default)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (and inference batches) per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs (ours, theirs)")
    parser.add_argument("--sm-python", default=str(SM_VENV / "bin" / "python"), help="python of the sm venv")
    parser.add_argument("--setup", action="store_true", help="create .venv-sm and install segmentation_models")
    parser.add_argument("--sm-worker", action="store_true", help=argparse.SUPPRESS)  # one run, inside .venv-sm
    args = parser.parse_args(argv)
    for flag in ("batch_size", "num_classes", "steps", "warmup", "rounds"):
        if getattr(args, flag) < 1:
            sys.exit(f"error: --{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    return args


# ---------------------------------------------------------------------------------------------------------
# Theirs: runs inside .venv-sm (tf-keras); imports only TensorFlow, segmentation_models and our data package.


def sm_worker(args) -> dict:
    os.environ["SM_FRAMEWORK"] = "tf.keras"
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras = tf-keras (Keras 2), which segmentation_models needs
    import segmentation_models as sm
    import tensorflow as tf
    import tf_keras

    from segkit.data import shapes
    from segkit.data.pipeline import prepare

    keras = tf.keras
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(args.sm_precision)
    h, w = args.image_size
    b, classes = args.batch_size, args.num_classes
    raw, _ = shapes.load(count=64, image_size=(h, w))
    raw = raw.cache()
    for _ in raw:
        pass
    batches = prepare(raw, training=True, batch_size=b, image_size=(h, w), seed=0).repeat()
    # sm's losses take one-hot masks; ignored pixels (255, from padding) become all-zero rows.
    batches = batches.map(lambda x, y: (x, tf.one_hot(y, classes)), num_parallel_calls=tf.data.AUTOTUNE)

    model = sm.Unet("resnet34", encoder_weights=None, classes=classes, activation="softmax")
    model.compile(keras.optimizers.Adam(1e-3), loss=sm.losses.DiceLoss(), metrics=[sm.metrics.IOUScore()])

    class BatchTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    model.fit(batches, epochs=1, steps_per_epoch=args.warmup, verbose=0)
    timer = BatchTimes()
    start = time.perf_counter()
    model.fit(batches, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - start
    steady = (args.steps - 1) * b / (timer.ends[-1] - timer.ends[0]) if args.steps > 1 else float("nan")
    images = next(iter(batches))[0]
    for _ in range(2):
        model.predict_on_batch(images)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        model.predict_on_batch(images)
        times.append(time.perf_counter() - t)
    return {"model": "sm.Unet(resnet34)", "parameters": model.count_params(), "policy": args.sm_precision,
            "train_images_per_sec": round(steady, 2), "train_wall_images_per_sec": round(args.steps * b / wall, 2),
            "infer_images_per_sec": round(b / statistics.median(times), 2), "keras": f"tf-keras {tf_keras.__version__}",
            "segmentation_models": sm.__version__, "tensorflow": tf.__version__}


# ---------------------------------------------------------------------------------------------------------
# The driver: runs in the main venv and starts both sides as subprocesses.


def setup_sm_venv(python: str) -> None:
    """Create .venv-sm (a venv made from inside a venv is based on the same interpreter) and install there."""
    subprocess.run([python, "-m", "venv", str(SM_VENV)], check=True)
    (SM_VENV / ".gitignore").write_text("*\n")  # keep the venv out of git without touching the repo's .gitignore
    subprocess.run([str(SM_VENV / "bin" / "pip"), "install", "--disable-pip-version-check", *SM_PACKAGES],
                   check=True)


def run_side(command, env_extra) -> dict:
    """Run one side; its last output line is the JSON result."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", **env_extra}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        sys.exit(f"error: {' '.join(command[:4])} ... failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.sm_worker:
        print(json.dumps(sm_worker(args)))
        return 0
    if args.setup:
        setup_sm_venv(sys.executable)
    if not Path(args.sm_python).is_file():
        sys.exit(f"error: no segmentation_models venv at {args.sm_python}; make it with "
                 f"`python -m bench.compare_sm --setup` (see this file's docstring)")
    h, w = args.image_size
    common = ["--image-size", str(h), str(w), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
              "--warmup", str(args.warmup)]
    ours = [sys.executable, "-m", "bench.train_speed", "--model", "resnet34_unet", "--loss", "dice",
            "--num-classes", str(args.num_classes), "--precision", args.precision, "--json", *common]
    theirs = [args.sm_python, str(Path(__file__).resolve()), "--sm-worker", "--num-classes", str(args.num_classes),
              "--sm-precision", args.sm_precision, *common]
    print(f"{args.rounds} rounds of (ours, theirs); {h}x{w}, batch {args.batch_size}, {args.num_classes} classes, "
          f"Dice loss, {args.steps} timed steps after {args.warmup}; load average at start "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    runs = {"ours": [], "theirs": []}
    for round_ in range(1, args.rounds + 1):
        for side, command, env in (("ours", ours, {}), ("theirs", theirs, {"SM_FRAMEWORK": "tf.keras",
                                                                         "TF_USE_LEGACY_KERAS": "1"})):
            load = os.getloadavg()[0]
            result = run_side(command, env)
            runs[side].append(result)
            print(f"round {round_} {side:6s} train {result['train_images_per_sec']:6.2f} images/s "
                  f"(wall {result['train_wall_images_per_sec']:6.2f}), infer {result['infer_images_per_sec']:6.2f} "
                  f"images/s, {result['policy']}, load {load:.2f}", flush=True)
    mean = {side: {key: statistics.mean(r[key] for r in results)
                   for key in ("train_images_per_sec", "infer_images_per_sec")}
            for side, results in runs.items()}
    print(f"ours   ({runs['ours'][0]['policy']}, {runs['ours'][0]['parameters']:,} parameters): "
          f"train {mean['ours']['train_images_per_sec']:.2f}, infer {mean['ours']['infer_images_per_sec']:.2f} "
          f"images/s")
    print(f"theirs ({args.sm_precision}, {runs['theirs'][0]['parameters']:,} parameters): "
          f"train {mean['theirs']['train_images_per_sec']:.2f}, infer {mean['theirs']['infer_images_per_sec']:.2f} "
          f"images/s")
    ratio = {key: mean["ours"][key] / mean["theirs"][key] for key in mean["ours"]}
    print(f"ratio ours/theirs: train {ratio['train_images_per_sec']:.2f}x, infer {ratio['infer_images_per_sec']:.2f}x; "
          f"load average at end {os.getloadavg()[0]:.2f}")
    print(machine.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
