// ctiserver agent page: sign in, agent state, live screen-pops over a WebSocket.
// No framework and no build step. Everything from the server is inserted as text.
"use strict";

const $ = (id) => document.getElementById(id);
const STATE_LABELS = {
  logged_out: "Logged out", ready: "Ready", not_ready: "Not ready",
  offered: "Ringing", on_call: "On call", wrap_up: "Wrap-up",
};
let me = null;        // the signed-in user
let pop = null;       // the pop on screen
let cardTemplate = null;
let socket = null;
let backoff = 500;
let reconnectTimer = null;

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = {};
  try { data = await res.json(); } catch (e) { /* empty body */ }
  if (!res.ok) {
    const err = new Error(data.error || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

// ------------------------------------------------------------ rendering

function field(obj, path) {
  if (path === ".") return obj;
  return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

function present(v) {
  if (v == null || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "object") return Object.keys(v).length > 0;
  return true;
}

function format(value, kind) {
  if (value == null || value === "") return "";
  if (kind === "duration") {
    const s = Math.max(0, Math.round(Number(value)));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }
  if (kind === "datetime") {
    const d = new Date(value);
    return isNaN(d) ? String(value) : d.toLocaleString();
  }
  return String(value);
}

function fill(root, data) {
  // fields first; lists last, so their fresh items are only filled with their own item
  root.querySelectorAll("[data-show-if]").forEach((el) => {
    el.hidden = !present(field(data, el.dataset.showIf));
  });
  root.querySelectorAll("[data-hide-if]").forEach((el) => {
    el.hidden = present(field(data, el.dataset.hideIf));
  });
  root.querySelectorAll("[data-field]").forEach((el) => {
    el.textContent = format(field(data, el.dataset.field), el.dataset.format);
  });
  root.querySelectorAll("[data-href]").forEach((a) => {
    const url = field(data, a.dataset.href);
    if (url && /^https?:\/\//i.test(url)) a.href = url; else a.removeAttribute("href");
  });
  root.querySelectorAll("[data-map]").forEach((dl) => {
    dl.replaceChildren();
    Object.entries(field(data, dl.dataset.map) || {}).forEach(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = typeof v === "object" ? JSON.stringify(v) : String(v);
      dl.append(dt, dd);
    });
  });
  root.querySelectorAll("[data-list]").forEach((list) => {
    const tpl = list.querySelector(":scope > template");
    list.querySelectorAll(":scope > :not(template)").forEach((n) => n.remove());
    (field(data, list.dataset.list) || []).forEach((item) => {
      const node = tpl.content.cloneNode(true);
      fill(node, item);
      list.appendChild(node);
    });
  });
}

function showPop(data) {
  pop = data;
  if (!data) {
    $("pop").hidden = true;
    $("idle").hidden = false;
    return;
  }
  const node = cardTemplate.content.cloneNode(true);
  fill(node, data);
  $("card").replaceChildren(node);
  $("partial").hidden = !data.partial;
  const unknown = !data.known && !data.partial;
  $("unknown-form").hidden = !unknown;
  if (unknown && !$("new-number").value) $("new-number").value = data.caller_id || "";
  $("pop").hidden = false;
  $("idle").hidden = true;
  $("pop").dataset.callId = data.call_id;
}

function newCall(data) {
  const isNew = !pop || pop.call_id !== data.call_id;
  if (isNew) {
    $("dispo-form").reset();
    $("unknown-form").reset();
    $("dispo-status").textContent = "";
    $("unknown-error").textContent = "";
  }
  showPop(data);
}

function showState(state, reason) {
  const el = $("state");
  el.hidden = false;
  el.className = `state state-${state}`;
  el.textContent = (STATE_LABELS[state] || state) + (state === "not_ready" && reason ? ` (${reason})` : "");
  $("btn-login").hidden = state !== "logged_out";
  $("btn-ready").disabled = state === "ready" || state === "logged_out";
  $("btn-pause").disabled = state === "not_ready" || state === "logged_out";
  $("btn-logout").textContent = state === "logged_out" ? "Sign out" : "Log out";
}

function showLink(up) {
  const el = $("link");
  el.hidden = false;
  el.textContent = up ? "connected" : "reconnecting…";
  el.className = up ? "link up" : "link down";
}

function applyView(view) {
  showState(view.state || "logged_out", view.reason);
  if (view.pop) newCall(view.pop); else showPop(null);
}

// ------------------------------------------------------------ live events

function connect() {
  clearTimeout(reconnectTimer);
  const proto = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${proto}://${location.host}/ws`);
  socket.onopen = () => { backoff = 500; showLink(true); };
  socket.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    const d = msg.data || {};
    switch (msg.kind) {
      case "hello": applyView(d); break;
      case "pop.offered":
        newCall(d);
        socket.send(JSON.stringify({ type: "ack", call_id: d.call_id }));
        break;
      case "pop.answered":
        if (pop && pop.call_id === d.call_id) showPop({ ...pop, stage: "answered", answered_at: d.answered_at });
        break;
      case "call.ended":
        if (pop && pop.call_id === d.call_id) {
          showPop({ ...pop, stage: "ended", talk: d.talk });
          $("disposition").focus();
        }
        break;
      case "agent.state":
        showState(d.state, d.reason);
        // the offer was withdrawn (rang out, caller hung up, taken by another agent): no
        // stale "Offered" card; answered calls keep theirs for the disposition
        if (pop && pop.stage === "offered" && ["ready", "not_ready", "logged_out"].includes(d.state)) {
          showPop(null);
        }
        break;
    }
  };
  socket.onclose = (ev) => {
    socket = null;
    if (!me) return;
    showLink(false);
    if (ev.code === 1008 || ev.code === 4401) { signedOut(); return; }
    reconnectTimer = setTimeout(async () => {
      try { await api("GET", "/api/session"); } catch (e) { if (e.status === 401) { signedOut(); return; } }
      connect();
    }, backoff);
    backoff = Math.min(backoff * 2, 10000);
  };
}

// ------------------------------------------------------------ actions

function signedOut() {
  me = null;
  if (socket) socket.close();
  $("agent").hidden = true;
  $("state").hidden = true;
  $("link").hidden = true;
  $("who").textContent = "";
  $("signin").hidden = false;
  $("username").focus();
}

async function signedIn(user) {
  me = user;
  $("who").textContent = user.agent_id ? `Agent ${user.agent_id} (${user.username})` : user.username;
  $("signin").hidden = true;
  if (!user.agent_id) {  // supervisors and admins
    location.href = "/supervisor";
    return;
  }
  $("agent").hidden = false;
  applyView(await api("GET", "/api/agent/current"));
  connect();
}

async function command(action, body) {
  $("control-error").textContent = "";
  try {
    const view = await api("POST", `/api/agent/${action}`, body);
    showState(view.state, view.reason);
  } catch (e) {
    $("control-error").textContent = e.message;
  }
}

async function start() {
  const res = await fetch("/static/templates/card.html", { cache: "no-cache" });
  const holder = document.createElement("div");
  holder.innerHTML = await res.text();  // the admin's own template file, not call data
  cardTemplate = holder.querySelector("#card-template");

  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("signin-error").textContent = "";
    try {
      const data = await api("POST", "/api/session", { username: $("username").value, password: $("password").value });
      $("password").value = "";
      await signedIn(data.user);
      if (data.user.agent_id) await command("login");
    } catch (e) {
      $("signin-error").textContent = e.status === 401 ? "Wrong user or password." : e.message;
    }
  });
  $("btn-login").addEventListener("click", () => command("login"));
  $("btn-ready").addEventListener("click", () => command("ready"));
  $("btn-pause").addEventListener("click", () => command("pause", { reason: $("pause-reason").value }));
  $("btn-logout").addEventListener("click", async () => {
    if ($("state").classList.contains("state-logged_out")) {
      await api("DELETE", "/api/session").catch(() => {});
      signedOut();
    } else {
      await command("logout");
    }
  });
  $("dispo-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!pop) return;
    const status = $("dispo-status");
    status.textContent = "Saving…";
    try {
      const r = await api("POST", `/api/interactions/${encodeURIComponent(pop.call_id)}/disposition`,
        { disposition: $("disposition").value, notes: $("notes").value });
      status.textContent = r.stored ? "Saved." : "Saved; it will reach the database when it is back.";
      if (pop.stage === "ended") setTimeout(() => { if (pop && pop.stage === "ended") showPop(null); }, 1500);
    } catch (e) {
      status.textContent = `Not saved: ${e.message}`;
    }
  });
  $("unknown-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("unknown-error").textContent = "";
    try {
      const r = await api("POST", "/api/customers", {
        name: $("new-name").value, numbers: [$("new-number").value], tier: $("new-tier").value,
        email: $("new-email").value, notes: $("new-notes").value, call_id: pop && pop.call_id,
      });
      showPop({ ...pop, known: true, customer: r.customer });
    } catch (e) {
      $("unknown-error").textContent = e.message;
    }
  });

  try {
    const data = await api("GET", "/api/session");
    await signedIn(data.user);
  } catch (e) {
    signedOut();
  }
}

document.addEventListener("DOMContentLoaded", start);
