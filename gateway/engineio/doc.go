// Package engineio serves the Engine.IO v4 protocol: the session handshake,
// the HTTP long-polling and WebSocket transports, the upgrade from the first
// to the second, server-sent heartbeats and close semantics. It knows nothing
// of Socket.IO: it carries opaque messages between a [Handler] and the peer.
//
// # Guarantees
//
//   - Packets queued with [Conn.SendText] and [Conn.SendPackets] reach the peer
//     in queue order, across the polling→WebSocket upgrade: polling responses
//     carry what is queued until the client completes the upgrade, the
//     WebSocket writer carries the rest.
//   - Sending never blocks. Each connection has a bounded queue
//     (Config.SendQueue packets); a send that would exceed it closes the
//     connection with reason [ReasonSlowConsumer] (the client reconnects).
//   - A fan-out queues shared packets: [NewFrames] makes a set of them once,
//     and [Conn.OfferFrames] queues packets of sets to one connection by
//     reference, as far as its queue has room, without closing it (the
//     caller, which can replay, catches the rest up itself). A queue holds
//     8 bytes per packet, plus one pointer to a set each time the packets
//     it queues switch sets, so thousands of queues holding the same event
//     cost the garbage collector little to scan; a set lives as long as
//     some queue still points into it.
//   - Bad requests get the reference server's HTTP answers
//     ({"code":0,"message":"Transport unknown"} with status 400, and so on for
//     codes 1–5) and never a 500; a malformed packet closes the session.
//   - Inbound data is bounded: a polling POST body or a WebSocket message
//     larger than Config.MaxPayload is refused (413, or WebSocket close 1009).
//   - No request outlives its session: a POST body is read within
//     PingTimeout (400 and the connection closed otherwise: a trickled body
//     holds nothing for long), a GET's answer is written within
//     PingInterval+PingTimeout (a client that does not read loses the
//     connection). The http.Server's own timeouts (ReadHeaderTimeout,
//     IdleTimeout) are the caller's; it needs no WriteTimeout, which would
//     cut long polls.
//   - Browsers connect only from allowed origins: an Origin header that is
//     not in Config.AllowedOrigins (nor, with Config.AllowSameOrigin, this
//     server's own scheme and host) gets 403 on polling, preflight and
//     WebSocket alike, decided in one place. A request without Origin is
//     not a browser's and is served.
//   - Session ids are credentials and never logged, at any level: log lines
//     carry sid_hash ([SIDHash], 8 hex digits of the sid's SHA-256;
//     [Conn.LogAttr] for handlers), which tells sessions apart and gives
//     nothing back.
//
// # Upgrade and heartbeat
//
// A WebSocket opened with the sid of a polling session probes ("2probe" →
// "3probe"); a GET waiting meanwhile is answered with a noop after 100 ms so
// the client can pause polling; "5" moves the session to the WebSocket, which
// then writes whatever is still queued. Later polling requests get 400, and a
// second WebSocket for the session is accepted and closed at once (as the
// reference server does). The server pings every PingInterval and closes a
// session whose pong is PingTimeout late; both deadlines follow the schedule,
// so a late timer neither stretches the heartbeat nor extends a timeout. A
// session's first ping comes at a random point of PingInterval (earlier
// than the client's deadline requires), in slots of a hundredth of it that
// sessions share, so that
// sessions opened together, as after a restart, are not pinged together
// for as long as they last.
//
// # Concurrency
//
// [Handler.Message] and [Handler.Close] calls for one connection never run
// concurrently and arrive in order; Close is the last call. Message runs on
// the WebSocket read goroutine or the goroutine of the polling POST that
// carried it. Conn methods are safe for concurrent use.
//
// Goroutines: an idle WebSocket connection holds none. On Linux one epoll
// set per Server (with one goroutine, while connections exist) watches the
// read sides and starts a short reader when a client sends; a pool of at
// most Config.ConcurrentWrites writers, running only while packets are
// queued, takes the connections with packets in turn and writes each one's
// queue in one write(2) (so a fan-out to thousands of sockets does not put
// thousands of goroutines ahead of the one publishing, and frames coalesce
// while the writers are behind); a client whose socket buffer is full gets
// the rest written by a goroutine of its own. A connection the poller
// cannot watch (TLS terminated in this process, other systems) keeps a
// reader goroutine. A
// polling connection has none between requests; every connection has a
// heartbeat timer. Close callbacks and [Conn.Dispatch] run on short
// goroutines owned by the Server; [Server.Shutdown] waits for all of them.
// A Handler that panics in Message has its connection closed, then the panic
// is logged (by net/http for polling, by the reader for WebSocket).
//
// # Lock order
//
// Conn.readMu (delivery serialisation) before Conn.mu (state and queue) before
// Server.mu (session table). Conn.closeMu (closing handshake vs. the reader's
// look into its buffer) is taken with no other lock held; the poller's lock
// may be taken under readMu and takes only the goroutine tracker's under it.
// The writer pool's lock is taken with no Conn lock held and takes only the
// tracker's under it; a writer tries the connection's write lock
// (batchConn.mu) with no other lock held, and hands the batch to a goroutine
// when coder/websocket holds it; that goroutine (writeRest) takes Conn.mu
// briefly under batchConn.mu. Closing a WebSocket's connection
// (batchConn.Close, which coder/websocket's Close and CloseNow reach) waits
// for batchConn.mu, so that no write is on the descriptor's number when it
// is closed: never close one holding batchConn.mu or Conn.mu. No lock is
// held while calling the Handler, except readMu, which is what serialises
// the calls.
package engineio
