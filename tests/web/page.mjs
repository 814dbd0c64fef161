// Drive the exported page in headless Chromium (Debian's /usr/bin/chromium, through playwright-core):
//   node tests/web/page.mjs URL [FRAME_URL] [RUNS] [SCREENSHOT.png]
// Prints one JSON line: {ready, error, message, result: {width, height, labels, times}, stream}.
// PAGE_ACTION=webcam clicks "Use the webcam" (Chromium's fake camera), PAGE_ACTION=video:FILE opens a video
// file; `stream` then tells how many frames the page segmented and what it last drew.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "..", "segkit", "exporters", "web_app", "package.json"));
const { chromium } = require("playwright-core");

const [url, frame, runs = "1", screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
});
const out = { ready: false, error: null, message: null, result: null, console: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  page.on("console", (m) => out.console.push(`${m.type()}: ${m.text()}`.slice(0, 300)));
  page.on("pageerror", (e) => out.console.push(`pageerror: ${e.message}`.slice(0, 300)));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => window.segkit && (window.segkit.ready || window.segkit.error),
                             null, { timeout: 120000 });
  Object.assign(out, await page.evaluate(() => ({ ready: window.segkit.ready, error: window.segkit.error })));
  out.message = await page.evaluate(() => {
    const box = document.getElementById("message");
    return box && !box.hidden ? box.textContent : null;
  });
  if (out.ready && frame) {
    out.result = await page.evaluate(([u, n]) => window.segkit.segmentURL(u, n), [frame, Number(runs)]);
  }
  const action = process.env.PAGE_ACTION || "";
  if (out.ready && action) {
    if (action === "webcam") await page.click("#webcam");
    else if (action.startsWith("video:")) await page.setInputFiles("#file", action.slice(6));
    await page.waitForFunction(() => window.segkit.ms.length >= 5 || window.segkit.error, null, { timeout: 120000 });
    out.stream = await page.evaluate(() => ({
      frames: window.segkit.ms.length, error: window.segkit.error,
      source: window.segkit.last && window.segkit.last.source.tagName,
      size: window.segkit.last && [window.segkit.last.height, window.segkit.last.width],
      timing: document.getElementById("timing").textContent }));
  }
  if (screenshot) await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
