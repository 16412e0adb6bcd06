// clients.mjs: many real socket.io-client sockets in one process, driven by
// the end-to-end tests of cmd/koordi-realtime (serve_e2e_test.go).
//
//   node clients.mjs <server url>
//
// Reads one JSON command per line on stdin, writes one JSON report per line
// on stdout, in the order the client library raised them. Commands (id names
// a socket):
//   {"op":"connect","id":"a","token":"…","transports":["websocket"],"upgrade":true}
//   {"op":"emit","id":"a","event":"join:calendar","args":["<uuid>"],"seq":1}  (with an ack)
//   {"op":"disconnect","id":"a"}
//   {"op":"drop","id":"a"}      close the transport as a network blip would: the
//                               client reconnects and recovers by itself
//   {"op":"exit"}
// Reports:
//   {"ev":"ready"}
//   {"id","ev":"connect","recovered","transport","pid"}
//   {"id","ev":"connect_error","message"}
//   {"id","ev":"disconnect","reason"}
//   {"id","ev":"event","event","args"}   (args: every argument, the offset last)
//   {"id","ev":"ack","seq","error","args"}
//   {"ev":"fatal","message"}
//
// Reconnection keeps socket.io-client's defaults except for short delays, so
// connection state recovery (pid + offset) works as in a browser.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const url = process.argv[2];
const sockets = new Map();
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

function connect(cmd) {
  const id = cmd.id;
  const socket = io(url, {
    auth: { token: cmd.token },
    transports: cmd.transports ?? ["polling", "websocket"],
    upgrade: cmd.upgrade ?? true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    randomizationFactor: 0,
    forceNew: true,
  });
  sockets.set(id, socket);
  socket.on("connect", () =>
    out({ id, ev: "connect", recovered: socket.recovered, transport: socket.io.engine.transport.name, pid: socket._pid }));
  socket.on("connect_error", (err) => out({ id, ev: "connect_error", message: err.message }));
  socket.on("disconnect", (reason) => out({ id, ev: "disconnect", reason }));
  socket.onAny((event, ...args) => out({ id, ev: "event", event, args }));
}

function handle(cmd) {
  if (cmd.op === "connect") return connect(cmd);
  if (cmd.op === "exit") {
    for (const s of sockets.values()) s.disconnect();
    setTimeout(() => process.exit(0), 20);
    return;
  }
  const socket = sockets.get(cmd.id);
  if (!socket) return out({ ev: "fatal", message: `no socket ${cmd.id}` });
  switch (cmd.op) {
    case "emit":
      socket.timeout(5000).emit(cmd.event, ...(cmd.args ?? []), (err, ...args) =>
        out({ id: cmd.id, ev: "ack", seq: cmd.seq, error: err ? String(err.message ?? err) : undefined, args }));
      return;
    case "disconnect":
      socket.disconnect();
      return;
    case "drop":
      socket.io.engine.close();
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
