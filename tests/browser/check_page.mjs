// Opens a report page in headless Chromium (Debian's, through playwright-core) and prints what a
// person would see, as JSON on stdout, for tests/report_browser.rs to check:
//   node check_page.mjs '{"page": "/abs/index.html", "screenshot": "/abs/page.png",
//                         "click": "CSS selector or null", "clickScreenshot": "/abs/viewer.png"}'
// The page is opened from its file:// URL with the network refused, so that a page needing anything
// beyond its folder fails here as it would offline.
import { chromium } from "playwright-core";
import { pathToFileURL } from "node:url";

const task = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
  timeout: 60000,
});
try {
  const context = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
  const requests = [];
  await context.route("**/*", route => {
    const url = route.request().url();
    requests.push(url);
    return url.startsWith("file://") ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  page.on("console", m => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(pathToFileURL(task.page).href, { waitUntil: "load", timeout: 60000 });
  const result = { seen: await seen(page) };
  await page.screenshot({ path: task.screenshot, fullPage: true });
  if (task.click) {
    const element = page.locator(task.click).first();
    await element.scrollIntoViewIfNeeded();
    result.clicked = await element.evaluate(e => ({ ...e.dataset }));
    await element.click();
    await page.locator("#viewer").waitFor({ state: "visible", timeout: 10000 });
    await page.waitForFunction(() => ["#viewer-heat", "#viewer-image"].every(s => {
      const img = document.querySelector(s);
      return img.complete && img.naturalWidth > 0;
    }), null, { timeout: 10000 });
    result.viewer = await viewer(page);
    await page.screenshot({ path: task.clickScreenshot });
    await page.keyboard.press("Escape");
    result.closedByEscape = await page.locator("#viewer").isHidden();
  }
  result.errors = errors;
  result.offsite = requests.filter(u => !u.startsWith("file://"));
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}

// Everything the tests check on the page as loaded: its sections, clusters, strips, every image and
// every link (with whether its target exists).
async function seen(page) {
  return page.evaluate(async () => {
    const shown = e => {
      const box = e.getBoundingClientRect();
      const style = getComputedStyle(e);
      return box.width > 0 && box.height > 0 && style.display !== "none" && style.visibility !== "hidden";
    };
    const text = (root, selector) => (root.querySelector(selector) || {}).textContent || "";
    const cluster = c => ({
      ...c.dataset, id: c.id, rankText: text(c, ".rank"), sizeText: text(c, ".size"), medianText: text(c, ".median"),
      elements: [...c.querySelectorAll("button.element")].map(b => Number(b.dataset.patch)),
    });
    const image = img => ({
      src: img.getAttribute("src"), loaded: img.complete && img.naturalWidth > 0, shown: shown(img),
      naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, width: img.clientWidth, height: img.clientHeight,
    });
    const links = [];
    for (const a of document.querySelectorAll("a[href]")) {
      const url = new URL(a.href);
      const fragment = decodeURIComponent(url.hash.slice(1));
      let ok = true, reason = "";
      if (url.href.split("#")[0] === location.href.split("#")[0]) {
        ok = !fragment || !!document.getElementById(fragment);
        reason = ok ? "" : "no element #" + fragment;
      }
      links.push({ href: a.getAttribute("href"), ok, reason });
    }
    return {
      title: document.title,
      sections: [...document.querySelectorAll("section.label")].map(s => ({
        id: s.id, label: s.dataset.label || "", heading: text(s, "h2"), summary: text(s, "p.summary"),
        clusters: [...s.querySelectorAll(".cluster")].map(cluster),
        strips: [...s.querySelectorAll(".strip")].map(st => ({
          id: st.dataset.strip, heading: text(st, "h3"),
          elements: [...st.querySelectorAll("button.element")].map(b => Number(b.dataset.patch)),
        })),
      })),
      images: [...document.images].filter(img => !img.closest("#viewer")).map(image),
      links,
      crop: (() => {
        const img = document.querySelector("button.element img");
        return img ? image(img) : null;
      })(),
    };
  });
}

// The open viewer: its texts, its two images and the box drawn on each, in page pixels.
async function viewer(page) {
  return page.evaluate(() => {
    const rect = e => { const r = e.getBoundingClientRect(); return { x: r.x, y: r.y, width: r.width, height: r.height }; };
    const figure = id => {
      const img = document.querySelector(id);
      const box = img.parentElement.querySelector(".box");
      const hit = document.elementFromPoint(rect(img).x + rect(img).width / 2, rect(img).y + rect(img).height / 2);
      return {
        src: img.getAttribute("src"), naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
        rect: rect(img), box: rect(box), boxShown: getComputedStyle(box).display !== "none",
        onTop: hit === img || hit === box,
      };
    };
    const v = document.getElementById("viewer");
    return {
      visible: !v.hidden && v.getBoundingClientRect().width > 0,
      title: document.getElementById("viewer-title").textContent,
      source: v.querySelector(".viewer-source").textContent,
      details: v.querySelector(".viewer-details").textContent,
      heat: figure("#viewer-heat"),
      image: figure("#viewer-image"),
    };
  });
}
