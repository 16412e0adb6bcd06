// Package feed carries committed transactions from the node that streams
// from the replication slot (the leader) to every node of a cluster, through
// one JetStream stream: [Publisher] is the leader's cdc sink, [Subscriber]
// feeds each node's gateway, the leader's included.
//
// # The stream
//
// [EnsureStream] creates or updates the stream NATS_STREAM with one subject,
// "<stream>.tx": file storage, limits retention with MaxAge longer than the
// replay window (a node that starts late reads the window's history from
// it), and a duplicates window. Every message is one transaction — or one
// chunk of a large one, a run of its events of about 512 KiB, or one larger
// event alone — in the JSON
// form of schema.Transaction, its events and the room moves they imply, with
// headers: Nats-Msg-Id the offset of its first event (with the part and a
// random attempt id for a part, below), Koordi-Commit its
// commit LSN, Koordi-Prev the offset of the last event before it (so a node
// reading from the middle knows every event after that position will reach
// it, and lets sessions from other nodes recover), Koordi-Last the offset of
// its last event, Koordi-Reset for a gap in the stream (sync:reset on every
// node). A chunk larger than the server's max_payload (one event can be: a
// long title) travels in parts, Koordi-Part "i/n", that subscribers put
// together again; an event over [MaxFeedEvent] is replaced by its room's
// sync:reset {reason: "event_too_large"} (its JSON form counted, where <, >
// and & take six bytes), so a subscriber holds at most about that much for
// one message.
//
// A stream deleted under a running service is created again by the
// subscribers that find it missing (SubscriberConfig.Recreate) and by the
// next leadership term (each term starts with EnsureStream, and none starts
// while NATS does not answer); subscribers notice a stream created at another
// time, report the gap ("feed_recreated": sync:reset, memberships read
// again) and read the new stream from its start.
//
// One subject, not one per room: every node needs every transaction anyway,
// for its membership view and its replay window, so a node filtering by the
// rooms it serves would still have to read the moves of all; and JetStream
// slows down with very many subjects and filtered consumers.
//
// # Never two publishers
//
// Exactly one node streams from the slot at a time: the cdc consumer holds
// pg_try_advisory_lock on its replication session (cdc.Config.LockKey), and
// PostgreSQL frees it the moment that session ends. That alone is not
// enough: a leader whose session just died may still hold decoded
// transactions and a NATS connection. So every publish names the stream
// sequence it expects to follow (Nats-Expected-Last-Sequence): a leader
// reads the stream's last message when it starts publishing, and each of its
// messages expects the one before. The stream is therefore one chain: of two
// would-be publishers that read the same tail, the first message to land
// wins, and every later message of the other expects a sequence that is no
// longer last and is refused — that publisher fails and ends its term.
// Messages are pipelined (up to MaxInFlight unacknowledged), so sequence
// alone would let a term's second message land where its refused first
// one should have been (A's message takes sequence n+1 and B's first is
// refused, B's second expects n+1 and fits): after its first message, each
// also names its predecessor's Nats-Msg-Id (Nats-Expected-Last-Msg-Id),
// which the other publisher's message does not carry. A new
// leader starts after the stream's last event (it skips what its slot
// decodes again up to there — within a transaction too, when its
// predecessor died between two of that transaction's messages; a run of
// parts left unfinished counts for nothing and is published again, whole,
// and subscribers drop the unfinished one), so the feed stays in commit
// order and holds no event twice, whatever the timing of a takeover.
//
// # Acknowledgement
//
// The Publisher is a cdc.AsyncSink: it publishes asynchronously, with at
// most MaxInFlight messages unacknowledged (beyond, DeliverAsync waits: the
// backpressure reaches the replication stream), and reports a transaction
// handed off only when JetStream acknowledged all of its messages, so the
// slot's confirmed position never passes what the stream holds. Any publish
// failure (NATS unreachable, a refused expectation) ends the term: the
// consumer's session and its lock go, nothing decoded piles up, and the next
// term resumes after the stream's last event once NATS answers again. The
// JetStream context's own bound on pending publishes is set above
// MaxInFlight, so the publisher's bound is the one that applies.
package feed
