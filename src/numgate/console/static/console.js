// numgate console: times in the viewer's time zone, and live progress without a reload.
"use strict";

function localTimes(root) {
  for (const t of (root || document).querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.getAttribute("datetime"); }
  }
}

function setText(el, sel, value) {
  const x = el.querySelector(sel);
  if (x) x.textContent = value;
}

function showProgress(el, b) {
  const bar = el.querySelector("progress");
  if (bar) { bar.max = b.total; bar.value = b.done; }
  setText(el, ".done", b.done);
  setText(el, ".percent", b.percent);
  setText(el, ".rate", b.rate);
  const eta = el.querySelector(".eta");
  if (eta) {
    const when = b.complete ? b.finished : b.eta;
    eta.textContent = "";
    if (when) {
      const label = el.id === "progress" ? (b.complete ? "finished " : "ends ~") : (b.complete ? "" : "~");
      eta.append(label);
      const t = document.createElement("time");
      t.setAttribute("datetime", when);
      t.textContent = when;
      eta.append(t);
      localTimes(eta);
    }
  }
  el.dataset.complete = b.complete ? "yes" : "no";
}

async function poll(el) {
  try {
    const r = await fetch(el.dataset.live, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (r.status === 401) { location.href = "/console/login"; return; }
    if (!r.ok) throw new Error(r.status);
    const rows = await r.json();
    if (el.id === "progress") {
      if (rows.length) showProgress(el, rows[0]);
    } else {
      for (const b of rows) {
        const tr = el.querySelector(`tr[data-mid="${b.message_id}"]`);
        if (tr) showProgress(tr, b);
      }
    }
    const running = rows.some((b) => !b.complete);
    setTimeout(() => poll(el), running ? 1000 : 5000);
  } catch (e) {
    setTimeout(() => poll(el), 5000);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  for (const el of document.querySelectorAll("[data-live]")) setTimeout(() => poll(el), 1000);
});
