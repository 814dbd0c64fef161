"""Export to the web: a static folder that segments images, videos and the webcam in any browser, on the user's
own machine, with MediaPipe Tasks for Web (`@mediapipe/tasks-vision`: WebAssembly with XNNPACK).

    segkit export --model runs/RUN --format web --out site/         # int8 TFLite by default
    python -m http.server -d site                                   # then open http://localhost:8000

The folder holds everything the page needs and nothing from a CDN, so it works offline and from any static
host:

    index.html, app.js, style.css      the page (web_app/ in this package)
    model.tflite, model.json           the model (int8 unless --quantize says otherwise) and its sidecar
    labels.json                        class names and colours, the model's input size
    mediapipe/                         vision_bundle.js and wasm/vision_wasm_internal.{js,wasm}, with NOTICE

The runtime's files come from the npm package pinned in web_app/package-lock.json (version and sha512
integrity). Node is not needed: the package's tarball is read from web_app/node_modules when `npm ci` put it
there, else from the cache (~/.cache/segkit/web), else downloaded once from the npm registry
(SEGKIT_NPM_REGISTRY, default https://registry.npmjs.org) and checked against the lock's integrity; offline,
SEGKIT_WEB_RUNTIME=path/to/tasks-vision-<version>.tgz names a tarball fetched elsewhere. Only the SIMD build
of the WebAssembly is copied (13 MB; every current browser has WebAssembly SIMD): the page says so where it
is missing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from segkit import catalog, fileio
from segkit.errors import UserError

APP = Path(__file__).resolve().parent / "web_app"
PACKAGE = "@mediapipe/tasks-vision"
PAGE_FILES = ("index.html", "app.js", "style.css")
# What the page loads from the package: the ES module bundle (renamed .js, which every static server types as
# JavaScript) and the SIMD WebAssembly build with its loader.
RUNTIME_FILES = {"vision_bundle.mjs": "vision_bundle.js", "wasm/vision_wasm_internal.js": "wasm/vision_wasm_internal.js",
                 "wasm/vision_wasm_internal.wasm": "wasm/vision_wasm_internal.wasm"}
SITE_FILES = (*PAGE_FILES, "model.tflite", "model.json", "labels.json", "mediapipe", "frame.png")


def pinned() -> tuple:
    """(version, sha512 integrity) of the runtime package, from web_app/package-lock.json."""
    lock = json.loads((APP / "package-lock.json").read_text())
    entry = lock["packages"][f"node_modules/{PACKAGE}"]
    return entry["version"], entry["integrity"]


def tarball_url(version: str) -> str:
    registry = os.environ.get("SEGKIT_NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
    return f"{registry}/{PACKAGE}/-/{PACKAGE.split('/')[1]}-{version}.tgz"


def _check_integrity(payload: bytes, integrity: str, where: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, payload).digest()).decode()
    if actual != expected:
        raise UserError(f"{where} is not {PACKAGE} as pinned in {APP / 'package-lock.json'} ({algorithm} differs); "
                        "delete it and export again")


def _extract(payload: bytes, folder: Path) -> None:
    """The package's files from an npm tarball (its `package/` folder) into `folder`, atomically."""
    with fileio.atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
            for name in RUNTIME_FILES:
                member = archive.getmember(f"package/{name}")
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
            license_text = json.loads(archive.extractfile("package/package.json").read()).get("license", "")
        (tmp / "NOTICE").write_text(f"{PACKAGE} (MediaPipe Tasks for Web), license {license_text}: "
                                    "https://github.com/google-ai-edge/mediapipe\n")


def runtime() -> Path:
    """A folder holding RUNTIME_FILES of the pinned runtime package (see the module docstring for where from)."""
    version, integrity = pinned()
    local = APP / "node_modules" / PACKAGE
    if (local / "package.json").is_file() and json.loads((local / "package.json").read_text()).get("version") == version:
        return local
    cache = Path(os.environ.get("SEGKIT_CACHE") or Path.home() / ".cache" / "segkit") / "web" / f"tasks-vision-{version}"
    if all((cache / name).is_file() for name in RUNTIME_FILES):
        return cache
    given = os.environ.get("SEGKIT_WEB_RUNTIME")
    if given:
        try:
            payload = Path(given).read_bytes()
        except OSError as exc:
            raise UserError(f"SEGKIT_WEB_RUNTIME={given}: {exc.strerror or exc}") from None
        where = f"SEGKIT_WEB_RUNTIME={given}"
    else:
        url = tarball_url(version)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(f"cannot fetch the web runtime {PACKAGE} {version} from {url} ({exc}); download that "
                            f"file elsewhere and set SEGKIT_WEB_RUNTIME=path/to/tasks-vision-{version}.tgz") from None
        where = url
    _check_integrity(payload, integrity, where)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        _extract(payload, cache)
        return cache
    except (OSError, UserError):  # no writable cache: extract next to nothing, into a temporary folder
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="segkit-web-")) / "runtime"
        _extract(payload, folder)
        return folder


def check_request(out: Path, model: Path, quantize: str) -> None:
    """Refuse, before anything is written, what the web runtime cannot run or where the site cannot go."""
    if quantize not in ("none", "fp16", "int8", "dynamic"):
        raise UserError(f"--quantize must be one of none, fp16, dynamic, int8 for --format web; got {quantize!r}")
    out = fileio.check_writable(out, "--out", kind="folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in SITE_FILES and not p.name.startswith("."))
        if foreign or (any(out.iterdir()) and not (out / "labels.json").is_file()):
            raise UserError(f"--out {str(out)!r} holds files that a web export did not write "
                            f"({', '.join(foreign[:3]) or 'no labels.json'}); give a new or empty folder")
    run_config = _run_config(model)
    name = run_config.get("model")
    if name in catalog.MODELS and catalog.MODELS[name].loop != "keras":
        raise UserError(f"{name} cannot run in the browser: it is a raw-TensorFlow module whose TFLite file has no "
                        "segmenter metadata (labels, output activation) that MediaPipe's ImageSegmenter needs; "
                        "export a Keras model (or a .tflite from one) with --format web")


def _run_config(model: Path) -> dict:
    """The run config recorded for `model` (a run folder, a .keras file, a .tflite with its sidecar), or {}."""
    from segkit.inference.loading import read_info, resolve

    path = resolve(model)
    info = read_info(path if path.is_file() else Path(model))
    return (info or {}).get("config", {})


def write_site(folder: Path, tflite: Path, info: dict, size: tuple) -> None:
    """The static site in `folder`: the page, the runtime, `tflite` as model.tflite with its sidecar entry,
    and labels.json (class names, colours and the model's input size, for the legend)."""
    for name in PAGE_FILES:
        shutil.copyfile(APP / name, folder / name)
    source = runtime()
    for name, target in RUNTIME_FILES.items():
        destination = folder / "mediapipe" / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, destination)
    notice = source / "NOTICE"
    (folder / "mediapipe" / "NOTICE").write_text(notice.read_text() if notice.is_file() else
                                                 f"{PACKAGE} (MediaPipe Tasks for Web), Apache-2.0\n")
    version, _ = pinned()
    fileio.write_json(folder / "labels.json", {
        "class_names": info["class_names"], "colors": info["colors"], "input_size": list(size),
        "runtime": f"{PACKAGE} {version}"})
