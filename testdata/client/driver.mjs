// driver.mjs: drives real socket.io-client sockets for the Go tests (the
// gateway's, and cmd/koordi-realtime's end-to-end and dev tests), many in one
// process.
//
//   node driver.mjs <server url>
//
// Reads one JSON command per line on stdin and writes one JSON report per
// line on stdout, in the order the client library raised them. Commands (id
// names a socket):
//   {"op":"connect","id":"a","token":"…","transports":["websocket"],"reconnection":true,"url":"…",
//    "reconnectionDelay":100,"reconnectionDelayMax":500,"reconnectionAttempts":20|"Infinity","upgrade":true}
//   {"op":"emit","id":"a","event":"join:calendar","args":["<uuid>"],"ack":true,"seq":1}
//   {"op":"emit_many","id":"a","event":"x","args":[],"n":150}
//   {"op":"close_engine","id":"a"}      drop the transport (the client reconnects)
//   {"op":"disconnect","id":"a"}
//   {"op":"exit"}
// Reports: {"id","ev":"connect","sid","recovered","transport","pid"}, {"id","ev":"connect_error","message"},
//   {"id","ev":"disconnect","reason"}, {"id","ev":"event","event","args"},
//   {"id","ev":"ack","seq","error","args"}, {"id","ev":"upgrade","transport"}, {"ev":"ready"}, {"ev":"fatal","message"}.
// Event args are every argument, the offset last; pid is the session id that
// connection state recovery presents on a reconnect.
//
// url, when given, is the server of this socket (several nodes in one test).
// Reconnection is socket.io-client's own, with short delays and 20 attempts
// unless the command says otherwise, so connection state recovery (pid +
// offset) works as in a browser.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const url = process.argv[2];
const sockets = new Map();
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

function connect(cmd) {
  const socket = io(cmd.url ?? url, {
    path: "/socket.io",
    auth: cmd.token === undefined ? undefined : { token: cmd.token },
    transports: cmd.transports ?? ["polling", "websocket"],
    upgrade: cmd.upgrade ?? true,
    reconnection: cmd.reconnection ?? true,
    reconnectionDelay: cmd.reconnectionDelay ?? 100,
    reconnectionDelayMax: cmd.reconnectionDelayMax ?? cmd.reconnectionDelay ?? 200,
    randomizationFactor: 0,
    reconnectionAttempts: Number(cmd.reconnectionAttempts ?? 20),
    forceNew: true,
  });
  const id = cmd.id;
  sockets.set(id, socket);
  socket.on("connect", () => {
    const engine = socket.io.engine;
    out({ id, ev: "connect", sid: socket.id, recovered: socket.recovered, transport: engine.transport.name, pid: socket._pid });
  });
  socket.on("connect_error", (err) => out({ id, ev: "connect_error", message: err.message }));
  socket.on("disconnect", (reason) => out({ id, ev: "disconnect", reason }));
  socket.onAny((event, ...args) => out({ id, ev: "event", event, args }));
  socket.io.on("open", () => {
    socket.io.engine.on("upgrade", (t) => out({ id, ev: "upgrade", transport: t.name }));
  });
}

function handle(cmd) {
  if (cmd.op === "connect") return connect(cmd);
  if (cmd.op === "exit") {
    for (const s of sockets.values()) s.disconnect();
    setTimeout(() => process.exit(0), 50);
    return;
  }
  const socket = sockets.get(cmd.id);
  if (!socket) return out({ ev: "fatal", message: `no socket ${cmd.id}` });
  switch (cmd.op) {
    case "emit":
      if (cmd.ack) {
        socket.timeout(5000).emit(cmd.event, ...(cmd.args ?? []), (err, ...args) =>
          out({ id: cmd.id, ev: "ack", seq: cmd.seq, error: err ? String(err.message ?? err) : undefined, args }));
      } else {
        socket.emit(cmd.event, ...(cmd.args ?? []));
      }
      return;
    case "emit_many":
      for (let i = 0; i < cmd.n; i++) socket.emit(cmd.event, ...(cmd.args ?? []));
      return;
    case "close_engine":
      socket.io.engine.close();
      return;
    case "disconnect":
      socket.disconnect();
      return;
    default:
      out({ ev: "fatal", message: `unknown op ${cmd.op}` });
  }
}

createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  try {
    handle(JSON.parse(line));
  } catch (err) {
    out({ ev: "fatal", message: String(err && err.stack ? err.stack : err) });
  }
});
process.stdin.on("end", () => process.exit(0));
out({ ev: "ready" });
