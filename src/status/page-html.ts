/**
 * The status page's HTML and script: it polls `status.json` every second and draws the
 * tables; a namespace picker reloads it for another namespace (`?namespace=`).
 *
 * @module
 * @internal
 */

/** The page, with waits of at least `longWaitMs` highlighted. */
export function statusPageHtml(longWaitMs: number): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Baton status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.5rem}
table{border-collapse:collapse;min-width:40rem}th,td{text-align:left;padding:.25rem .75rem;border-bottom:1px solid #ddd}
th{background:#f4f4f4}tr.waiter{color:#a15c00}td.long{background:#ffe1e1;color:#a00;font-weight:bold}
.muted{color:#777}code{font-size:.9em}label{margin-left:1rem;font-size:.9rem}
</style></head><body data-long-wait-ms="${longWaitMs}">
<h1>Baton <span class="muted" id="meta"></span>
<label>namespace <select id="namespace"></select></label></h1>
<div id="content"><p class="muted">loading...</p></div>
<script>
const LONG = Number(document.body.dataset.longWaitMs);
const params = new URLSearchParams(location.search);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const dur = (ms) => ms < 1000 ? ms + " ms" : ms < 60000 ? (ms / 1000).toFixed(1) + " s" : Math.floor(ms / 60000) + " min " + Math.floor(ms % 60000 / 1000) + " s";
const td = (v, cls) => "<td" + (cls ? ' class="' + cls + '"' : "") + ">" + v + "</td>";
const waited = (ms) => td(dur(ms), ms >= LONG ? "long" : "");
const proc = (m) => m.process ? td(m.process.pid) + td(esc(m.process.host)) + td("<code>" + esc(m.process.command || "") + "</code>") : td("") + td("") + td("");
const member = (m) => td(esc(m.memberId));
function table(head, rows) {
  if (!rows.length) return '<p class="muted">none</p>';
  return "<table><tr>" + head.map((h) => "<th>" + h + "</th>").join("") + "</tr>" + rows.join("") + "</table>";
}
function locks(list, permits) {
  const rows = [];
  for (const l of list) {
    const name = td("<code>" + esc(l.name) + "</code>") + (permits ? td(l.holders.length + " / " + l.limit) : "");
    for (const h of l.holders) rows.push('<tr class="holder">' + name + td("holds") + td(h.mode) + td(dur(h.heldMs)) + td("") + td(h.token) + proc(h) + member(h) + "</tr>");
    for (const w of l.waiters) rows.push('<tr class="waiter">' + name + td("waits") + td(w.mode) + td("") + waited(w.waitingMs) + td("") + proc(w) + member(w) + "</tr>");
  }
  return table(["name"].concat(permits ? ["permits used"] : [], ["state", "mode", "held for", "waiting for", "token", "pid", "host", "command", "member"]), rows);
}
function elections(s) {
  const rows = [];
  for (const e of s.elections) {
    const l = e.leader;
    rows.push('<tr class="leader">' + td("<code>" + esc(e.id) + "</code>") + (l ? td("leads") + td(dur(Math.max(0, s.at - l.since))) + td("") + td("<code>" + esc(JSON.stringify(l.value)) + "</code>") + proc(l) + member(l) : td('<span class="muted">no leader</span>') + td("") + td("") + td("") + proc({}) + td("")) + "</tr>");
    for (const c of e.candidates) rows.push('<tr class="waiter">' + td("<code>" + esc(e.id) + "</code>") + td("candidate") + td("") + waited(c.waitingMs) + td("") + proc(c) + member(c) + "</tr>");
  }
  return table(["election", "state", "leads for", "waiting for", "value", "pid", "host", "command", "member"], rows);
}
function takeovers(s) {
  const rows = (s.takeovers || []).map((t) => '<tr class="takeover">' + td("<code>" + esc(t.name) + "</code>") + td(esc(t.state)) + td(esc(t.memberId)) + td(t.token) + td(t.delayedUntil !== null && t.delayedUntil > s.at ? "delayed " + dur(t.delayedUntil - s.at) + " more" : (t.lockDelayMs ? "lock delay " + dur(t.lockDelayMs) : "")) + td("<code>" + esc(JSON.stringify(t.fenceInfo)) + "</code>") + "</tr>");
  return table(["lock", "state", "member", "token", "delay", "fence info"], rows);
}
async function namespaces() {
  try {
    const n = await (await fetch("namespaces.json", { cache: "no-store" })).json();
    const shown = params.has("namespace") ? params.get("namespace") : n.current;
    const all = Array.from(new Set(n.namespaces.concat([n.current, shown]))).sort();
    const select = document.getElementById("namespace");
    select.innerHTML = all.map((ns) => '<option value="' + esc(ns) + '"' + (ns === shown ? " selected" : "") + ">" + (ns === "" ? "(default)" : esc(ns)) + "</option>").join("");
    select.disabled = !n.switchable;
    select.onchange = () => { params.set("namespace", select.value); location.search = params.toString(); };
  } catch (error) {
    document.getElementById("namespace").disabled = true;
  }
}
async function refresh() {
  try {
    const query = params.has("namespace") ? "?namespace=" + encodeURIComponent(params.get("namespace")) : "";
    const response = await fetch("status.json" + query, { cache: "no-store" });
    if (!response.ok) throw new Error(await response.text());
    const s = await response.json();
    document.getElementById("meta").textContent = "backend " + s.backend + (s.namespace ? ", namespace " + s.namespace : "") + ", " + new Date(s.at).toLocaleTimeString();
    const groups = s.groups.flatMap((g) => g.members.map((m) => "<tr>" + td("<code>" + esc(g.id) + "</code>") + td(esc(m.memberId)) + td(dur(Math.max(0, s.at - m.joinedAt))) + td("<code>" + esc(JSON.stringify(m.capabilities)) + "</code>") + "</tr>"));
    document.getElementById("content").innerHTML =
      "<h2>Locks</h2>" + locks(s.locks, false) + "<h2>Semaphores</h2>" + locks(s.semaphores, true) +
      "<h2>Elections</h2>" + elections(s) +
      "<h2>Groups</h2>" + table(["group", "member", "for", "capabilities"], groups) +
      "<h2>Takeover records</h2>" + takeovers(s);
  } catch (error) {
    document.getElementById("meta").textContent = "(update failed: " + error.message + ")";
  }
}
namespaces();
refresh();
setInterval(refresh, 1000);
</script></body></html>`;
}
