"""`segkit export --format web`: the static site runs the model in a real browser (Debian's Chromium, headless,
driven by playwright-core through tests/web/page.mjs), and its category mask agrees with segkit's own
prediction on the same file; a broken model gives the page's error message, not a blank page; a model the web
runtime cannot run is refused before anything is written.

`make test` installs what this needs (Makefile, web-setup: Debian's chromium, `npm ci` in
segkit/exporters/web_app); without them the tests say what is missing and skip.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = ROOT / "segkit" / "exporters" / "web_app" / "node_modules" / "playwright-core"
PAGE = ROOT / "tests" / "web" / "page.mjs"
FRAME = ROOT / "segkit" / "data" / "sample" / "camvid" / "val" / "0016E5_07959.jpg"

browser = pytest.mark.skipif(not (CHROMIUM.is_file() and PLAYWRIGHT.is_dir() and shutil.which("node")),
                                reason="needs Debian's chromium, node and playwright-core (make web-setup)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A static server on 127.0.0.1 over a folder of sites, as `python -m http.server -d site` serves one."""
    root = tmp_path_factory.mktemp("sites")
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def open_page(url: str, frame_url: str | None = None, runs: int = 1, screenshot: Path | None = None,
              action: str = "") -> dict:
    import os

    args = ["node", str(PAGE), url, frame_url or "", str(runs), *([str(screenshot)] if screenshot else [])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, "PAGE_ACTION": action})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def export_site(model, out: Path, *flags) -> None:
    from segkit.cli import export
    from tests.conftest import run_command

    assert run_command(export.main, ["--model", str(model), "--format", "web", "--out", str(out), *flags]) == 0


def frame_png(site: Path, size) -> Path:
    """A CamVid sample frame at the model's input size (H, W), lossless, beside the page (same origin)."""
    path = site / "frame.png"
    Image.open(FRAME).convert("RGB").resize((size[1], size[0]), Image.BILINEAR).save(path)
    return path


def agreement_with_segkit(site: Path, result: dict) -> float:
    """Share of pixels where the browser's category mask equals segkit's own labels for the same file."""
    import segkit

    browser = np.asarray(result["labels"], np.uint8).reshape(result["height"], result["width"])
    ours = segkit.load_model(site / "model.tflite").labels(np.asarray(Image.open(site / "frame.png")))
    assert browser.shape == ours.shape
    return float(np.mean(browser == ours))


@pytest.fixture(scope="module")
def int8_site(server):
    root, base = server
    site = root / "int8"
    export_site(ROOT / "pretrained" / "camvid_realtime_int8.tflite", site)
    return site, f"{base}/int8"


@browser
def test_int8_site_in_chromium_agrees_with_segkit(int8_site, tmp_path):
    site, url = int8_site
    assert {"index.html", "app.js", "style.css", "model.tflite", "model.json", "labels.json"} <= {
        p.name for p in site.iterdir()}
    assert (site / "mediapipe" / "wasm" / "vision_wasm_internal.wasm").stat().st_size > 1e6
    labels = json.loads((site / "labels.json").read_text())
    assert labels["class_names"][0] == "Sky" and labels["input_size"] == [360, 480]
    frame_png(site, labels["input_size"])
    shot = tmp_path / "page.png"
    out = open_page(f"{url}/", f"{url}/frame.png", runs=2, screenshot=shot)
    assert out["ready"] and out["error"] is None, out
    assert agreement_with_segkit(site, out["result"]) >= 0.97
    assert shot.stat().st_size > 10_000


@browser
def test_float_site_from_a_keras_model(server):
    root, base = server
    site = root / "float"
    export_site(ROOT / "pretrained" / "camvid.keras", site, "--quantize", "none", "--image-size", "192", "256",
                "--dataset", "sample", "--check-images", "2")
    size = json.loads((site / "labels.json").read_text())["input_size"]
    assert size == [192, 256]
    frame_png(site, size)
    out = open_page(f"{base}/float/", f"{base}/float/frame.png")
    assert out["ready"], out
    assert agreement_with_segkit(site, out["result"]) >= 0.99


@browser
def test_webcam_and_video_files_stream_through_the_page(int8_site, tmp_path):
    """The webcam (Chromium's fake camera) and a video file opened in the page are segmented frame after frame,
    with the time per frame shown."""
    import cv2

    site, url = int8_site
    out = open_page(f"{url}/", action="webcam")
    assert out["stream"]["frames"] >= 5 and out["stream"]["source"] == "VIDEO", out
    assert "ms per frame" in out["stream"]["timing"] and out["stream"]["error"] is None
    clip = tmp_path / "clip.webm"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"VP80"), 5, (240, 180))
    frame = np.asarray(Image.open(FRAME).convert("RGB"))[..., ::-1]
    for k in range(10):
        writer.write(np.ascontiguousarray(np.roll(frame, 4 * k, axis=1)))
    writer.release()
    assert clip.stat().st_size > 1000, "OpenCV wrote no VP8 video here"
    out = open_page(f"{url}/", action=f"video:{clip}")
    assert out["stream"]["frames"] >= 5 and out["stream"]["size"] == [180, 240], out


@browser
def test_a_broken_model_shows_the_pages_message(server):
    root, base = server
    site = root / "broken"
    export_site(ROOT / "pretrained" / "camvid_realtime_int8.tflite", site)
    model = site / "model.tflite"
    model.write_bytes(model.read_bytes()[:4096])  # truncated
    out = open_page(f"{base}/broken/")
    assert not out["ready"] and out["message"].startswith("Could not load the model (model.tflite)"), out


def test_a_model_the_browser_cannot_run_is_refused_before_writing(tmp_path, capsys):
    """unet_tf (a raw-TensorFlow module): one line, and no --out folder."""
    from segkit.cli import export
    from tests.conftest import run_command

    run = tmp_path / "run"
    (run / "saved_model").mkdir(parents=True)
    (run / "saved_model" / "saved_model.pb").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"config": {"model": "unet_tf", "dataset": "sample"},
                                                 "dataset_info": {"class_names": ["a", "b"],
                                                                  "colors": [[0, 0, 0], [255, 255, 255]]}}))
    code = run_command(export.main, ["--model", str(run), "--format", "web", "--out", str(tmp_path / "site")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: unet_tf cannot run in the browser")
    assert not (tmp_path / "site").exists()


def test_web_out_must_be_a_site_folder(tmp_path, capsys):
    from segkit.cli import export
    from tests.conftest import run_command

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code = run_command(export.main, ["--model", str(ROOT / "pretrained" / "camvid_realtime_int8.tflite"),
                                     "--format", "web", "--out", str(tmp_path / "mine")])
    assert code == 2 and "holds files that a web export did not write (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_the_runtime_comes_from_a_checked_tarball_without_node(tmp_path, monkeypatch):
    """No node_modules: the pinned package's tarball (here SEGKIT_WEB_RUNTIME, as offline) is checked against the
    lock's sha512 integrity, unpacked into the cache, and used from there; a tarball that differs is refused."""
    import base64
    import hashlib
    import io
    import tarfile

    from segkit.errors import UserError
    from segkit.exporters import web

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in [("package/package.json", b'{"license": "Apache-2.0"}'),
                              *((f"package/{n}", n.encode()) for n in web.RUNTIME_FILES)]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    tarball = tmp_path / "tasks-vision-9.9.9.tgz"
    tarball.write_bytes(buffer.getvalue())
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    app = tmp_path / "app"
    app.mkdir()
    (app / "package-lock.json").write_text(json.dumps({"packages": {
        f"node_modules/{web.PACKAGE}": {"version": "9.9.9", "integrity": integrity}}}))
    monkeypatch.setattr(web, "APP", app)
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEGKIT_WEB_RUNTIME", str(tarball))
    folder = web.runtime()
    assert folder == tmp_path / "cache" / "web" / "tasks-vision-9.9.9"
    assert (folder / "wasm" / "vision_wasm_internal.wasm").read_bytes() == b"wasm/vision_wasm_internal.wasm"
    assert "Apache-2.0" in (folder / "NOTICE").read_text()
    assert web.runtime() == folder  # from the cache now
    shutil.rmtree(folder)
    tarball.write_bytes(tarball.read_bytes() + b"x")
    with pytest.raises(UserError, match="is not @mediapipe/tasks-vision as pinned"):
        web.runtime()
    assert web.tarball_url("1.1.0") == "https://registry.npmjs.org/@mediapipe/tasks-vision/-/tasks-vision-1.1.0.tgz"
