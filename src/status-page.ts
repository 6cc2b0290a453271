/**
 * A status page: who holds what, who waits and since when, as HTML (refreshing itself) and
 * as the stable JSON of `baton status --json`. Mount it in an existing HTTP server, or run
 * `baton status --serve 8080`.
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { inspectionToJson } from "./status/json.js";
import { formatStatus } from "./status/text.js";
import type { Coordinator } from "./core/coordinator.js";

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Baton status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.5rem}
table{border-collapse:collapse;min-width:40rem}th,td{text-align:left;padding:.25rem .75rem;border-bottom:1px solid #ddd}
th{background:#f4f4f4}.waits{color:#a15c00}.muted{color:#777}code{font-size:.9em}
</style></head><body>
<h1>Baton <span class="muted" id="meta"></span></h1>
<div id="content"><p class="muted">loading...</p></div>
<script>
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const dur = (ms) => ms < 1000 ? ms + " ms" : ms < 60000 ? (ms / 1000).toFixed(1) + " s" : Math.floor(ms / 60000) + " min " + Math.floor(ms % 60000 / 1000) + " s";
function table(head, rows) {
  if (!rows.length) return '<p class="muted">none</p>';
  return "<table><tr>" + head.map((h) => "<th>" + h + "</th>").join("") + "</tr>" + rows.join("") + "</table>";
}
function locks(list, withLimit) {
  const rows = [];
  for (const l of list) {
    for (const h of l.holders) rows.push("<tr><td><code>" + esc(l.name) + "</code></td>" + (withLimit ? "<td>" + l.limit + "</td>" : "") + "<td>holds</td><td>" + h.mode + "</td><td>" + esc(h.memberId) + "</td><td>" + dur(h.heldMs) + "</td><td>" + h.token + "</td></tr>");
    for (const w of l.waiters) rows.push('<tr class="waits"><td><code>' + esc(l.name) + "</code></td>" + (withLimit ? "<td>" + l.limit + "</td>" : "") + "<td>waits</td><td>" + w.mode + "</td><td>" + esc(w.memberId) + "</td><td>" + dur(w.waitingMs) + "</td><td></td></tr>");
  }
  return table(["name"].concat(withLimit ? ["limit"] : [], ["state", "mode", "member", "for", "token"]), rows);
}
async function refresh() {
  try {
    const s = await (await fetch("status.json", { cache: "no-store" })).json();
    document.getElementById("meta").textContent = "backend " + s.backend + (s.namespace ? ", namespace " + s.namespace : "") + ", " + new Date(s.at).toLocaleTimeString();
    const groups = s.groups.flatMap((g) => g.members.map((m) => "<tr><td><code>" + esc(g.id) + "</code></td><td>" + esc(m.memberId) + "</td><td>" + dur(Math.max(0, s.at - m.joinedAt)) + "</td><td><code>" + esc(JSON.stringify(m.capabilities)) + "</code></td></tr>"));
    const elections = s.elections.map((e) => "<tr><td><code>" + esc(e.id) + "</code></td><td>" + (e.leader ? esc(e.leader.memberId) : '<span class="muted">none</span>') + "</td><td>" + (e.leader ? "<code>" + esc(JSON.stringify(e.leader.value)) + "</code>" : "") + "</td><td>" + e.candidates.length + "</td></tr>");
    document.getElementById("content").innerHTML =
      "<h2>Locks</h2>" + locks(s.locks, false) + "<h2>Semaphores</h2>" + locks(s.semaphores, true) +
      "<h2>Groups</h2>" + table(["group", "member", "for", "capabilities"], groups) +
      "<h2>Elections</h2>" + table(["election", "leader", "value", "candidates"], elections);
  } catch (error) {
    document.getElementById("meta").textContent = "(update failed: " + error + ")";
  }
}
refresh();
setInterval(refresh, 1000);
</script></body></html>`;

/**
 * An HTTP request handler serving Baton's status for `coordinator`'s namespace: `/` (or
 * any path ending in `/`) is an HTML page that refreshes itself every second,
 * `status.json` the stable JSON of `baton status --json`, `status.txt` the text table.
 * Read-only. Answers 503 with the error when the backend cannot be inspected, 404 otherwise.
 */
export function statusPage(coordinator: Coordinator): (request: IncomingMessage, response: ServerResponse) => void {
  return (request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    if (path.endsWith("/")) {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
      response.end(PAGE);
      return;
    }
    const json = path.endsWith("/status.json");
    if (!json && !path.endsWith("/status.txt")) {
      response.writeHead(404, { "content-type": "text/plain" });
      response.end("not found\n");
      return;
    }
    coordinator.inspect().then(
      (info) => {
        response.writeHead(200, {
          "content-type": json ? "application/json" : "text/plain; charset=utf-8",
          "cache-control": "no-store",
        });
        response.end(json ? JSON.stringify(inspectionToJson(info)) : formatStatus(info));
      },
      (error: unknown) => {
        response.writeHead(503, { "content-type": "text/plain" });
        response.end(`${error instanceof Error ? error.message : String(error)}\n`);
      },
    );
  };
}
