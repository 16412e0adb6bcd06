// Package gateway is Koordi's realtime product on top of the Socket.IO
// protocol layer ([socketio]): JWT authentication, rooms, fan-out of
// committed events, connection state recovery (replay), rate limits per
// connection and per user, and metrics. It knows nothing of WAL: events arrive through
// [Gateway.Publish] as [schema.Transaction] values, in commit order.
//
// # Sockets and rooms
//
// A socket authenticates with the CONNECT packet's auth.token (see
// [auth.Verifier]); a refusal is a CONNECT_ERROR whose message starts with
// "Authentication error:". It then joins "user:<userId>" and
// "calendar:<id>" for every calendar the user is an accepted member of,
// taken from the gateway's membership view (a database snapshot,
// [Gateway.LoadMemberships], brought forward by the room moves of every
// published transaction: no query per connect). Clients may emit "join:calendar" and
// "leave:calendar" with a calendar id and an optional ack; refusals answer the
// ack, or else an "error" event {error_code, message} with one of the codes
// [CodeInvalidCalendarID], [CodeForbidden], [CodeRateLimited],
// [CodeUnknownEvent] ([CodeTooManySockets] comes with the close of a socket
// over Config.MaxSocketsPerUser).
//
// Rooms change with the data: each published [schema.Transaction] carries
// the room moves its events imply ([schema.Move]: a user's sockets join or
// leave a calendar room, a deleted calendar's room closes), and Publish
// applies each at its place among the events, under the lock that orders
// publication. A socket's rooms at connect come from the same view under the
// same lock, so no move falls between reading them and joining.
//
// A socket is closed at the transport level when its token expires: the
// client reconnects with the expired token and is refused cleanly.
//
// # Rate limits
//
// Config.RateLimit (serve's RATE_LIMIT, 100 a minute) bounds what a client
// makes the gateway do, with two token buckets of that many tokens refilled
// over a minute. One is the Engine.IO connection's: every client event and
// every Socket.IO CONNECT spends a token, also a refused CONNECT (a bad
// token) and one to another namespace, so sending CONNECT again on the same
// connection, which starts a new socket, does not start a new budget. The
// other is the user's on this node, shared by all its sockets, so opening
// more sockets does not multiply it. An event needs a token of both; a
// refused event is answered with [CodeRateLimited], a refused CONNECT with
// a CONNECT_ERROR whose data is {"error_code":"RATE_LIMITED"}. Config.AbuseLimit
// refusals within a minute close the connection (a refused event's socket
// gets a server DISCONNECT first, which stops socket.io-client's
// reconnection).
//
// Neither bucket exists until it is needed, since most sockets send
// nothing after their CONNECT: a connection's is made at its second cost
// (its first CONNECT's token taken then, at most one token stricter), a
// user's at the first event of any of its sockets, and the user's is freed
// with its last socket on this node. A client that closes every socket of
// its user and comes back therefore finds a full user bucket, but pays a
// new handshake and a CONNECT on a new connection for it.
//
// # Fan-out
//
// Publish encodes each event once into a [socketio.Frame] (arguments: payload
// and offset string, the offset last as socket.io-client's connection state
// recovery expects) and queues the same bytes to every member socket, never
// blocking on one. A socket whose queue is full is not cut: it leaves its
// rooms and catches up from the replay window at its own pace, then goes
// live again; it never delays others. Per room, sockets receive events in
// commit order, because Publish calls are serialised and each socket's
// queue is FIFO. [Gateway.PublishBatch] publishes several transactions (what
// a stream that is behind has ready) and queues each socket's frames of the
// batch in one call instead of one per event. The frames are shared by room:
// each room's frames since the last flush become one engineio.Frames, and a
// socket's queue holds 8-byte references into the sets of its rooms, not a
// pointer per delivery (see engineio.Conn.OfferFrames).
// [Gateway.PublishBehind] is PublishBatch for a stream that says more is
// already decoded behind the batch: the frames then wait for the next
// batches (at most 100 ms, and never across a Reset or a membership load),
// so a backlog of single-row commits visits each socket once for many
// batches rather than once per delivery. Held or not, every published event
// is in the replay window at once.
//
// Publish drops events whose offset is not after the newest one it has
// published: the stream re-sends a window of transactions after a
// replication reconnect, and those were delivered already.
//
// # Recovery
//
// The CONNECT reply carries a pid: an HMAC-signed token (key derived from the
// JWT secret) holding the user id, the process instance and the newest offset
// at session start, so any process sharing the secret can resume the session.
// A client reconnecting with pid (and the last offset it received) gets the
// same pid back, which socket.io-client reports as socket.recovered, and every
// event after its position of the rooms its user was in at that event (a
// calendar joined meanwhile from the join on, one left up to the leave), then
// live events, with no gap and no duplicate: rooms are joined and the window is
// read under the lock Publish holds. Recovery succeeds only if no event after
// the position can be missing — it is retained in the window or will still be
// published — otherwise the socket connects fresh with a new pid
// (recovered false). "Inside the window" is thus about events, not time: a
// client away longer than the window recovers if nothing it could have
// missed was evicted meanwhile. See [Gateway.ResumeAfter] for recovery
// across restarts.
//
// A reconnect with a pid that does not recover — its position evicted or
// before a [Gateway.Reset] gap, or a pid that does not verify (the key was
// made up by an earlier process) — connects fresh and receives sync:reset
// {reason: "replay_unavailable"}, so the client refetches instead of
// trusting stale state, whether or not it looks at socket.recovered.
//
// # Metrics
//
// On Config.Registerer: koordi_gateway_connected_sockets{transport},
// koordi_gateway_rooms, koordi_gateway_messages_sent_total,
// koordi_gateway_messages_dropped_total{reason="socket_closed"|"duplicate"},
// koordi_gateway_auth_failures_total{reason},
// koordi_gateway_rate_limited_events_total (events and CONNECTs),
// koordi_gateway_slow_consumer_disconnects_total,
// koordi_gateway_replay_hits_total, koordi_gateway_replay_misses_total,
// koordi_gateway_replayed_messages_total,
// koordi_gateway_replay_window_events, koordi_gateway_replay_window_bytes and
// the histogram koordi_gateway_commit_to_send_seconds (commit time in
// PostgreSQL to queued on every member socket).
//
// # Concurrency and lock order
//
// Gateway methods are safe for concurrent use. This is the one lock order
// across the gateway and its protocol layer, outermost first; a lock is only
// taken while holding locks above it, never below:
//
//  1. engineio Conn.readMu: held by the protocol layer around every Handler
//     call of one connection, so Connect, Connected, Event and Disconnected
//     run under it, in order; the gateway never takes it (and Publish never
//     runs under it).
//  2. Gateway.pubMu: serialises Publish (events and moves), Reset, a
//     socket's join-and-replay step (Connected), and a client's
//     join:calendar/leave:calendar (Event), so a replay and the live events
//     after it neither overlap nor leave a gap, and a client's move falls
//     between two transactions, after the frames its socket was owed.
//  3. index.mu (RWMutex): rooms, users, each socket's rooms and pending
//     moves, and the users' rate budgets (index.budgets, freed under it
//     with a user's last socket). Publish reads it while fanning out;
//     moves, connects and a socket's first event write.
//  4. window.mu: the replay window. Frames are copied out under it and sent
//     after it is released, so no socket is written to while it is held.
//  5. The protocol layer's leaf locks — socketio client.mu, engineio Conn.mu,
//     Conn.closeMu, the poller's — taken by Send, Emit and Disconnect (and
//     client.mu by the connection's rate budget, Socket.ConnValue). Send
//     never blocks, so sending under index.mu is safe.
//  6. A rate.Limiter's own mutex: a leaf, taken with no gateway lock held.
//
// Connects and join:calendar read the membership view under index.mu; the
// gateway makes no database query at all.
package gateway
