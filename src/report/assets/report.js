// calib report: renders the kernel table from the embedded data, sorts and filters it,
// and opens a kernel's detail, inflating its compressed chunk on demand with the
// browser's DecompressionStream. No libraries.
"use strict";
const DATA = JSON.parse(document.getElementById("calib-data").textContent);
const FIELDS = ["name", "anchor", "label", "ops", "covers", "flops", "bytes", "predicted",
  "measured", "registers", "spills", "shared", "occupancy"];
const KERNELS = DATA.kernels.map((row, index) => {
  const k = { index };
  FIELDS.forEach((f, i) => { k[f] = row[i]; });
  k.ai = k.bytes > 0 ? k.flops / k.bytes : null;
  k.search = (k.name + " " + k.anchor + " " + k.label).toLowerCase();
  return k;
});
const BY_NAME = new Map(KERNELS.map((k) => [k.name, k]));
const TEXT_KEYS = new Set(["name", "anchor", "label"]);
const state = { key: DATA.measured ? "measured" : "predicted", descending: true, filter: "" };

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// Numbers as a reader wants them: SI prefixes for counts, fixed digits for times.
function si(v) {
  if (v === null || v === undefined) return null;
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [s, p] of units) if (Math.abs(v) >= s) return (v / s).toFixed(2) + " " + p;
  return String(Math.round(v * 100) / 100);
}
const FORMAT = {
  flops: si, bytes: si, shared: si,
  ai: (v) => (v === null ? null : v.toFixed(2)),
  predicted: (v) => v.toFixed(1),
  measured: (v) => (v === null ? null : v.toFixed(1)),
  occupancy: (v) => (v === null ? null : Math.round(v * 100) + "%"),
};
const COLUMNS = ["name", "anchor", "label", "ops", "covers", "flops", "bytes", "ai", "predicted",
  "measured", "registers", "spills", "shared", "occupancy"];

function cell(k, key) {
  const raw = k[key];
  const text = raw === null || raw === undefined ? null : (FORMAT[key] ? FORMAT[key](raw) : raw);
  if (text === null) return '<td class="num missing">–</td>';
  if (key === "anchor") return `<td><span class="dot a-${esc(raw)}"></span>${esc(raw)}</td>`;
  if (TEXT_KEYS.has(key)) return `<td class="${key}" title="${esc(raw)}">${esc(text)}</td>`;
  return `<td class="num">${esc(text)}</td>`;
}

// Missing values sort last in either direction; names sort by their number (k2 < k10).
function compare(a, b) {
  const key = state.key;
  let x = a[key], y = b[key];
  if (x === null || x === undefined) return (y === null || y === undefined) ? a.index - b.index : 1;
  if (y === null || y === undefined) return -1;
  if (key === "name") { x = a.index; y = b.index; }
  const c = typeof x === "string" ? x.localeCompare(y) : x - y;
  return (state.descending ? -c : c) || a.index - b.index;
}

function renderTable() {
  const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
  const rows = KERNELS.filter((k) => words.every((w) => k.search.includes(w))).sort(compare);
  const tbody = document.querySelector("#kernel-table tbody");
  tbody.innerHTML = rows.map((k) =>
    `<tr data-kernel="${esc(k.name)}">${COLUMNS.map((c) => cell(k, c)).join("")}</tr>`).join("");
  document.getElementById("kernel-count").textContent = `${rows.length} of ${KERNELS.length} kernels`;
  document.querySelectorAll("#kernel-table th").forEach((th) => {
    if (th.dataset.key === state.key) th.setAttribute("aria-sort", state.descending ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  });
}

document.querySelectorAll("#kernel-table th").forEach((th) => th.addEventListener("click", () => {
  const key = th.dataset.key;
  if (state.key === key) state.descending = !state.descending;
  else { state.key = key; state.descending = !TEXT_KEYS.has(key); }
  renderTable();
}));
document.getElementById("kernel-filter").addEventListener("input", (e) => {
  state.filter = e.target.value;
  renderTable();
});

// Chunks of per-kernel detail: base64 of zlib-deflated JSON, inflated once each.
const chunks = new Map();
async function inflate(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Response(stream).text();
}
function chunkOf(index) {
  const i = Math.floor(index / DATA.chunk);
  if (!chunks.has(i)) {
    const text = document.getElementById(`chunk-${i}`).textContent;
    chunks.set(i, inflate(text).then(JSON.parse));
  }
  return chunks.get(i);
}

function figure(label, value) {
  return value === null || value === undefined ? "" : `<span>${label} <b>${esc(value)}</b></span>`;
}

async function openKernel(name) {
  const k = BY_NAME.get(name);
  if (!k) return;
  const panel = document.getElementById("detail");
  const body = document.getElementById("detail-body");
  panel.hidden = false;
  panel.dataset.kernel = name;
  panel.classList.remove("loaded");
  body.innerHTML = `<h2>${esc(k.name)} <span class="dot a-${esc(k.anchor)}"></span>${esc(k.label)}</h2><p class="note">inflating…</p>`;
  document.querySelectorAll("#kernel-table tr.selected").forEach((r) => r.classList.remove("selected"));
  const row = document.querySelector(`#kernel-table tr[data-kernel="${CSS.escape(name)}"]`);
  if (row) row.classList.add("selected");
  const d = (await chunkOf(k.index))[name];
  if (panel.dataset.kernel !== name) return; // another kernel was opened meanwhile
  const covers = d.covers.map((c) =>
    `<li>%${c.id} ${esc(c.op)} <a data-scope="${esc(c.scope)}" title="show this layer's kernels">@${esc(c.scope)}</a></li>`).join("");
  body.innerHTML = `
    <h2>${esc(k.name)} <span class="dot a-${esc(k.anchor)}"></span>${esc(k.label)}</h2>
    <div class="figures">${figure("anchor", k.anchor)}${figure("ops", k.ops)}${figure("FLOPs", si(k.flops))}
      ${figure("bytes", si(k.bytes))}${figure("FLOP/B", FORMAT.ai(k.ai))}${figure("predicted µs", FORMAT.predicted(k.predicted))}
      ${figure("measured µs", FORMAT.measured(k.measured))}${figure("registers", k.registers)}${figure("spill B", k.spills)}
      ${figure("occupancy", FORMAT.occupancy(k.occupancy))}</div>
    ${d.schedule ? `<h3>Schedule</h3><p class="schedule"><b>${esc(d.schedule)}</b>${d.schedule_reason ? ` — ${esc(d.schedule_reason)}` : ""}</p>` : ""}
    <h3>Fused body</h3><div class="body-graph">${d.svg}</div>
    <h3>Explanation (egg's rewrites, as algebra)</h3><pre class="explain">${esc(d.explain)}</pre>
    <h3>Original nodes covered: ${d.covers.length}</h3><ul class="covers">${covers}</ul>
    ${d.ptx === null
      ? '<p class="note">No PTX: the compile ran without --emit-ptx.</p>'
      : `<details class="ptx" open><summary>PTX (${(d.ptx.length / 1024).toFixed(0)} KiB, ${k.name}'s launches)</summary><pre class="ptx">${esc(d.ptx)}</pre></details>`}`;
  panel.classList.add("loaded");
}

function closeKernel() {
  const panel = document.getElementById("detail");
  panel.hidden = true;
  delete panel.dataset.kernel;
}

document.addEventListener("click", (e) => {
  const scope = e.target.closest("a[data-scope]");
  if (scope) {
    const input = document.getElementById("kernel-filter");
    input.value = scope.dataset.scope;
    state.filter = input.value;
    renderTable();
    closeKernel();
    document.getElementById("kernels").scrollIntoView();
    return;
  }
  const target = e.target.closest("[data-kernel]");
  if (target && !target.closest("#detail")) openKernel(target.dataset.kernel);
});
document.getElementById("detail-close").addEventListener("click", closeKernel);
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeKernel(); });

const blockSelect = document.getElementById("block-select");
if (blockSelect) {
  blockSelect.addEventListener("change", () => {
    document.querySelectorAll(".block").forEach((b) => { b.hidden = b.id !== `block-${blockSelect.value}`; });
  });
}

renderTable();
