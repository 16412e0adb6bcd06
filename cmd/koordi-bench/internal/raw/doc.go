// Package raw is koordi-bench's physical-limit baseline server, "raw": the
// least a server can do for the deliveries the fanout and latency scenarios
// measure, so that "koordi / raw" says how far koordi-realtime is from what
// the machine can do at all. It runs as its own process (`koordi-bench
// serve-raw`), like koordi-realtime and the Node reference, so it does not
// share the load generator's process.
//
// What it does:
//
//   - Speaks just enough of HTTP, WebSocket (RFC 6455), Engine.IO v4 and
//     Socket.IO v5 for the bench's own client (package sioclient) to
//     connect to it as to any Socket.IO server: it answers the HTTP upgrade
//     (101, Sec-WebSocket-Accept), sends the Engine.IO open packet, reads
//     the client's masked CONNECT frame and replies with a Socket.IO
//     CONNECT. A polling GET gets the open packet and a close (the harness's
//     readiness probe); nothing else is served.
//   - Puts a socket in the room the bench's topology gives its user (user u
//     is a member of calendar u mod calendars, as harness.Seed makes it):
//     it reads the user id from the token's claims (the "userId" of the
//     JWT payload, base64url-decoded, not verified).
//   - Writes, from an in-memory schedule, the very frames koordi-realtime
//     would send for the bench's writes: one final unmasked text frame per
//     delivery carrying
//     42["event:updated",{"event_id":…,"event_title":"bench:<ns>","event_calendar_id":…,"changed":["title"]},"<LSN>-<index>"],
//     byte for byte what gateway/socketio.EncodeEvent makes of the payload
//     koordi derives (a test checks it). The stamp in event_title is what
//     the clients parse for latency, the offset what they would resume from.
//   - latency (Plan.Rate): commit k of Rate×Duration is due at
//     start + k/Rate (the bench's SQL writer uses the same open-loop
//     schedule), goes to calendar k mod calendars and carries as its stamp
//     the time the worker takes it off the schedule, just before encoding
//     it and writing it to the room's first socket, as the bench's writer
//     stamps an UPDATE just before sending it: how late a worker takes a
//     commit (a descheduled thread) is reported as Result.Behind, like the
//     SQL writer's lateness, not as latency.
//     Each frame is encoded once per commit and copied to each recipient's
//     buffer; all due commits of a wake-up are queued first, then each
//     socket gets one write(2) for what it has.
//   - fanout (Plan.Backlog): transaction j of Backlog updates one event in
//     every calendar, as the bench's backlog writer does. Each room's
//     frames are encoded once into one contiguous buffer, all stamped with
//     the run's start (the backlog is all there at once); each socket is
//     written straight from its room's buffer, as much per write(2) as the
//     kernel takes, again when epoll says it is writable: as fast as the
//     clients read.
//   - I/O: one epoll set per worker thread (default GOMAXPROCS, at most
//     the CPUs), each with its own SO_REUSEPORT listener, so a socket lives
//     on one thread and workers share nothing but the plan. Sockets are
//     non-blocking, edge-triggered for both directions, TCP_NODELAY as Go
//     and Node set it; a wake-up with nothing due costs one
//     epoll_pwait2(2) with a nanosecond timeout to the next commit.
//   - A control HTTP server on another address (net/http; idle during a
//     run) takes a Plan as JSON on POST /run, answers with a Result when
//     the schedule is issued, and serves net/http/pprof.
//
// What it does not do, and koordi-realtime does: PostgreSQL and logical
// replication, decoding and deriving events, verifying tokens, membership
// state and room bookkeeping beyond a slice per room, per-socket queues
// with limits, the replay window and recovery, Engine.IO pings (raw sends
// none; koordi pings each socket every 25 s, 400/s at 10,000 sockets), the
// long-polling transport and upgrades, reading anything after CONNECT
// (raw discards it), closing slow consumers, metrics and logs. Its latency
// therefore starts inside raw, just before the first write of a commit's
// frame, where koordi's starts before the bench's SQL UPDATE (and so
// includes PostgreSQL's commit, WAL decoding and koordi's whole path):
// raw's figures are what two cores can do for the same bytes on the same
// sockets, not a server one could run.
package raw
