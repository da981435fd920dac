// Supervisor page: the ACD's real-time snapshot, refreshed every two seconds.
"use strict";
const $ = (id) => document.getElementById(id);

function cell(text) { const td = document.createElement("td"); td.textContent = text == null ? "" : String(text); return td; }

function render(snap) {
  const connected = new Set(snap.connected || []);
  const rows = Object.entries(snap.agents || {}).sort().map(([id, a]) => {
    const tr = document.createElement("tr");
    tr.append(cell(a.name ? `${id} ${a.name}` : id), cell(a.state), cell(a.reason), cell(a.call_id), cell(connected.has(id) ? "yes" : "no"));
    return tr;
  });
  $("agents").replaceChildren(...rows);
  const queues = Object.entries(snap.queues || {});
  const keys = [...new Set(queues.flatMap(([, q]) => Object.keys(q)))].filter((k) => typeof queues[0][1][k] !== "object" || queues[0][1][k] === null);
  const head = document.createElement("tr");
  head.append(...["Queue", ...keys].map((k) => { const th = document.createElement("th"); th.textContent = k; return th; }));
  $("queues-head").replaceChildren(head);
  $("queues").replaceChildren(...queues.map(([name, q]) => {
    const tr = document.createElement("tr");
    tr.append(cell(name), ...keys.map((k) => cell(typeof q[k] === "number" ? Math.round(q[k] * 10) / 10 : q[k])));
    return tr;
  }));
  $("updated").textContent = new Date().toLocaleTimeString();
}

async function refresh() {
  try {
    const res = await fetch("/api/supervisor/snapshot", { credentials: "same-origin" });
    if (res.status === 401) { location.href = "/"; return; }
    const data = await res.json();
    if (!res.ok) throw new Error(data.error || res.statusText);
    $("error").textContent = "";
    render(data);
  } catch (e) {
    $("error").textContent = `Snapshot unavailable: ${e.message}`;
  }
}

refresh();
setInterval(refresh, 2000);
