"""The sidecar: what travels with an exported model file (class names and colours, the run's settings, how it
was exported), in `<stem>.json` beside it, and how the two stay a pair.

A sidecar holds one entry per model file of that stem (`m.tflite` and `m.onnx` share `m.json` without mixing
their classes), each keyed by the file's name and carrying the SHA-256 of the file it describes:

    {"segkit_sidecar": 2, "models": {"m.tflite": [{"sha256": "...", "dataset_info": {...}, ...}]}}

`read` returns the entry whose hash is the file's, so a model is never paired with another model's sidecar.
`write_pair` replaces a model file and its entry so that a kill at any moment leaves the old pair or the new
one: the new file is written under a temporary name, the sidecar gains the new entry beside the old one (one
atomic write), the file is renamed into place (one rename), and the old entry is dropped. Between those steps
the sidecar describes both versions and the hash picks the one on disk.

A sidecar of the first format (one flat object: config, dataset_info, export) is still read, for the files
exported before; `check_classes` holds every sidecar against its model's output channels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from segkit import fileio
from segkit.errors import UserError

FORMAT = 2


def path_for(model: Path) -> Path:
    """The sidecar of the model file `model`: `<stem>.json` beside it."""
    return Path(model).with_suffix(".json")


def digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load(sidecar: Path) -> dict:
    try:
        values = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"sidecar {sidecar} is not readable JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(values, dict):
        raise UserError(f"sidecar {sidecar} does not hold a JSON object")
    return values


def is_ours(sidecar: Path) -> bool:
    """Whether `sidecar` is a file segkit's export wrote (so an export may rewrite it)."""
    try:
        values = json.loads(Path(sidecar).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(values, dict) and ("export" in values or values.get("segkit_sidecar") == FORMAT)


def read(model: Path) -> dict | None:
    """The sidecar entry describing the model file `model` (None: no sidecar). A sidecar that describes only
    other files of that stem, or another version of this one, is refused in one line."""
    model = Path(model)
    sidecar = path_for(model)
    if not sidecar.is_file():
        return None
    values = _load(sidecar)
    if values.get("segkit_sidecar") != FORMAT:
        return values  # the first format: one flat entry (checked against the model's outputs on load)
    entries = (values.get("models") or {}).get(model.name)
    if not entries:
        raise UserError(f"{sidecar} describes {', '.join(sorted(values.get('models') or {})) or 'no file'}, not "
                        f"{model.name}; export {model.name} again")
    actual = digest(model)
    for entry in entries:
        if entry.get("sha256") == actual:
            return entry
    raise UserError(f"{model} is not the file {sidecar} describes (its SHA-256 differs: the file was replaced "
                    "after export); export it again")


def _entries(sidecar: Path) -> dict:
    if not sidecar.is_file():
        return {}
    values = _load(sidecar)
    return dict(values.get("models") or {}) if values.get("segkit_sidecar") == FORMAT else {}


def _write(sidecar: Path, models: dict) -> None:
    fileio.write_json(sidecar, {"segkit_sidecar": FORMAT, "models": models})


class Pair:
    """What `write_pair` yields: write the model file to `tmp`, and set `payload` (the sidecar entry)."""

    def __init__(self, tmp: Path):
        self.tmp, self.payload = tmp, None


@contextlib.contextmanager
def write_pair(model: Path):
    """Yield a Pair: write the model file to `pair.tmp` and set `pair.payload`. When the block ends without
    error, the file and its sidecar entry (the payload plus the file's hash) replace the old pair, in the order
    described in the module docstring; on an error nothing changes. The sidecar, when there is one, must be
    segkit's own (an export's): any other file of that name is refused before anything is written."""
    model = Path(model)
    sidecar = path_for(model)
    if sidecar.exists() and not is_ours(sidecar):
        raise UserError(f"{model} would overwrite {sidecar}, which segkit's export did not write; choose another name")
    with fileio.atomic_path(model) as tmp:
        pair = Pair(tmp)
        yield pair
        if not tmp.is_file() or pair.payload is None:
            raise RuntimeError(f"the writer of {model} wrote no file or no sidecar entry")
        entry = {"sha256": digest(tmp), **pair.payload}
        models = _entries(sidecar)
        current = digest(model) if model.is_file() else None
        old = [e for e in models.get(model.name, []) if e.get("sha256") == current]
        models[model.name] = [entry, *old]
        _write(sidecar, models)  # both versions described; the rename that ends the block picks one
    models[model.name] = [entry]
    _write(sidecar, models)


def dataset_info(values: dict, where: Path) -> dict | None:
    """{"class_names", "colors", "config"} from a run config or a sidecar entry, checked: one name (a string)
    and one [r, g, b] colour (integers 0-255) per class; None when it records no classes. An ensemble's entry
    adds "members": [{"source", "config"}] for each of its models (its own "config" is the first one's)."""
    block = values.get("dataset_info", values)
    if not isinstance(block, dict) or "class_names" not in block:
        return None
    names, colors = block.get("class_names"), block.get("colors")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where}: class_names must be a list of class names, got {names!r:.80}")
    if not isinstance(colors, list) or len(colors) != len(names) or not all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and not isinstance(v, bool)
                                                        and 0 <= v <= 255 for v in c) for c in colors):
        raise UserError(f"{where}: colors must hold one [r, g, b] (integers 0-255) per class ({len(names)}), "
                        f"got {colors!r:.80}")
    config = values.get("config", {})
    info = {"class_names": list(names), "colors": [list(c) for c in colors],
            "config": config if isinstance(config, dict) else {}}
    members = values.get("members")
    if isinstance(members, list) and all(isinstance(m, dict) for m in members):
        info["members"] = members
    return info


def check_classes(info: dict | None, outputs: int, model: Path) -> None:
    """A UserError when the class names recorded for `model` do not match its `outputs` logit channels (one
    logit serves two classes: background and foreground)."""
    if not info or "class_names" not in info:
        return
    names = len(info["class_names"])
    if names != outputs and not (outputs == 1 and names == 2):
        raise UserError(f"{model} has {outputs} output channels but its recorded classes are {names} "
                        f"({', '.join(map(str, info['class_names'][:4]))}{', ...' if names > 4 else ''}); "
                        "the sidecar or run config belongs to another model")
