// Package cdc reads Koordi's committed row changes from a PostgreSQL logical
// replication slot (pgoutput, via [github.com/jackc/pglogrepl] on pgx/v5;
// row messages, the hot path, are decoded by the package itself, see
// tuple.go),
// derives the Koordi socket events from them (package
// [github.com/koordi/koordi-realtime/cdc/derive]) and hands each
// transaction's events to a [Sink]. It knows nothing of sockets.
//
// # Slot and publication
//
// The publication (Config.Publication, default "koordi_realtime") belongs to
// `koordi-realtime setup`, which creates it over the watched tables together
// with REPLICA IDENTITY FULL and koordi_realtime.emit; the consumer only
// checks it ([github.com/koordi/koordi-realtime/sql.Preflight]) and never
// alters it.
//
// The slot (Config.SlotName, default "koordi_realtime") belongs to the
// consumer. It is created on first start if missing — permanent, pgoutput —
// with an exported snapshot, and the names state is bootstrapped inside that
// snapshot (REPEATABLE READ, SET TRANSACTION SNAPSHOT), so state and stream
// meet exactly at the slot's consistent point (if that bootstrap fails, the
// new slot is dropped and the next attempt starts over). At later starts the
// state is bootstrapped with a plain read and the stream resumes from the
// slot's confirmed position. A slot invalidated by PostgreSQL (wal_status "lost")
// is dropped and created again, as is one that vanished while streaming:
// changes were lost, so the consumer warns and calls Config.OnReset (serve
// sends sync:reset) once everything before the gap is handed off. The
// consumer never drops a healthy slot; one slot serves one process at a
// time (a second process gets [ErrSlotActive]).
//
// A gap its finder could not deliver (with several nodes: NATS down at that
// moment) can be recorded in the stream with [Consumer.RecordGap], signed
// with Config.GapKey; whichever consumer decodes it next reports it in its
// place, to a [ResetSink] before the slot may be confirmed past it.
//
// # What is acknowledged when
//
// Each transaction is buffered from BEGIN to COMMIT, derived at COMMIT, and,
// if it derived events, passed to Sink.Deliver (or, with several queued, to
// BatchSink.DeliverBatch together). When that returns nil the transaction is
// handed off; a transaction that derived nothing is handed
// off as soon as all earlier ones are. Standby status updates are sent every
// Config.StatusInterval and at once when the server asks, with the write,
// flush and apply positions all set explicitly to the end of the newest
// handed-off transaction — never to what was merely received. When idle
// (no open transaction, everything queued handed off) the server's
// keepalive position counts as handed off, so an idle slot does not pin WAL.
//
// With Config.Retain > 0 the confirmed position trails: it is the newest
// position handed off at least Retain ago (kept in a bounded queue of about
// 128 marks; marks closer than Retain/128 are merged, which may shorten the
// trail by that much, never confirm anything not handed off). A restarted
// process therefore decodes the last Retain of transactions again — the
// replay window (REPLAY_WINDOW; see package gateway). One exception: when PostgreSQL asks for an
// immediate reply — it does so in a loop while shutting down, and the
// walsender exits only once the client confirms everything sent — the reply
// confirms everything handed off, ignoring Retain, so a trailing position
// never holds a fast shutdown for wal_sender_timeout. (With status updates
// every StatusInterval, well below wal_sender_timeout/2, PostgreSQL has no
// other reason to ask.)
//
// # Catching up
//
// [Consumer.CaughtUp] is closed once the first stream of the process has
// handed off everything up to pg_current_wal_lsn() read at its start — every
// transaction committed before the process started. Until then the consumer
// decodes again what a previous process delivered (the replay window) and
// any backlog; serve keeps sockets out until then. (The positions the
// walsender reports are no target: in logical replication they say how far
// decoding has got, not where WAL ends.)
//
// # Delivery semantics and offsets
//
// At-least-once: after a crash the stream resumes from the slot's confirmed
// position and may deliver transactions again. Offsets are
// <commit LSN>-<index in transaction> ([github.com/koordi/koordi-realtime/schema.Offset]), so a transaction
// decoded again carries the same offsets. Within one process a transaction
// is derived and delivered once: after a reconnect, transactions whose
// commit LSN is not above the newest one already queued are skipped.
// Transactions are delivered in commit order; a Deliver error ends Run
// (nothing after the previous hand-off is confirmed; the transactions of a
// batch that failed are derived again by the next session, from the state
// their first derivation left).
//
// # Errors and reconnection
//
// Lost connections and PostgreSQL restarts are retried with exponential
// backoff (100 ms doubling to 5 s) and logged once per attempt. What the
// user must fix — an unreachable database at first start, wal_level,
// missing tables, replica identity, publication or emit function, a slot
// used by another process or created for something else — is returned from
// Run; [IsConfigError] tells those apart. Malformed pgoutput data ends the
// connection (the same WAL is decoded again after reconnecting), never the
// process; the decoder does not panic on any input.
//
// # Concurrency
//
// Run owns two goroutines, both ended before it returns:
//
//   - the stream goroutine (supervise.go: sessions and reconnects;
//     receive.go: the receive and status loop; slot.go: the slot's
//     lifecycle; conn.go: connections) owns both connections, the decoder and its
//     relation cache (columns by name, updated by every Relation message,
//     so columns added or dropped while streaming are followed), and sends
//     status updates — also while waiting for the delivery goroutine;
//   - the delivery goroutine owns the deriver after bootstrap and calls
//     Sink.Deliver; it receives decoded transactions over a bounded queue
//     (256), which is the backpressure towards PostgreSQL. A [BatchSink]
//     gets what is queued together in one DeliverBatch (up to 64
//     transactions), so a backlog is handed over in batches while a
//     transaction that finds none behind it still goes at once. A
//     [BacklogSink] is also told whether more wait in the queue behind
//     a batch, and may hold that batch's work for the next call.
//
// Memory: a transaction is held whole from BEGIN to COMMIT (what it
// changed in the watched tables, as text, one value slot per column), at
// most 256 decoded transactions (64 MiB) wait for delivery, and a batch
// being delivered holds its derived events beside them (at most 64
// transactions, cut after 8,192 events); the relation cache holds one
// column list per published table.
//
// Status and State may be called from any goroutine. Locks: the acker's
// mutex and the status mutex are leaf locks, never held together.
package cdc
