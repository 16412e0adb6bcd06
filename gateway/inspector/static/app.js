// koordi-realtime inspector: one socket.io-client connection, as Koordi's
// front end makes it, plus the service's own numbers. No framework; every
// payload is rendered with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  return n;
};

const MAX_EVENTS = 500;
const OFFSET_RE = /^[0-9A-F]{16}-(?:[0-9A-F]{8}|[0-9A-F]{4})$/;
const PALETTE = ["#5b9dff", "#3fcf8e", "#f5b84b", "#f472b6", "#b48cff", "#22d3ee"];

const TEST_EVENT = "inspector:test";

const state = {
  config: { demo_users: [], calendars: [], mode: "", rooms: false, emit: false },
  socket: null,
  token: "",
  me: null,            // {id, email, name}
  rooms: new Set(),
  selected: null,      // the room a test event goes to
  paused: false,
  pending: [],         // events held while paused
  count: 0,
  activeUser: null,
  unfolded: false,     // payloads are folded unless "Unfold all"
  calendars: new Map(), // id -> {name, color}: from the config, then the stream
  users: new Map(),     // id -> {name, email}: likewise
};

// ---------- names ----------
// Names start from the page's config and follow the stream: member:added
// and member:removed carry the user's name and email, every calendar event
// its calendar's name, so a rename shows without a reload.
const calendarName = (id) => state.calendars.get(id)?.name;
const calendarColor = (id) => state.calendars.get(id)?.color;
const userName = (id) => state.users.get(id)?.name;

function roomLabel(room) {
  const [kind, id] = room.split(/:(.*)/s);
  const mine = kind === "user" && state.me && id === state.me.id;
  const name = kind === "calendar" ? calendarName(id) : kind === "user" ? userName(id) || (mine ? state.me.name || state.me.email : undefined) : undefined;
  return { kind, id, name };
}

// ---------- event classification ----------
const KINDS = {
  "event:created": "created", "event:updated": "updated", "event:deleted": "deleted",
  "event:assigned": "assigned", "event:unassigned": "unassigned",
  "calendar:synced": "synced", "calendar:sync_failed": "sync_failed", "calendar:updated": "calendar", "calendar:deleted": "deleted",
  "member:added": "member_added", "member:removed": "member_removed", "invitation:received": "invitation",
  "conflict:resolved": "conflict", "sync:reset": "reset", "error": "error", [TEST_EVENT]: "test",
};

// The wire carries no room: Koordi's payloads name their calendar, so the
// room is inferred the way the server addressed it (DESIGN.md section 4).
function inferRoom(event, data) {
  if (!data || typeof data !== "object") return null;
  if (event === TEST_EVENT && typeof data.room === "string") return data.room;
  if (event === "invitation:received" || event === "sync:reset" || event === "error") return state.me ? `user:${state.me.id}` : null;
  if (event === "member:removed" && state.me && data.user_id === state.me.id) return `user:${state.me.id}`;
  if (data.event_calendar_id) return `calendar:${data.event_calendar_id}`;
  if (data.calendar_id) return `calendar:${data.calendar_id}`;
  return null;
}

function summary(event, d) {
  if (!d || typeof d !== "object") return "";
  const who = (id) => (id ? userName(id) || id.slice(0, 8) : "nobody");
  switch (event) {
    case "event:assigned": return `${d.event_title} → ${who(d.assigned_to_user_id)}${d.previous_assigned_to_user_id ? ` (was ${who(d.previous_assigned_to_user_id)})` : ""}`;
    case "event:unassigned": return `${d.event_title} → unassigned${d.previous_assigned_to_user_id ? ` (was ${who(d.previous_assigned_to_user_id)})` : ""}`;
    case "event:created": case "event:deleted": return d.event_title || "";
    case "event:updated": return `${d.event_title}: ${(d.changed || []).join(", ")}`;
    case "calendar:synced": return `${d.calendar_name}: +${d.events_created} ~${d.events_updated} −${d.events_deleted}`;
    case "calendar:sync_failed": return `${d.calendar_name}: ${d.error}`;
    case "calendar:updated": return `${d.calendar_name}: ${(d.changed || []).join(", ")}`;
    case "calendar:deleted": return d.calendar_name || "";
    case "member:added": case "member:removed": return `${d.user_name} <${d.user_email}>`;
    case "invitation:received": return `${d.inviter_name} invited ${d.invited_email} to ${d.calendar_name}`;
    case "conflict:resolved": return d.reason || "";
    case "sync:reset": return `refetch: ${d.reason}`;
    case "error": return `${d.error_code}: ${d.message}`;
    case TEST_EVENT: return `${d.message} by ${who(d.by)}`;
  }
  return "";
}

// ---------- JSON rendering ----------
function renderJSON(value, indent = "") {
  const frag = document.createDocumentFragment();
  const put = (cls, text) => frag.append(cls ? el("span", cls, text) : document.createTextNode(text));
  if (value === null) put("j-null", "null");
  else if (Array.isArray(value)) {
    if (value.length === 0) put("", "[]");
    else if (value.every((v) => v === null || typeof v !== "object") && JSON.stringify(value).length < 60) {
      put("", "[");
      value.forEach((v, i) => { frag.append(renderJSON(v)); if (i < value.length - 1) put("", ", "); });
      put("", "]");
    }
    else {
      put("", "[\n");
      value.forEach((v, i) => {
        put("", indent + "  ");
        frag.append(renderJSON(v, indent + "  "));
        put("", i < value.length - 1 ? ",\n" : "\n");
      });
      put("", indent + "]");
    }
  } else if (typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 0) put("", "{}");
    else {
      put("", "{\n");
      keys.forEach((k, i) => {
        put("", indent + "  ");
        put("j-key", JSON.stringify(k));
        put("", ": ");
        frag.append(renderJSON(value[k], indent + "  "));
        put("", i < keys.length - 1 ? ",\n" : "\n");
      });
      put("", indent + "}");
    }
  } else if (typeof value === "string") put("j-str", JSON.stringify(value));
  else if (typeof value === "number") put("j-num", String(value));
  else put("j-lit", String(value));
  return frag;
}

// ---------- event list ----------
const clock = (d) => d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");

function roomNode(room) {
  const span = el("span", "room");
  if (!room) { span.append(el("span", "rid", "room ?")); return span; }
  const { kind, id, name } = roomLabel(room);
  if (name) { span.append(`${kind}:${name} `); span.append(el("span", "rid", id.slice(0, 8))); }
  else span.textContent = room;
  return span;
}

function addEvent(event, args) {
  let offset = "";
  if (args.length > 1 && typeof args[args.length - 1] === "string" && OFFSET_RE.test(args[args.length - 1])) {
    offset = args[args.length - 1];
    args = args.slice(0, -1);
  }
  const data = args.length === 1 ? args[0] : args;
  learn(event, data);
  const room = inferRoom(event, data);
  const li = el("li", state.unfolded ? "ev" : "ev folded");
  li.dataset.event = event;
  li.dataset.kind = KINDS[event] || "other";
  li.dataset.offset = offset;
  li.dataset.room = room || "";
  const head = el("div", "ev-head");
  head.append(el("time", "", clock(new Date())), el("span", "badge", event), roomNode(room));
  const sum = summary(event, data);
  if (sum) head.append(el("span", "summary", sum));
  head.append(el("span", "offset", offset || "no offset"));
  const pre = el("pre", "payload");
  pre.append(renderJSON(data));
  li.append(head, pre);
  head.title = "click to fold or unfold the payload";
  head.addEventListener("click", () => li.classList.toggle("folded"));
  li.dataset.search = `${event} ${room || ""} ${offset} ${JSON.stringify(data)}`.toLowerCase();
  state.count++;
  $("count").textContent = state.count;
  if (state.paused) { state.pending.push(li); return; }
  insert(li);
}

function addSystem(text) {
  const li = el("li", "ev system");
  li.dataset.event = "";
  const head = el("div", "ev-head");
  head.append(el("time", "", clock(new Date())), el("span", "summary", text));
  li.append(head);
  li.dataset.search = text.toLowerCase();
  insert(li);
}

function insert(li) {
  const list = $("events");
  applyFilter(li);
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  renderEmpty();
}

function applyFilter(li) {
  const q = $("filter").value.trim().toLowerCase();
  li.hidden = q !== "" && !li.dataset.search.includes(q);
}

function setUnfolded(on) {
  state.unfolded = on;
  for (const li of $("events").querySelectorAll(".ev:not(.system)")) li.classList.toggle("folded", !on);
  $("fold").textContent = on ? "Fold all" : "Unfold all";
  $("fold").setAttribute("aria-pressed", String(on));
}

// The empty state says what to do next, in this mode and this state.
function renderEmpty() {
  const list = $("events");
  const real = list.querySelectorAll(".ev:not(.system)");
  const visible = [...real].some((li) => !li.hidden);
  const box = $("empty");
  box.hidden = visible;
  if (visible) return;
  const dev = state.config.demo_users.length > 0;
  let title, text;
  if (real.length > 0) {
    title = "No event matches the filter";
    text = `${real.length} event${real.length === 1 ? "" : "s"} hidden; clear the filter to see them.`;
  } else if (!state.socket) {
    title = dev ? "Pick a demo user" : "Paste a token";
    text = dev
      ? "Click a person on the left to connect as them, as Koordi's front end does. Then change something: assign an event in psql, run make demo-writes, or send a test event."
      : "Paste a JWT from Koordi's API (or koordi-realtime token) on the left to connect as that user. The page shows only what that token may receive.";
  } else {
    const who = state.me?.name || state.me?.email || "this user";
    title = `Waiting for events for ${who}`;
    text = dev
      ? "Every event sent to the rooms on the left appears here as it is committed. Send a test event, assign an event in psql, or run make demo-writes."
      : "Every event sent to the rooms on the left appears here as Koordi's API commits it.";
  }
  $("empty-title").textContent = title;
  $("empty-text").textContent = text;
}

// ---------- names and rooms from the stream ----------
function learn(event, d) {
  if (!d || typeof d !== "object") return;
  let changed = false;
  if (typeof d.calendar_id === "string" && typeof d.calendar_name === "string" && d.calendar_name !== "" &&
      calendarName(d.calendar_id) !== d.calendar_name) {
    state.calendars.set(d.calendar_id, { ...state.calendars.get(d.calendar_id), name: d.calendar_name });
    changed = true;
  }
  if ((event === "member:added" || event === "member:removed") && typeof d.user_id === "string") {
    const u = state.users.get(d.user_id);
    if (d.user_name && (u?.name !== d.user_name || u?.email !== d.user_email)) {
      state.users.set(d.user_id, { name: d.user_name, email: d.user_email });
      changed = true;
    }
    const demo = state.config.demo_users.find((x) => x.id === d.user_id);
    if (demo) {
      const has = demo.calendars.includes(d.calendar_id);
      if (event === "member:added" && !has) { demo.calendars.push(d.calendar_id); changed = true; }
      if (event === "member:removed" && has) { demo.calendars = demo.calendars.filter((c) => c !== d.calendar_id); changed = true; }
      if (d.user_name && demo.name !== d.user_name) { demo.name = d.user_name; changed = true; }
      if (d.user_email && demo.email !== d.user_email) { demo.email = d.user_email; changed = true; }
    }
    if (state.me && d.user_id === state.me.id) {
      const room = `calendar:${d.calendar_id}`;
      if (event === "member:added") state.rooms.add(room); else state.rooms.delete(room);
      if (d.user_name) state.me.name = d.user_name;
      changed = true;
    }
  }
  if (event === "calendar:deleted" && typeof d.calendar_id === "string") {
    for (const demo of state.config.demo_users) demo.calendars = demo.calendars.filter((c) => c !== d.calendar_id);
    state.rooms.delete(`calendar:${d.calendar_id}`);
    changed = true;
  }
  if (changed) { renderUsers(); renderRooms(); renderWho(); }
}

function renderWho() {
  if (!state.me) { $("who").textContent = "–"; return; }
  const m = state.me;
  $("who").textContent = m.name ? `${m.name} <${m.email || "?"}>` : (m.email || m.id || "unknown");
}

function renderRooms() {
  const ul = $("rooms");
  ul.replaceChildren();
  if (state.selected && !state.rooms.has(state.selected)) state.selected = null;
  if (!state.selected && state.me) state.selected = `user:${state.me.id}`;
  if (state.rooms.size === 0) { ul.append(el("li", "muted", "–")); renderEmit(); return; }
  for (const room of [...state.rooms].sort().reverse()) {
    const { kind, id, name } = roomLabel(room);
    const li = el("li");
    li.dataset.room = room;
    if (state.config.emit) {
      li.setAttribute("aria-selected", String(room === state.selected));
      li.title = "select: the test event goes here";
    } else li.title = room;
    const dot = el("span", "dot");
    dot.style.background = (kind === "calendar" && calendarColor(id)) || "var(--muted)";
    li.append(dot, el("span", "rname", name ? `${kind}:${name}` : kind), el("span", "rid", id));
    if (state.config.emit) li.addEventListener("click", () => { state.selected = room; renderRooms(); });
    ul.append(li);
  }
  renderEmit();
}

// The rooms the server put this socket in, for the token: a pasted token's
// calendars are known only to the server.
async function fetchRooms() {
  if (!state.config.rooms || !state.token) return;
  const token = state.token;
  try {
    const r = await fetch("/inspector/api/rooms", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
    if (!r.ok || token !== state.token) return;
    const body = await r.json();
    state.rooms = new Set(body.rooms);
    renderRooms();
  } catch { /* keep what the page knows */ }
}

// ---------- test events (dev) ----------
function renderEmit() {
  $("emit-box").hidden = !state.config.emit;
  const ok = state.socket?.connected && state.selected;
  $("emit").disabled = !ok;
  if (state.selected) {
    const { kind, name } = roomLabel(state.selected);
    $("emit-hint").textContent = `→ ${name ? `${kind}:${name}` : state.selected}`;
    $("emit-hint").title = `${state.selected}, through koordi_realtime.emit`;
  }
}

async function emitTest() {
  const room = state.selected;
  if (!room) return;
  try {
    const r = await fetch("/inspector/api/emit", {
      method: "POST", cache: "no-store",
      headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ room }),
    });
    if (!r.ok) addSystem(`test event refused: ${(await r.json().catch(() => ({}))).error || `HTTP ${r.status}`}`);
  } catch (e) {
    addSystem(`test event failed: ${e.message}`);
  }
}

// ---------- connection ----------
function decodeJWT(token) {
  try {
    const b = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(b))));
  } catch { return null; }
}

function setState(s, text) {
  const n = $("state");
  n.dataset.state = s;
  n.textContent = text || s;
}

function setTransport(name) {
  const dd = $("transport");
  dd.replaceChildren(name ? el("span", "transport", name) : "–");
  dd.dataset.transport = name || "";
}

function disconnect() {
  if (state.socket) {
    state.socket.removeAllListeners();
    state.socket.io.removeAllListeners?.();
    state.socket.disconnect();
    state.socket = null;
  }
  setState("idle", "not connected");
  setTransport("");
  $("disconnect").disabled = true;
  $("drop").disabled = true;
  renderEmit();
  renderEmpty();
}

// Close the transport under the client, as a lost network does: no
// DISCONNECT packet, so the client reconnects by itself and recovers what
// it missed (Recovered: yes).
function dropConnection() {
  const engine = state.socket?.io?.engine;
  if (!engine) return;
  addSystem("transport dropped (no clean disconnect): the client reconnects and recovers");
  engine.close();
}

function connect(token, user) {
  if (typeof window.io !== "function") { banner(window.KOORDI_BUNDLE_MISSING || "socket.io-client failed to load"); return; }
  disconnect();
  const claims = decodeJWT(token) || {};
  state.me = { id: claims.userId, email: claims.email, name: user?.name || userName(claims.userId) };
  state.token = token;
  state.activeUser = user?.id || null;
  for (const b of document.querySelectorAll(".user")) b.setAttribute("aria-pressed", String(b.dataset.id === state.activeUser));
  renderWho();
  // What the page knows until the server says (fetchRooms, at connect).
  state.rooms = new Set();
  state.selected = null;
  if (state.me.id) state.rooms.add(`user:${state.me.id}`);
  const cals = user?.calendars || state.config.demo_users.find((u) => u.id === state.me.id)?.calendars || [];
  for (const c of cals) state.rooms.add(`calendar:${c}`);
  renderRooms();
  $("sid").textContent = "–";
  $("recovered").textContent = "–";
  setState("connecting", "connecting…");
  $("disconnect").disabled = false;

  const socket = window.io({
    auth: { token },
    transports: $("ws-only").checked ? ["websocket"] : ["polling", "websocket"],
    reconnectionDelayMax: 5000,
  });
  state.socket = socket;
  renderEmpty();
  socket.on("connect", () => {
    setState("connected", "connected");
    $("drop").disabled = false;
    fetchRooms();
    renderEmit();
    setTransport(socket.io.engine.transport.name);
    $("sid").textContent = socket.id;
    $("recovered").textContent = socket.recovered ? "yes (missed events replayed)" : "no (fresh session)";
    $("recovered").title = $("recovered").textContent;
    addSystem(`connected as ${state.me.name || state.me.email || state.me.id} over ${socket.io.engine.transport.name}${socket.recovered ? " (recovered)" : ""}`);
    socket.io.engine.on("upgrade", (t) => { setTransport(t.name); addSystem(`transport upgraded to ${t.name}`); });
  });
  socket.on("connect_error", (err) => {
    const refused = !socket.active;
    setState(refused ? "refused" : "error", refused ? "refused" : "retrying");
    addSystem(`connect_error: ${err.message}`);
  });
  socket.on("disconnect", (reason) => {
    setState(socket.active ? "reconnecting" : "idle", socket.active ? "reconnecting…" : `disconnected (${reason})`);
    setTransport("");
    $("drop").disabled = true;
    renderEmit();
    addSystem(`disconnected: ${reason}`);
  });
  socket.onAny((event, ...args) => addEvent(event, args));
}

// ---------- service stats ----------
const history = new Array(60).fill(0); // a flat start, filled from the right
const samples = [];

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}
const fmtNum = (n) => (n >= 1e6 ? (n / 1e6).toFixed(2) + "M" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : String(Math.round(n)));
const fmtMS = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 10 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(1)} ms`);
const fmtRate = (n) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
const plural = (n, word) => `${fmtNum(n)} ${word}${Math.round(n) === 1 ? "" : "s"}`;
function fmtLSN(n) {
  const hi = Math.floor(n / 2 ** 32), lo = n % 2 ** 32;
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}
function fmtUptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

function drawSpark() {
  const max = Math.max(1, ...history);
  const n = 60;
  const pts = history.slice(-n).map((v, i, a) => [((i + n - a.length) / (n - 1)) * 120, 31 - (v / max) * 27]);
  if (pts.length < 2) return;
  const line = pts.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  $("spark-line").setAttribute("d", line);
  $("spark-area").setAttribute("d", `${line} L120,32 L${pts[0][0].toFixed(1)},32 Z`);
}

async function pollStats() {
  try {
    const r = await fetch("/inspector/api/stats", { cache: "no-store" });
    if (!r.ok) throw new Error(`stats: HTTP ${r.status}`);
    const s = await r.json();
    const t = Date.parse(s.time) / 1000;
    const ws = s.sockets.websocket || 0, poll = s.sockets.polling || 0;
    $("st-sockets").textContent = fmtNum(ws + poll);
    $("st-transports").textContent = `websocket ${ws} · polling ${poll}`;
    // Rates over the last five seconds: steadier than poll to poll.
    samples.push({ t, derived: s.events_derived_total, sent: s.messages_sent_total,
      latSum: s.commit_to_send_seconds_sum, latCount: s.commit_to_send_count });
    while (samples.length > 6) samples.shift();
    let rate = 0, sent = 0;
    const first = samples[0];
    if (t > first.t) {
      rate = Math.max(0, (s.events_derived_total - first.derived) / (t - first.t));
      sent = Math.max(0, (s.messages_sent_total - first.sent) / (t - first.t));
      history.push(rate);
      if (history.length > 120) history.shift();
      drawSpark();
    }
    $("st-rate").textContent = fmtRate(rate);
    $("st-derived").textContent = `${fmtNum(s.events_derived_total)} total · ${fmtNum(s.transactions_total)} tx`;
    const lag = $("st-lag");
    lag.textContent = fmtBytes(s.lag_bytes);
    lag.className = "value" + (s.lag_bytes > 64 << 20 ? " bad" : s.lag_bytes > 1 << 20 ? " warn" : "");
    $("st-lag-s").textContent = `${s.lag_seconds.toFixed(2)} s · LSN ${fmtLSN(s.confirmed_lsn)}`;
    $("st-sent").textContent = fmtNum(s.messages_sent_total);
    $("st-sent-rate").textContent = `${fmtRate(sent)} / s · ${fmtNum(s.messages_dropped_total)} dropped`;
    // Mean over the last five seconds of transactions; a process that just
    // started also re-sends its replay window, whose age is not latency.
    const n = s.commit_to_send_count - first.latCount;
    if (n > 0) {
      $("st-latency").textContent = fmtMS((1000 * (s.commit_to_send_seconds_sum - first.latSum)) / n);
      $("st-latency-hint").textContent = `mean of ${fmtNum(n)} tx, last 5 s`;
    } else {
      $("st-latency-hint").textContent = s.commit_to_send_count > 0 ? "idle · last value" : "no transactions yet";
    }
    $("st-rooms").textContent = fmtNum(s.rooms);
    $("st-replay").textContent = `${plural(s.replay_window_events, "event")} in replay window`;
    $("uptime").textContent = `up ${fmtUptime(s.uptime_seconds)}`;
    showNode(s);
    $("tiles").classList.remove("stale");
  } catch (e) {
    // Keep the last numbers, dimmed: they are no longer current.
    $("tiles").classList.add("stale");
    $("uptime").textContent = "server unreachable: numbers are stale";
  }
  try {
    const r = await fetch("/readyz", { cache: "no-store" });
    const text = (await r.text()).trim();
    const pill = $("ready");
    pill.dataset.state = r.ok ? "ready" : "not-ready";
    pill.textContent = r.ok ? "ready" : "not ready";
    pill.title = text;
  } catch {
    $("ready").dataset.state = "not-ready";
    $("ready").textContent = "unreachable";
    $("tiles").classList.add("stale");
  }
}

// With several nodes, which one this page talks to and whether it leads:
// killing the leader's process shows another take over here.
function showNode(s) {
  const pill = $("node");
  if (s.leader === undefined) {
    pill.hidden = true;
    return;
  }
  pill.hidden = false;
  pill.dataset.state = s.leader ? "ready" : "standby";
  pill.textContent = `${s.node || "node"} · ${s.leader ? "leader" : "standby"}`;
  pill.title = s.leader
    ? "this node streams from the replication slot and publishes to the feed"
    : `this node serves sockets from the feed (lag ${(s.feed_lag_seconds || 0).toFixed(2)} s); another node streams from the slot`;
}

function banner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = false;
}

// ---------- start ----------
const userCalendars = (u) => (u.calendars.length ? u.calendars.map((c) => calendarName(c) || c.slice(0, 8)).join(", ") : "no calendars yet");

function initials(name) { return name.split(/\s+/).map((w) => w[0]).join("").slice(0, 2).toUpperCase(); }

function renderUsers() {
  const box = $("users");
  if (state.config.demo_users.length > 0 && box.querySelector(".user")) {
    // Refresh the cards in place (names and calendars from the stream).
    for (const b of box.querySelectorAll(".user")) {
      const u = state.config.demo_users.find((x) => x.id === b.dataset.id);
      if (!u) continue;
      b.querySelector(".uname").textContent = u.name;
      b.querySelector(".ucals").textContent = userCalendars(u);
      b.querySelector(".avatar").textContent = initials(u.name);
      b.title = u.email;
    }
    return;
  }
  box.replaceChildren();
  if (state.config.demo_users.length === 0) {
    box.append(el("p", "muted small", "No demo users here: paste a token below."));
    $("token-box").open = true;
    return;
  }
  state.config.demo_users.forEach((u, i) => {
    const b = el("button", "user");
    b.type = "button";
    b.dataset.id = u.id;
    b.dataset.email = u.email;
    b.setAttribute("aria-pressed", "false");
    const av = el("span", "avatar", initials(u.name));
    av.style.background = PALETTE[i % PALETTE.length];
    b.append(av, el("span", "uname", u.name), el("span", "ucals", userCalendars(u)));
    b.title = u.email;
    b.addEventListener("click", () => connect(u.token, u));
    box.append(b);
  });
}

async function start() {
  try {
    const r = await fetch("/inspector/api/config", { cache: "no-store" });
    state.config = await r.json();
  } catch { /* the page still works with a pasted token */ }
  for (const c of state.config.calendars) state.calendars.set(c.id, { name: c.name, color: c.color });
  for (const u of state.config.demo_users) state.users.set(u.id, { name: u.name, email: u.email });
  if (state.config.mode) { $("mode").textContent = state.config.mode; $("mode").hidden = false; }
  if (typeof window.io !== "function") banner(window.KOORDI_BUNDLE_MISSING || "socket.io-client did not load.");
  renderUsers();
  $("connect-token").addEventListener("click", () => {
    const t = $("token").value.trim();
    if (t) connect(t, null);
  });
  $("disconnect").addEventListener("click", () => { disconnect(); addSystem("disconnected by you"); });
  $("drop").addEventListener("click", dropConnection);
  $("emit").addEventListener("click", emitTest);
  $("fold").addEventListener("click", () => setUnfolded(!state.unfolded));
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? `Resume (${state.pending.length})` : "Pause";
    if (!state.paused) { state.pending.forEach(insert); state.pending = []; }
  });
  $("clear").addEventListener("click", () => { $("events").replaceChildren(); state.count = 0; $("count").textContent = "0"; renderEmpty(); });
  $("filter").addEventListener("input", () => { for (const li of $("events").children) applyFilter(li); renderEmpty(); });
  renderEmpty();
  renderEmit();
  const want = new URLSearchParams(location.search).get("user");
  if (want) {
    const u = state.config.demo_users.find((x) => x.email === want || x.id === want || x.email.split("@")[0] === want);
    if (u) connect(u.token, u);
  }
  pollStats();
  setInterval(pollStats, 1000);
}

start();
