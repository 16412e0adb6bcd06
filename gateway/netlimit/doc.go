// Package netlimit bounds the connections a server accepts: a [Listener]
// wraps a net.Listener so that at most Config.MaxConns accepted
// connections are open at once, and so that accept errors are waited out
// instead of retried in a spin.
//
// # Guarantees
//
//   - At most MaxConns (MAX_CONNECTIONS, default 100,000; 0 is no limit) connections
//     returned by Accept are open at a time; a slot frees when the
//     connection is closed (once, however often Close is called, hijacked
//     connections included).
//   - A connection beyond the limit is accepted and reset at once (SO_LINGER
//     0, so no TIME_WAIT is kept for it) and never reaches the caller; it
//     counts in koordi_http_connections_refused_total. Accepting and
//     resetting, rather than leaving it in the kernel's queue, keeps the
//     backlog drained: the client learns at once (socket.io-client then
//     retries with its randomised backoff, and a load balancer sees a
//     refusal), instead of waiting through SYN retransmits and being
//     accepted, stale, once a slot frees. It costs a descriptor for a
//     moment, so RLIMIT_NOFILE must exceed MaxConns by some margin.
//   - Accept errors that retrying can cure (EMFILE, ENFILE, ENOBUFS,
//     ENOMEM, ECONNABORTED, EPERM from a firewall, and any error reporting
//     itself temporary) are retried after 5 ms, doubling to 1 s, reset by
//     the next connection accepted: a process out of descriptors waits for
//     some to free, burning no CPU. Each counts in
//     koordi_http_accept_errors_total and is logged at warning level (at
//     most one line per delay). Other errors, net.ErrClosed included, are
//     returned to the caller at once; Close ends a wait at once.
//   - Accepted connections keep what the server needs of the connection
//     underneath: its descriptor (syscall.Conn, which engineio's poller
//     watches), CloseWrite and CloseRead.
//
// # Metrics
//
// With Config.Registerer set: koordi_http_connections_open (gauge),
// koordi_http_connections_refused_total and koordi_http_accept_errors_total
// (counters). No global registry is used.
//
// # Concurrency
//
// Accept may be called from several goroutines, Close from any. The
// Listener starts no goroutine.
package netlimit
