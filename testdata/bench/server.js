// The reference server koordi-bench measures koordi-realtime against: the
// design Koordi runs today. A Socket.IO 4.8 server with Koordi's JWT
// middleware and user:/calendar: rooms; events are emitted by the
// application, here fed by LISTEN/NOTIFY triggers (the usual alternative to
// change data capture), with the payloads koordi-realtime derives.
//
// Environment: DATABASE_URL, JWT_SECRET, PORT (listens on 127.0.0.1),
// NOTIFY_CHANNEL (default koordi_bench). Prints "listening <port>" when ready.
// `cd testdata/bench && npm ci` installs its dependencies.

import { createServer } from "node:http";
import { Server } from "socket.io";
import jwt from "jsonwebtoken";
import pg from "pg";

const secret = process.env.JWT_SECRET;
const channel = process.env.NOTIFY_CHANNEL || "koordi_bench";
const port = Number(process.env.PORT || 3001);
if (!secret || !process.env.DATABASE_URL) {
  console.error("DATABASE_URL and JWT_SECRET are required");
  process.exit(2);
}

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
const http = createServer();
const io = new Server(http, {
  cors: { origin: true, credentials: true },
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
});

// Koordi's middleware: auth.token is a JWT with userId.
io.use((socket, next) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (!token) return next(new Error("Authentication error: token required"));
  try {
    const claims = jwt.verify(token, secret, { algorithms: ["HS256"] });
    socket.data.userId = claims.userId;
    next();
  } catch (err) {
    next(new Error(err.name === "TokenExpiredError" ? "Authentication error: token expired" : "Authentication error: invalid token"));
  }
});

io.on("connection", async (socket) => {
  const userId = socket.data.userId;
  socket.join(`user:${userId}`);
  try {
    const { rows } = await pool.query(
      "SELECT event_calendar_id FROM event_calendar_memberships WHERE user_id = $1 AND status = 'accepted'",
      [userId],
    );
    for (const r of rows) socket.join(`calendar:${r.event_calendar_id}`);
    // Tells the load generator the rooms are joined (koordi-realtime joins
    // them before its CONNECT reply, so it needs no such signal).
    socket.emit("bench:ready", rows.length);
  } catch (err) {
    console.error("membership query failed", err.message);
    socket.disconnect(true);
  }
});

const listener = new pg.Client({ connectionString: process.env.DATABASE_URL });
await listener.connect();
listener.on("notification", (msg) => {
  let m;
  try {
    m = JSON.parse(msg.payload);
  } catch {
    return;
  }
  io.to(m.room).emit(m.event, m.data);
});
await listener.query(`LISTEN ${channel}`);

http.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));

const stop = () => {
  io.close();
  listener.end().finally(() => pool.end().finally(() => process.exit(0)));
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
