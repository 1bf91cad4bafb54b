// Opens Orthanc Explorer's page of one study in headless Chromium (Debian's, through playwright-core),
// waits until it lists at least `series` series, screenshots it and prints, as JSON on stdout, the
// series entries' texts and the page's errors, for tests/orthanc.rs to check:
//   node orthanc_explorer.mjs '{"url": "http://localhost:8042/app/explorer.html#study?uuid=...",
//                               "series": 3, "screenshot": "/abs/explorer.png"}'
// It runs inside the test server's network namespace; requests beyond the server are refused.
import { chromium } from "playwright-core";

const task = JSON.parse(process.argv[2]);
const origin = new URL(task.url).origin;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
  timeout: 60000,
});
try {
  const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
  await context.route("**/*", route => route.request().url().startsWith(origin) ? route.continue() : route.abort());
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  await page.goto(task.url, { waitUntil: "load", timeout: 60000 });
  await page.waitForFunction(n => document.querySelectorAll("#list-series li a").length >= n, task.series, { timeout: 60000 });
  // The thumbnails and counts load after the list; give them a moment to show.
  await page.waitForTimeout(1000);
  const series = await page.$$eval("#list-series li a", items => items.map(a => a.innerText.replace(/\s+/g, " ").trim()));
  await page.screenshot({ path: task.screenshot, fullPage: true });
  console.log(JSON.stringify({ series, errors }));
} finally {
  await browser.close();
}
