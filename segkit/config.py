"""One flat training config. train.py's flags mirror its fields (`image_size` -> `--image-size`);
the run folder stores it as config.json, and evaluate.py / predict.py / --resume rebuild
everything from that file rather than from retyped flags.

`add_config_flags(parser)` makes one flag per field (defaulting to None, so that only typed flags
override), `config_from_args` applies them to a base config and `validate` checks every value.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from segkit import catalog
from segkit.errors import UserError


@dataclasses.dataclass
class TrainConfig:
    # data
    dataset: str = "sample"
    data_dir: str | None = None
    data_options: dict = dataclasses.field(default_factory=dict)  # loader options, e.g. {"aug": True} (voc)
    val_fraction: float | None = None  # hold out this share of a flat folder dataset for "val"
    train_split: str = "train"
    val_split: str = "val"
    image_size: tuple = (160, 224)  # training crop (H, W), multiples of 32
    val_image_size: tuple | None = None  # None: validate at native size, padded to a multiple of 32
    scale_min: float = 0.5  # random scale range for training crops
    scale_max: float = 2.0
    augment: str = "standard"  # photometric augmentation: standard | strong | colour
    paste_classes: str | None = None  # comma-separated class names (or indices) to copy-paste between images
    paste_prob: float = 0.5  # share of training images that receive them
    # model
    model: str = "mobilenetv2_pix2pix"
    encoder_weights: str = "none"  # none | imagenet | PATH
    init_from: str | None = None  # PATH to a .keras model or run folder: start from its weights (fine-tuning)
    alpha: float | None = None  # MobileNet width multiplier
    variant: str | None = None  # mobilenetv3_lraspp: large | small
    base_filters: int | None = None  # unet_tf width
    head_stride: int | None = None  # ddrnet: 8 (the paper's head) or 4 (the stem's features join the head)
    encoder_frozen: bool = False
    dropout: bool | None = None
    # loss
    loss: str = "cce"
    loss_alpha: float | None = None  # Tversky alpha (FP weight)
    loss_beta: float | None = None  # Tversky beta (FN weight)
    loss_lam: float | None = None  # weight of the region term in tversky_cce / dice_cce
    loss_gamma: float | None = None  # focal Tversky exponent
    class_weights: str | None = None  # None | auto | comma-separated floats
    distill_from: str | None = None  # PATH to a trained .keras model or run folder: the teacher
    distill_weight: float = 0.5  # weight of the distillation term
    distill_temperature: float = 1.0
    aux_weight: float = 0.0  # weight of the auxiliary head's loss (ddrnet; 0: no head)
    # optimisation
    epochs: int = 20
    batch_size: int = 8  # per replica
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine | constant | poly
    warmup_epochs: float = 0.0
    weight_decay: float = 1e-4
    ema: float = 0.0  # momentum of an exponential moving average of the weights (0: off), e.g. 0.999
    patience: int = 0  # early stopping on val mIoU; 0 = off
    steps_per_epoch: int | None = None  # None: one pass over the training set
    precision: str = "auto"  # auto | float32 | bfloat16 | float16
    jit_compile: bool = False
    strategy: str = "auto"  # auto | none | mirrored | multiworker
    seed: int = 0
    # outputs
    run_dir: str | None = None
    keep: str = "best"  # model.keras holds the best epoch by val mIoU, or the last one
    num_samples: int = 4  # validation images drawn in samples/epoch_NNN.png

    def model_options(self) -> dict:
        """Options passed to models.build_model: only those the user set."""
        options = {"alpha": self.alpha, "variant": self.variant, "base_filters": self.base_filters,
                   "head_stride": self.head_stride, "dropout": self.dropout}
        options = {k: v for k, v in options.items() if v is not None}
        if self.encoder_frozen:
            options["encoder_trainable"] = False
        return options

    def loader_options(self) -> dict:
        """Keyword options for data.load_dataset: --data-option values, and val_fraction when set."""
        options = dict(self.data_options)
        if self.val_fraction is not None:
            options["val_fraction"] = self.val_fraction
        return options

    def loss_params(self) -> dict:
        params = {"alpha": self.loss_alpha, "beta": self.loss_beta, "lam": self.loss_lam, "gamma": self.loss_gamma}
        return {k: v for k, v in params.items() if v is not None}

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in names})
        for key in ("image_size", "val_image_size"):
            if getattr(config, key) is not None:
                setattr(config, key, tuple(getattr(config, key)))
        return config


HELP = {
    "dataset": "dataset (its layout: README, Datasets)",
    "model": "model (docs/models.md)",
    "loss": "training loss (docs/training.md)",
    "variant": "the model's variant: " + "; ".join(f"{m} {' | '.join(v)}" for m, v in catalog.VARIANTS.items()),
    "alpha": "mobilenetv2_pix2pix / mobilenetv3_lraspp: the encoder's width multiplier (Keras' alpha)",
    "base_filters": "unet_tf: filters of its first level (doubled at each level down)",
    "dropout": "mobilenetv2_pix2pix: dropout in the decoder",
    "encoder_frozen": "keep the encoder's weights fixed (with --encoder-weights imagenet or a file)",
    "val_split": "split to validate on after each epoch",
    "scale_min": "smallest random scale of a training image before its crop",
    "scale_max": "largest random scale of a training image before its crop",
    "loss_alpha": "tversky losses: weight of false positives",
    "loss_beta": "tversky losses: weight of false negatives",
    "loss_lam": "tversky_cce / dice_cce: weight of the region term (the cross-entropy gets 1 - lam)",
    "loss_gamma": "focal_tversky: the exponent",
    "epochs": "training epochs",
    "lr": "peak learning rate of AdamW",
    "lr_schedule": "learning rate over the run after the warm-up",
    "warmup_epochs": "epochs of linear warm-up from 0 to --lr",
    "weight_decay": "AdamW's decoupled weight decay",
    "steps_per_epoch": "training steps per epoch (default: one pass over the training split)",
    "jit_compile": "compile the training step with XLA",
    "seed": "seed of the initial weights, the data order and the augmentation",
    "num_samples": "validation images drawn in samples/epoch_NNN.png after each epoch",
    "data_dir": "dataset root folder (not needed for sample and shapes)",
    "data_options": "a loader option KEY=VALUE, repeatable: aug=true (voc: SBD labels), remap=true / binary=false "
                    "(folder), holdout=SEQ (camvid: hold out a video sequence), cache=false; `segkit verify "
                    "--dataset NAME --help-options` lists a dataset's (default: none)",
    "val_fraction": "hold out every 1/F-th image of a flat folder dataset (images/ + masks/) as its val split",
    "image_size": "training crop H W, multiples of 32",
    "val_image_size": "resize validation images to H W (default: native size padded to a multiple of 32)",
    "encoder_weights": "none | imagenet | PATH to a weights file",
    "init_from": "start from the weights of this .keras model or run folder (same model and classes), "
                 "e.g. to fine-tune at a higher resolution; the optimizer and schedule start afresh",
    "class_weights": "auto (median frequency balancing over the training set) or comma-separated floats",
    "batch_size": "batch size per replica",
    "patience": "stop after this many epochs without a better val mIoU (0: never)",
    "precision": "auto picks mixed bfloat16 on CPUs with AVX512-BF16/AMX, mixed float16 on GPUs, else float32; "
                 "Keras' policy names are taken too",
    "strategy": "tf.distribute strategy: auto | none | mirrored | multiworker (cluster from TF_CONFIG)",
    "run_dir": "run folder (default runs/<dataset>-<model>-<time>)",
    "train_split": "split to train on; several joined by '+' train on all of them (e.g. train+val)",
    "head_stride": "ddrnet: 8 (the paper's head, default) or 4 (the stem's stride-4 features join the head: "
                   "finer masks for thin objects such as poles and signs)",
    "augment": "photometric augmentation of training crops: standard (brightness, contrast, saturation) or strong "
               "(also gamma, hue, blur and noise, wider ranges: for new streets and light) or colour (strong without the blur "
               "and noise)",
    "paste_classes": "copy-paste these classes (comma-separated names or indices, e.g. Pole,SignSymbol,Fence) "
                     "from one training crop into the next of its batch, at the same place (default: none)",
    "paste_prob": "share of training crops that receive the pasted classes, with --paste-classes",
    "distill_from": "distil from this trained model (.keras file or run folder, same classes): the loss adds its "
                    "per-pixel class distribution (segkit/training/distill.py)",
    "distill_weight": "weight of the distillation term, with --distill-from",
    "distill_temperature": "softmax temperature of the distillation term, with --distill-from",
    "aux_weight": "ddrnet: train with an auxiliary head on the high-resolution branch after the first fusion, "
                  "its loss weighted by this (the paper: 0.4); model.keras is the network without it (0: off)",
    "ema": "validate and save an exponential moving average of the weights with this momentum (0: off)",
    "keep": "best: model.keras is the epoch with the best val mIoU; last: the last epoch (no selection on val)",
}


# The values a field may take (the flags' choices in --help, and what `validate` accepts from a config file).
CHOICES = {
    "dataset": catalog.DATASETS, "model": tuple(sorted(catalog.MODELS)), "loss": catalog.LOSSES,
    "variant": tuple(dict.fromkeys(v for variants in catalog.VARIANTS.values() for v in variants)),
    "lr_schedule": catalog.LR_SCHEDULES, "precision": catalog.PRECISIONS, "strategy": catalog.STRATEGIES,
    "keep": catalog.KEEP, "augment": catalog.AUGMENTS, "head_stride": (8, 4),
}
# Bounds of numeric fields (inclusive): a value past them is a typo, not a plan.
BOUNDS = {"epochs": (1, 100_000), "batch_size": (1, 65_536), "steps_per_epoch": (1, 100_000_000),
          "patience": (0, 100_000), "num_samples": (0, 256), "seed": (0, 2 ** 31 - 1), "base_filters": (1, 4096),
          "paste_prob": (0, 1)}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, defaulting to None so that only typed flags override; fields with a
    fixed set of values list them (CHOICES)."""
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = HELP.get(field.name, "")
        if "(default" not in help_text:  # a help text may say what its default means instead
            help_text += f" (default: {field.default})"
        kind = field.type.split("|")[0].strip()
        if kind == "dict":
            flag = "--data-option"  # one KEY=VALUE per flag
            parser.add_argument(flag, dest=field.name, action="append", metavar="KEY=VALUE", default=None,
                                help=help_text)
        elif kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind == "tuple":
            parser.add_argument(flag, type=int, nargs=2, metavar=("H", "W"), default=None, help=help_text)
        else:
            parser.add_argument(flag, type={"int": int, "float": float}.get(kind, str), default=None,
                                choices=CHOICES.get(field.name), help=help_text)


def parse_data_options(values, dataset: str | None = None) -> dict:
    """{key: value} from --data-option KEY=VALUE strings; with `dataset`, each value read as the type its
    loader declares (data.coerce_options: strict booleans and numbers), else left a string."""
    from segkit.data import coerce_options, parse_option

    options = dict(parse_option(text) for text in values or ())
    return coerce_options(dataset, options) if dataset else options


def load_config_file(path) -> TrainConfig:
    """The TrainConfig in `path`: a run folder's config.json (its "config" entry), or a JSON / YAML file of
    TrainConfig fields. The stored run_dir is dropped (a new run gets its own folder); an unknown field or
    a value of the wrong kind is refused in one line."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"--config {str(path)!r} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"--config {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            import json

            values = json.loads(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        raise UserError(f"--config {str(path)!r} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: "
                        f"{str(exc).splitlines()[0]}") from None
    if isinstance(values, dict) and isinstance(values.get("config"), dict):
        values = values["config"]  # a run folder's config.json
    if not isinstance(values, dict):
        raise UserError(f"--config {str(path)!r} must hold a mapping of TrainConfig fields")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"--config {str(path)!r}: unknown field(s) {unknown}; fields are the flags' names with "
                        f"underscores (python train.py --help)")
    values = {k: v for k, v in values.items() if k != "run_dir"}
    try:
        config = TrainConfig.from_json(values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"--config {str(path)!r}: {exc}") from None
    try:
        validate(config)
    except UserError as exc:
        raise UserError(f"--config {str(path)!r}: {exc}") from None
    return config


def run_loader_options(run_config: dict, dataset: str | None = None, given=None) -> dict:
    """Loader options for reading a run's data again (evaluate, export): those the run trained with, when
    `dataset` is the run's own (or not given), overridden by `given` (--data-option strings or a dict)."""
    stored = {}
    if run_config and dataset in (None, run_config.get("dataset")):
        stored = TrainConfig.from_json(run_config).loader_options()
    extra = given if isinstance(given, dict) else parse_data_options(given)
    options = {**stored, **extra}
    name = dataset or (run_config or {}).get("dataset")
    if name and options:
        from segkit.data import coerce_options

        options = coerce_options(name, options)
    return options


def to_flags(config: TrainConfig) -> list:
    """The train.py flags that give `config`: one for each field that differs from TrainConfig().

    Example:
        >>> to_flags(TrainConfig(epochs=5, image_size=(64, 96)))
        ['--image-size', '64', '96', '--epochs', '5']
    """
    default, flags = TrainConfig(), []
    for field in dataclasses.fields(config):
        value, flag = getattr(config, field.name), "--" + field.name.replace("_", "-")
        if value == getattr(default, field.name):
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            for key, option in value.items():
                flags += ["--data-option", f"{key}={option}"]
        elif value is not None:
            flags += [flag, *map(str, value if isinstance(value, (tuple, list)) else [value])]
    return flags


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """`base` (or the defaults) with every flag the user gave applied, validated. A --dataset other than the
    base's drops the base's data_dir and loader options, which belong to its dataset."""
    config = dataclasses.replace(base) if base else TrainConfig()
    if base and getattr(args, "dataset", None) not in (None, base.dataset):
        config.data_dir, config.data_options, config.val_fraction = None, {}, None
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if field.name == "data_options" and value is not None:
            value = {**config.data_options, **parse_data_options(value)}
        if value is not None:
            setattr(config, field.name, tuple(value) if isinstance(value, list) else value)
    if config.data_options:
        from segkit.data import coerce_options

        config.data_options = coerce_options(config.dataset, config.data_options)
    validate(config)
    return config


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


_KINDS = {"int": int, "float": (int, float), "str": str, "bool": bool, "tuple": (tuple, list), "dict": dict}
_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "tuple": "a pair of integers", "dict": "a mapping"}


def validate(config: TrainConfig) -> None:
    """Check values early, naming the flag, what is allowed and what was given."""
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        # The kind first (a hand-edited config.json can hold anything): ints may stand for floats, not bools.
        kind = field.type.split("|")[0].strip()
        expected = _KINDS.get(kind)
        if expected and not (value is None and "None" in field.type):
            wrong = not isinstance(value, expected) or (kind in ("int", "float") and isinstance(value, bool))
            if kind == "tuple" and not wrong:
                wrong = any(not isinstance(v, int) or isinstance(v, bool) for v in value)
            if wrong:
                raise UserError(f"{_flag(field.name)} must be {_KIND_NAMES[kind]}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{_flag(field.name)} must be a finite number, got {value}")
    for key in ("image_size", "val_image_size"):
        size = getattr(config, key)
        if size is not None and (len(size) != 2 or any(not 0 < s <= 16_384 or s % catalog.MULTIPLE for s in size)):
            raise UserError(f"{_flag(key)} must be two positive multiples of {catalog.MULTIPLE} (at most 16384), "
                            f"got {list(size)}")
    for key, allowed in CHOICES.items():
        value = getattr(config, key)
        if value is not None and value not in allowed:
            raise UserError(f"{_flag(key)} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    for key, (low, high) in BOUNDS.items():
        value = getattr(config, key)
        if value is not None and not low <= value <= high:
            raise UserError(f"{_flag(key)} must be between {low} and {high}, got {value}")
    for key in ("weight_decay", "warmup_epochs"):
        if getattr(config, key) < 0:
            raise UserError(f"{_flag(key)} must be at least 0, got {getattr(config, key)}")
    if config.val_fraction is not None and not 0 < config.val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {config.val_fraction}")
    if not isinstance(config.data_options, dict):
        raise UserError(f"data_options must be a mapping of loader options, got {config.data_options!r}")
    if not 0 <= config.ema < 1:
        raise UserError(f"--ema must be in [0, 1) (0: off), got {config.ema}")
    if not config.distill_weight >= 0 or not config.distill_temperature > 0:
        raise UserError(f"--distill-weight must be >= 0 and --distill-temperature > 0, got {config.distill_weight}, "
                        f"{config.distill_temperature}")
    if config.distill_from and catalog.MODELS.get(config.model) and catalog.MODELS[config.model].loop != "keras":
        raise UserError(f"--distill-from works with the Keras models; {config.model} trains in its own loop")
    if config.aux_weight:
        if not config.aux_weight > 0:
            raise UserError(f"--aux-weight must be at least 0 (0: off), got {config.aux_weight}")
        spec = catalog.MODELS.get(config.model)
        if spec is not None and not spec.aux_layer:
            with_head = ", ".join(name for name, s in sorted(catalog.MODELS.items()) if s.aux_layer)
            raise UserError(f"--aux-weight: {config.model} has no auxiliary head; models with one: {with_head}")
        if config.distill_from:
            raise UserError("--aux-weight and --distill-from do not combine yet; use one of them")
    if not config.lr > 0:
        raise UserError(f"--lr must be positive, got {config.lr}")
    if not 0 < config.scale_min <= config.scale_max:
        raise UserError(f"--scale-min/--scale-max must satisfy 0 < min <= max, got {config.scale_min}, {config.scale_max}")
