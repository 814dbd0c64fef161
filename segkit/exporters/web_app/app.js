// The page of `segkit export --format web`: MediaPipe's ImageSegmenter runs model.tflite on the user's machine
// (WebAssembly, CPU) and the page draws its category mask over the image, video or webcam frame.
import { FilesetResolver, ImageSegmenter } from "./mediapipe/vision_bundle.js";

const $ = (id) => document.getElementById(id);
// What the page knows, also for tests and the curious (window.segkit): ready, error, the last mask, timings.
const state = { ready: false, error: null, labels: null, segmenter: null, mode: "IMAGE", last: null, ms: [] };
window.segkit = state;

function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = false;
  state.error = text;
}

// A module with one SIMD instruction: it validates only where WebAssembly SIMD exists (the runtime needs it).
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0,
  65, 0, 253, 15, 253, 98, 11]);

function missingFeature() {
  if (typeof WebAssembly !== "object") return "This browser has no WebAssembly, which the model runs on.";
  if (!WebAssembly.validate(SIMD_PROBE)) {
    return "This browser lacks WebAssembly SIMD, which this page's runtime needs; try a current Chrome, Edge, " +
      "Firefox or Safari.";
  }
  return null;
}

function buildLegend() {
  const body = $("legend").tBodies[0];
  body.innerHTML = "";
  state.labels.class_names.forEach((name, k) => {
    const row = body.insertRow();
    const [r, g, b] = state.labels.colors[k];
    row.insertCell().innerHTML = `<span class="swatch" style="background: rgb(${r}, ${g}, ${b})"></span>`;
    row.insertCell().textContent = name;
    const share = row.insertCell();
    share.className = "share";
    share.textContent = "";
  });
}

function updateLegend(counts, total) {
  const rows = $("legend").tBodies[0].rows;
  counts.forEach((count, k) => {
    if (rows[k]) rows[k].cells[2].textContent = total ? `${(100 * count / total).toFixed(1)}%` : "";
  });
}

// Draw `source` (an image, a video or a canvas) with the class colours of `mask` over it.
function draw(source, mask, width, height) {
  const canvas = $("view");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.globalAlpha = 1;
  ctx.drawImage(source, 0, 0, width, height);
  const overlay = new ImageData(width, height);
  const counts = new Array(state.labels.class_names.length).fill(0);
  for (let i = 0; i < mask.length; i++) {
    const k = mask[i];
    const color = state.labels.colors[k] || [0, 0, 0];
    counts[k] = (counts[k] || 0) + 1;
    overlay.data[4 * i] = color[0];
    overlay.data[4 * i + 1] = color[1];
    overlay.data[4 * i + 2] = color[2];
    overlay.data[4 * i + 3] = 255;
  }
  const layer = new OffscreenCanvas(width, height);
  layer.getContext("2d").putImageData(overlay, 0, 0);
  ctx.globalAlpha = Number($("opacity").value);
  ctx.drawImage(layer, 0, 0);
  ctx.globalAlpha = 1;
  updateLegend(counts, mask.length);
}

function showTiming(ms, perFrame) {
  state.ms.push(ms);
  if (state.ms.length > 30) state.ms.shift();
  const mean = state.ms.reduce((a, b) => a + b, 0) / state.ms.length;
  $("timing").textContent = perFrame
    ? `${mean.toFixed(1)} ms per frame (${(1000 / mean).toFixed(1)} frames/s, mean of the last ${state.ms.length})`
    : `${ms.toFixed(1)} ms for this image`;
}

async function setMode(mode) {
  if (state.mode !== mode) {
    await state.segmenter.setOptions({ runningMode: mode });
    state.mode = mode;
  }
}

// Segment one still image (an <img> that has loaded); returns what the page drew.
async function segmentImage(image) {
  stopVideo();
  await setMode("IMAGE");
  const start = performance.now();
  const result = state.segmenter.segment(image);
  const ms = performance.now() - start;
  const mask = result.categoryMask;
  const labels = mask.getAsUint8Array().slice();
  const width = mask.width, height = mask.height;
  result.close();
  draw(image, labels, width, height);
  state.ms = [];
  showTiming(ms, false);
  state.last = { source: image, labels, width, height, ms };
  return state.last;
}

let videoRunning = false;

function stopVideo() {
  videoRunning = false;
  const video = $("video");
  if (video.srcObject) {
    video.srcObject.getTracks().forEach((track) => track.stop());
    video.srcObject = null;
  }
  video.pause();
}

async function runVideo(video) {
  await setMode("VIDEO");
  videoRunning = true;
  state.ms = [];
  const step = () => {
    if (!videoRunning || video.ended) return;
    if (video.readyState >= 2) {
      const start = performance.now();
      const result = state.segmenter.segmentForVideo(video, start);
      const ms = performance.now() - start;
      const mask = result.categoryMask;
      const labels = mask.getAsUint8Array().slice();
      draw(video, labels, mask.width, mask.height);
      state.last = { source: video, labels, width: mask.width, height: mask.height, ms };
      result.close();
      showTiming(ms, true);
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

async function openFile(file) {
  if (!state.ready) return;
  const url = URL.createObjectURL(file);
  if (file.type.startsWith("video/")) {
    stopVideo();
    const video = $("video");
    video.src = url;
    video.loop = true;
    try {
      await video.play();
    } catch (e) {
      showMessage(`Could not play ${file.name}: ${e.message || e}`);
      return;
    }
    await runVideo(video);
  } else {
    try {
      await segmentImage(await loadImage(url));
    } catch (e) {
      showMessage(`Could not read ${file.name} as an image: ${e.message || e}`);
    }
  }
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("not an image this browser can decode"));
    image.src = url;
  });
}

async function useWebcam() {
  if (!state.ready) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("This browser gives the page no webcam: it needs a secure origin (https or localhost) and " +
      "camera support.");
    return;
  }
  stopVideo();
  try {
    const video = $("video");
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    await video.play();
    await runVideo(video);
  } catch (e) {
    showMessage(`No webcam: ${e.name === "NotAllowedError" ? "permission was refused" : e.message || e}.`);
  }
}

// For tests and scripts: segment the image at `url`; `runs` > 1 times it and reports each run's time.
state.segmentURL = async (url, runs = 1) => {
  const image = await loadImage(url);
  const times = [];
  let last = null;
  for (let k = 0; k < runs; k++) {
    last = await segmentImage(image);
    times.push(last.ms);
  }
  return { width: last.width, height: last.height, labels: Array.from(last.labels), times };
};

async function init() {
  const missing = missingFeature();
  if (missing) {
    showMessage(missing);
    return;
  }
  try {
    const response = await fetch("labels.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.labels = await response.json();
  } catch (e) {
    showMessage(`Could not read labels.json (the class names): ${e.message || e}`);
    return;
  }
  try {
    const fileset = await FilesetResolver.forVisionTasks(new URL("mediapipe/wasm", location.href).href);
    state.segmenter = await ImageSegmenter.createFromOptions(fileset, {
      baseOptions: { modelAssetPath: new URL("model.tflite", location.href).href, delegate: "CPU" },
      runningMode: "IMAGE",
      outputCategoryMask: true,
      outputConfidenceMasks: false,
    });
  } catch (e) {
    showMessage(`Could not load the model (model.tflite): ${e.message || e}`);
    return;
  }
  const [height, width] = state.labels.input_size;
  $("about").textContent = `${state.labels.class_names.length} classes; the model runs at ${width}x${height} ` +
    "(other sizes are resized). Open an image or a video, or use the webcam.";
  $("runtime").textContent = state.labels.runtime || "MediaPipe Tasks for Web";
  buildLegend();
  $("file").addEventListener("change", (event) => event.target.files[0] && openFile(event.target.files[0]));
  $("webcam").addEventListener("click", useWebcam);
  $("opacity").addEventListener("input", () => {
    if (state.last && !videoRunning) draw(state.last.source, state.last.labels, state.last.width, state.last.height);
  });
  state.ready = true;
}

init().catch((e) => showMessage(`The page failed to start: ${e.message || e}`));
