// The station console's page: no framework, no build step, every asset from the module.
// Data is only ever put into the page as text (textContent), never as HTML.
"use strict";

const KEY = "auth-module-console-key";
const $ = (sel) => document.querySelector(sel);
let role = null;
let state = null;
let received = 0;        // performance.now() when `state` arrived (for the countdowns)
let stream = null;       // AbortController of the live stream

// --- talking to the module --------------------------------------------------------------

async function api(method, path, body) {
  const key = localStorage.getItem(KEY);
  const init = { method, headers: { Authorization: "Bearer " + key }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) { logout("Your access key is no longer valid."); throw new Error("401"); }
  return res;
}

async function errorText(res) {
  try { return (await res.json()).error || res.statusText; } catch (e) { return res.statusText; }
}

// The live state: server-sent events read with fetch(), so that the key travels in the
// Authorization header (EventSource cannot send one, and a key in a URL would leak).
async function follow() {
  const controller = new AbortController();
  stream = controller;
  while (stream === controller) {
    try {
      const res = await fetch("/api/v1/events", {
        headers: { Authorization: "Bearer " + localStorage.getItem(KEY) },
        signal: controller.signal, cache: "no-store" });
      if (res.status === 401) { logout("Your access key is no longer valid."); return; }
      if (!res.ok || !res.body) throw new Error(res.statusText);
      setLink(true);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          if (handleEvent(block) === "logout") return;
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    setLink(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function handleEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (name === "logout") { logout("Your access key was revoked or has expired."); return "logout"; }
  if (name === "station" && data.length) {
    state = JSON.parse(data.join("\n"));
    received = performance.now();
    render();
  }
  return name;
}

function setLink(up) {
  const el = $("#link");
  el.textContent = up ? "live" : "offline";
  el.classList.toggle("up", up);
}

// --- logging in and out -------------------------------------------------------------------

async function login(key) {
  localStorage.setItem(KEY, key);
  let res;
  try {
    res = await fetch("/api/v1/me", { headers: { Authorization: "Bearer " + key }, cache: "no-store" });
  } catch (e) {
    $("#login-error").textContent = "The module does not answer.";
    return;
  }
  if (!res.ok) {
    localStorage.removeItem(KEY);
    showLogin(res.status === 401 ? "This key is not valid (unknown, revoked or expired)." : await errorText(res));
    return;
  }
  const me = await res.json();
  role = me.role;
  document.body.dataset.role = role;
  $("#whoami").textContent = me.name + " · " + role;
  $("#whoami").hidden = false;
  $("#logout").hidden = false;
  $("#login").hidden = true;
  $("#app").hidden = false;
  for (const el of document.querySelectorAll("[data-admin]")) el.hidden = role !== "admin";
  follow();
  loadAllowList();
}

function logout(message) {
  localStorage.removeItem(KEY);
  if (stream) stream.abort();
  stream = null;
  role = null;
  state = null;
  delete document.body.dataset.role;
  showLogin(message || "");
}

function showLogin(message) {
  $("#app").hidden = true;
  $("#whoami").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  setLink(false);
}

// --- drawing ----------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function duration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
}

function who(token) {
  if (!token) return "";
  return token.nickname ? token.nickname + " (" + token.masked + ")" : token.masked;
}

function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

function render() {
  if (!state) return;
  $("#station-name").textContent = state.station.module_id + (state.station.ready ? "" : " (starting)");
  $("#demo").hidden = !(state.station.demo_controls && role === "admin");
  renderEvses();
  renderRecent();
  renderReservations();
  renderHealth();
}

function renderEvses() {
  const box = $("#evses");
  const elapsed = (performance.now() - received) / 1000;
  box.replaceChildren(...state.evses.map((e) => {
    const card = el("article", { class: "evse s-" + e.state, "data-evse": e.id },
      el("h3", null, "EVSE " + e.id, " ", el("span", { class: "state" }, e.state_text)),
      el("p", { class: "since", "data-base": e.seconds_in_state, "data-dir": 1 }, "for " + duration(e.seconds_in_state + elapsed)));
    if (e.token) card.append(el("p", { class: "token" }, "Card: " + who(e.token)));
    if (e.pending) {
      card.append(el("p", { class: "pending" }, "Waiting for " + e.pending.waiting_for +
        (e.pending.token && !e.token ? " (" + who(e.pending.token) + ")" : ""),
        e.pending.remaining_s === null ? null : el("span", { class: "left", "data-base": e.pending.remaining_s, "data-dir": -1 })));
    }
    if (e.replug_required) card.append(el("p", { class: "pending" }, "Unplug and plug in again"));
    if (e.reservation_id !== null) card.append(el("p", null, "Reservation " + e.reservation_id));
    card.append(el("ul", { class: "connectors" }, ...e.connectors.map((c) =>
      el("li", null, "Connector " + c.id + " · " + c.type + " · " + c.state.toLowerCase().replace("_", " ")))));
    if (role === "admin") {
      const row = el("div", { class: "row" });
      if (e.token || e.pending) row.append(el("button", { type: "button", class: "quiet withdraw",
        onclick: () => act("POST", "/api/v1/evses/" + e.id + "/withdraw") }, "Withdraw authorization"));
      if (state.station.demo_controls) {
        row.append(el("button", { type: "button", class: "quiet plug-in",
          onclick: () => act("POST", "/api/v1/demo/evses/" + e.id + "/plug-in") }, "Plug car in"));
        row.append(el("button", { type: "button", class: "quiet plug-out",
          onclick: () => act("POST", "/api/v1/demo/evses/" + e.id + "/plug-out") }, "Unplug"));
      }
      if (row.childElementCount) card.append(row);
    }
    return card;
  }));
  tick();
}

// Once a second: the times in state and the countdowns move on, without redrawing.
function tick() {
  const elapsed = (performance.now() - received) / 1000;
  for (const node of document.querySelectorAll("#evses [data-base]")) {
    const base = Number(node.dataset.base);
    node.textContent = node.dataset.dir === "1" ? "for " + duration(base + elapsed)
      : " · " + duration(base - elapsed) + " left";
  }
}

function renderRecent() {
  const list = $("#recent");
  $("#recent-empty").hidden = state.recent_tokens.length > 0;
  list.replaceChildren(...state.recent_tokens.map((t) => {
    const item = el("li", { class: "st-" + t.status, "data-ref": t.ref },
      el("span", { class: "time" }, clock(t.time)),
      el("span", { class: "token" }, t.nickname ? t.nickname + " (" + t.token + ")" : t.token),
      el("span", { class: "statuses" }, t.statuses.join(" → ")),
      t.evse ? el("span", { class: "evse-no" }, "EVSE " + t.evse) : null,
      t.reason ? el("span", { class: "reason" }, t.reason) : null);
    if (role === "admin" && t.unknown) {
      item.append(el("button", { type: "button", class: "quiet add-card",
        onclick: () => addRecent(t.ref) }, "Add to allow list"));
    }
    return item;
  }));
}

function renderReservations() {
  $("#reservations-empty").hidden = state.reservations.length > 0;
  $("#reservations").replaceChildren(...state.reservations.map((r) => el("li", null,
    "#" + r.reservation_id + " · " + (r.evse_id ? "EVSE " + r.evse_id : "any EVSE") + " · " +
    who(r.token) + " · until " + new Date(r.expiry_time).toLocaleString(),
    role === "admin" ? el("button", { type: "button", class: "quiet",
      onclick: () => act("DELETE", "/api/v1/reservations/" + r.reservation_id) }, "Cancel") : null)));
}

function renderHealth() {
  const items = [...state.validators.map((v) => ["Validator", v]), ...state.readers.map((r) => ["Reader", r])];
  $("#health").replaceChildren(...items.map(([kind, v]) => el("li", { class: "h-" + v.health },
    el("span", { class: "dot" }), kind + " " + v.name + ": " + v.health +
    (v.cache_size !== undefined ? " · cache " + v.cache_size : "") + (v.detail ? " · " + v.detail : ""))));
}

async function act(method, path, body) {
  const res = await api(method, path, body);
  if (!res.ok) alert(await errorText(res));
  return res;
}

// --- the allow list -----------------------------------------------------------------------

async function loadAllowList() {
  const res = await api("GET", "/api/v1/allow-list");
  const body = $("#al-table tbody");
  if (res.status === 409) {
    $("#al-none").hidden = false;
    $("#al-editor").hidden = true;
    body.replaceChildren();
    return;
  }
  if (!res.ok) return;
  const data = await res.json();
  $("#al-file").textContent = data.file;
  body.replaceChildren(...data.tokens.map((t) => el("tr", { "data-token": t.id_token },
    el("td", null, t.id_token), el("td", null, t.nickname || ""), el("td", null, t.status || "Accepted"),
    el("td", null, t.expiry || ""), el("td", null, (t.evse_ids || []).join(" ")),
    el("td", null, t.parent_id_token || ""),
    el("td", null, role === "admin" ? el("span", { class: "row" },
      el("button", { type: "button", class: "quiet", onclick: () => fillForm(t) }, "Edit"),
      el("button", { type: "button", class: "quiet revoke",
        onclick: () => revokeCard(t.id_token) }, "Remove")) : ""))));
}

function fillForm(t) {
  $("#al-id").value = t.id_token || "";
  $("#al-nickname").value = t.nickname || "";
  $("#al-status").value = t.status || "Accepted";
  $("#al-expiry").value = t.expiry || "";
  $("#al-parent").value = t.parent_id_token || "";
  $("#al-evses").value = (t.evse_ids || []).join(" ");
  showTab("cards");
  $("#al-nickname").focus();
}

async function saveCard(ev) {
  ev.preventDefault();
  const id = $("#al-id").value.trim();
  const entry = { status: $("#al-status").value, nickname: $("#al-nickname").value.trim() || null,
    expiry: $("#al-expiry").value.trim() || null, parent_id_token: $("#al-parent").value.trim() || null,
    evse_ids: $("#al-evses").value.trim() ? $("#al-evses").value.trim().split(/[\s,;]+/).map(Number) : null };
  const res = await api("PUT", "/api/v1/allow-list/" + encodeURIComponent(id), entry);
  $("#al-message").textContent = res.ok ? "Saved: " + id + " counts from the next swipe." : await errorText(res);
  if (res.ok) loadAllowList();
}

async function revokeCard(id) {
  if (!confirm("Remove " + id + " from the allow list?")) return;
  const res = await act("DELETE", "/api/v1/allow-list/" + encodeURIComponent(id));
  if (res.ok) loadAllowList();
}

async function registerNext() {
  const msg = $("#al-message");
  msg.textContent = "Present the card at the reader now (60 s)…";
  $("#al-register").disabled = true;
  try {
    const res = await api("POST", "/api/v1/allow-list/register-next");
    if (!res.ok) { msg.textContent = await errorText(res); return; }
    const got = await res.json();
    if (!got.id_token) { msg.textContent = "No card was presented."; return; }
    $("#al-id").value = got.id_token;
    msg.textContent = got.known ? "This card is in the list already; edit it below." : "Card read: give it a nickname and save.";
    $("#al-nickname").focus();
  } finally {
    $("#al-register").disabled = false;
  }
}

async function addRecent(ref) {
  const res = await api("GET", "/api/v1/recent-tokens/" + encodeURIComponent(ref));
  if (!res.ok) { alert(await errorText(res)); return; }
  fillForm({ id_token: (await res.json()).id_token, status: "Accepted" });
}

// --- history and keys -----------------------------------------------------------------------

async function loadHistory() {
  const res = await api("GET", "/api/v1/history");
  if (!res.ok) return;
  const cards = (await res.json()).cards;
  const box = $("#history");
  if (!cards.length) { box.replaceChildren(el("p", { class: "hint" }, "No charging session yet.")); return; }
  box.replaceChildren(...cards.map((c) => el("details", { open: "" },
    el("summary", null, (c.nickname ? c.nickname + " (" + c.token + ")" : c.token) + " · " +
      c.sessions.length + " session(s) · " + energy(c.energy_wh)),
    el("table", null, el("tbody", null, ...c.sessions.map((s) => el("tr", null,
      el("td", null, "EVSE " + s.evse), el("td", null, new Date(s.start).toLocaleString()),
      el("td", null, s.end ? new Date(s.end).toLocaleString() : "charging"),
      el("td", { class: "energy" }, s.energy_wh === null ? "" : energy(s.energy_wh)))))))));
}

function energy(wh) {
  return wh < 1000 ? Math.round(wh) + " Wh" : (wh / 1000).toFixed(2) + " kWh";
}

async function exportCsv() {
  const res = await api("GET", "/api/v1/history.csv");
  if (!res.ok) return;
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: "card-history.csv" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function loadKeys() {
  const res = await api("GET", "/api/v1/keys");
  if (!res.ok) return;
  const keys = (await res.json()).keys;
  $("#keys-table tbody").replaceChildren(...keys.map((k) => el("tr", { "data-key": k.name },
    el("td", null, k.name), el("td", null, k.role), el("td", null, k.created),
    el("td", null, k.expires || "never"), el("td", null, k.last_used || "never"),
    el("td", null, el("button", { type: "button", class: "quiet revoke",
      onclick: () => revokeKey(k.name) }, "Revoke")))));
}

async function createKey(ev) {
  ev.preventDefault();
  const res = await api("POST", "/api/v1/keys", { name: $("#key-name").value.trim(),
    role: $("#key-role").value, expires: $("#key-expires").value.trim() || null });
  if (!res.ok) { $("#key-message").textContent = await errorText(res); return; }
  $("#key-message").textContent = "";
  $("#key-new-value").textContent = (await res.json()).key;
  $("#key-new").hidden = false;
  $("#key-form").reset();
  loadKeys();
}

async function revokeKey(name) {
  if (!confirm("Revoke the key " + name + "? Whoever uses it is logged out at once.")) return;
  const res = await act("DELETE", "/api/v1/keys/" + encodeURIComponent(name));
  if (res.ok) loadKeys();
}

// --- wiring -------------------------------------------------------------------------------

function showTab(name) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("on", b.dataset.tab === name);
  for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== "tab-" + name;
  if (name === "cards") loadAllowList();
  if (name === "history") loadHistory();
  if (name === "keys") loadKeys();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login($("#key").value.trim()); $("#key").value = ""; });
  $("#logout").addEventListener("click", () => logout(""));
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#al-form").addEventListener("submit", saveCard);
  $("#al-register").addEventListener("click", registerNext);
  $("#al-clear").addEventListener("click", () => { $("#al-form").reset(); $("#al-message").textContent = ""; });
  $("#csv").addEventListener("click", exportCsv);
  $("#key-form").addEventListener("submit", createKey);
  $("#demo-swipe").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("#demo-token").value.trim();
    if (id) act("POST", "/api/v1/demo/swipe", { id_token: id });
  });
  setInterval(() => { if (state) tick(); }, 1000);
  const key = localStorage.getItem(KEY);
  if (key) login(key); else showLogin("");
});
