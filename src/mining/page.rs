//! The HTML page both reports write (the mining report, its side-by-side comparison and the
//! co-typicality report): one style sheet, the element viewer's script and the text escaping, all in
//! the page itself so that the report folder opens offline, from any place it is copied to.
use std::path::Path;

use crate::error::Result;

/// The style of every report page.
const STYLE: &str = r#"
:root{--ink:#1d2330;--muted:#5b6475;--line:#d8dde6;--card:#fff;--ground:#f3f5f8;--accent:#b3261e;--crop:84px}
*{box-sizing:border-box}
body{margin:0;background:var(--ground);color:var(--ink);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header.page{background:var(--ink);color:#fff;padding:1.2em 2em}
header.page h1{margin:0;font-size:1.5em;font-weight:600}
header.page p{margin:.3em 0 0;color:#c9d0dc}
header.page a{color:#fff}
main{padding:1em 2em 3em;max-width:1800px}
nav.labels{display:flex;flex-wrap:wrap;gap:.5em;margin:.5em 0 1em}
nav.labels a{background:var(--card);border:1px solid var(--line);border-radius:999px;padding:.2em .9em;color:var(--ink);text-decoration:none}
nav.labels a:hover{border-color:var(--ink)}
section.label{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1em 1.4em 1.4em;margin:1.2em 0}
section.label>h2{margin:.1em 0 .1em;font-size:1.35em}
p.summary{margin:0 0 1em;color:var(--muted)}
.label-body{display:grid;grid-template-columns:minmax(0,3fr) minmax(260px,1.3fr);gap:1.6em;align-items:start}
@media (max-width:1100px){.label-body{grid-template-columns:1fr}}
h3.column{margin:0 0 .5em;font-size:.8em;text-transform:uppercase;letter-spacing:.08em;color:var(--muted)}
.cluster{display:grid;grid-template-columns:8.5em minmax(0,1fr);gap:.8em;padding:.6em 0;border-top:1px solid var(--line)}
.cluster-head{font-size:.9em;color:var(--muted)}
.cluster-head .rank{display:block;font-size:1.25em;font-weight:700;color:var(--ink)}
.cluster-head span{display:block}
.elements{display:flex;flex-wrap:wrap;gap:4px}
.element{padding:0;border:2px solid transparent;border-radius:3px;background:none;cursor:zoom-in;line-height:0}
.element:hover,.element:focus-visible{border-color:var(--accent);outline:none}
.element img{width:var(--crop);height:var(--crop);image-rendering:pixelated;display:block}
.strip{margin:0 0 1.1em}
.strip .element img{width:calc(var(--crop) * .72);height:calc(var(--crop) * .72)}
.note{color:var(--muted);font-size:.9em}
img.figure{image-rendering:pixelated;max-width:100%;display:block}
.versions{display:flex;font-size:.8em;color:var(--muted);margin-bottom:.2em}
.versions span{flex:none;overflow-wrap:anywhere;padding-right:.3em}
table.compare{border-collapse:collapse;background:var(--card)}
table.compare td,table.compare th{vertical-align:top;padding:.5em;border:1px solid var(--line);text-align:left}
table.compare img{image-rendering:pixelated;max-width:100%}
.viewer{position:fixed;inset:0;background:rgba(12,15,22,.82);display:flex;align-items:center;justify-content:center;z-index:10;padding:2vh 2vw}
.viewer[hidden]{display:none}
.viewer-panel{background:var(--card);border-radius:10px;padding:1em 1.4em;max-width:96vw;max-height:96vh;overflow:auto;position:relative}
.viewer-panel h2{margin:0 2em .2em 0;font-size:1.2em}
.viewer-close{position:absolute;top:.4em;right:.6em;font-size:1.6em;background:none;border:0;cursor:pointer;color:var(--muted)}
.viewer-source{margin:0 0 .6em;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;word-break:break-all}
.viewer-figures{display:flex;flex-wrap:wrap;gap:1.2em}
.viewer figure{margin:0}
.viewer figcaption{color:var(--muted);font-size:.85em;margin-top:.3em;display:flex;align-items:center;gap:.5em}
.frame{position:relative;line-height:0}
.frame img{width:min(40vw,70vh,520px);height:auto;display:block}
.frame .box{position:absolute;border:2px solid #fff;box-shadow:0 0 0 1px #000,inset 0 0 0 1px #000}
img.legend{width:140px;height:10px;image-rendering:auto;border:1px solid var(--line)}
.viewer-details{margin:.7em 0 0;color:var(--muted);font-size:.9em}
"#;

/// The element viewer: a click on an element (a `button.element` whose data attributes name its
/// source image, heat map and box) opens the image and the heat map with the box drawn over both;
/// Escape, the close button or a click beside the panel closes it, the arrow keys step through the
/// element's row.
const SCRIPT: &str = r##"
"use strict";
(() => {
  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  let current = null;
  const q = s => viewer.querySelector(s);
  function place(frame, d) {
    const [x, y, size] = d.box.split(",").map(Number);
    const [w, h] = d.dims.split(",").map(Number);
    const box = frame.querySelector(".box");
    box.style.left = (100 * x / w) + "%";
    box.style.top = (100 * y / h) + "%";
    box.style.width = (100 * size / w) + "%";
    box.style.height = (100 * size / h) + "%";
  }
  function sharpen() { this.style.imageRendering = this.naturalWidth < this.clientWidth ? "pixelated" : "auto"; }
  function open(element) {
    current = element;
    const d = element.dataset;
    q("#viewer-title").textContent = d.title;
    q(".viewer-source").textContent = d.source;
    q(".viewer-details").textContent = d.details;
    for (const [id, src] of [["#viewer-heat", d.heat], ["#viewer-image", d.image]]) {
      const img = q(id);
      img.onload = sharpen;
      img.src = src;
      place(img.parentElement, d);
    }
    viewer.hidden = false;
    q(".viewer-close").focus();
  }
  function close() {
    viewer.hidden = true;
    if (current) current.focus();
  }
  function step(by) {
    if (!current) return;
    const row = [...current.parentElement.querySelectorAll("button.element")];
    const next = row[row.indexOf(current) + by];
    if (next) open(next);
  }
  document.addEventListener("click", event => {
    const element = event.target.closest("button.element");
    if (element) open(element);
    else if (event.target === viewer || event.target.closest(".viewer-close")) close();
  });
  document.addEventListener("keydown", event => {
    if (viewer.hidden) return;
    if (event.key === "Escape") close();
    else if (event.key === "ArrowRight") step(1);
    else if (event.key === "ArrowLeft") step(-1);
  });
})();
"##;

/// The viewer's panel, hidden until an element is clicked. `legend` is the heat map's colour bar, and
/// `scale` what it measures.
pub(crate) fn viewer(legend: &str, scale: &str) -> String {
    format!(
        "<div id=\"viewer\" class=\"viewer\" hidden role=\"dialog\" aria-modal=\"true\" aria-labelledby=\"viewer-title\">\
         <div class=\"viewer-panel\"><button type=\"button\" class=\"viewer-close\" aria-label=\"Close\">&times;</button>\
         <h2 id=\"viewer-title\"></h2><p class=\"viewer-source\"></p><div class=\"viewer-figures\">\
         <figure><div class=\"frame\"><img id=\"viewer-heat\" alt=\"{scale} heat map with the element's box\"><div class=\"box\"></div></div>\
         <figcaption>{scale}: lowest <img class=\"legend\" src=\"{}\" alt=\"colour scale, lowest to highest {scale}\"> highest</figcaption></figure>\
         <figure><div class=\"frame\"><img id=\"viewer-image\" alt=\"source image with the element's box\"><div class=\"box\"></div></div>\
         <figcaption>source image</figcaption></figure></div><p class=\"viewer-details\"></p></div></div>\n",
        escape(legend),
        scale = escape(scale)
    )
}

/// Writes a report page: `title` and `subtitle` (HTML) in the header, then `body` (HTML).
pub(crate) fn write_page(path: &Path, title: &str, subtitle: &str, body: &str) -> Result<()> {
    let title = escape(title);
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\n\
         <style>{STYLE}</style></head>\n<body>\n<header class=\"page\"><h1>{title}</h1><p>{subtitle}</p></header>\n\
         <main>\n{body}</main>\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    crate::io::write_atomic(path, html.as_bytes())
}

/// `text` safe inside HTML text and attribute values (double-quoted).
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// A number as a report shows it: four significant digits, in scientific notation outside
/// [0.01, 10 000).
pub(crate) fn number(value: f32) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        "0.000".into()
    } else if (0.01..10_000.0).contains(&magnitude) {
        let decimals = (3 - magnitude.log10().floor() as i32).clamp(0, 5) as usize;
        format!("{value:.decimals$}")
    } else {
        format!("{value:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_html_text_and_attributes() {
        assert_eq!(escape(r#"<a href="x">Tom & 'Jerry'</a>"#), "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;");
    }

    #[test]
    fn numbers_show_four_significant_digits() {
        assert_eq!(number(0.0), "0.000");
        assert_eq!(number(0.123456), "0.1235");
        assert_eq!(number(12.3456), "12.35");
        assert_eq!(number(-0.0123456), "-0.01235");
        assert_eq!(number(0.000123456), "1.235e-4");
        assert_eq!(number(123456.0), "1.235e5");
    }
}
