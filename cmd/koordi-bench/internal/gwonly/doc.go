// Package gwonly is koordi-bench's server "gateway": koordi-realtime's own
// gateway (package gateway: Engine.IO and Socket.IO, token verification,
// rooms, per-socket queues, the pool of writers, the replay window, pings)
// fed from the same in-memory schedule as the raw baseline (package raw)
// instead of from PostgreSQL. It splits koordi's distance from raw in two:
// gateway against raw is what koordi's delivery path costs over the least a
// server can do; koordi against gateway is what PostgreSQL's commits, the
// walsender and koordi's decoding and derivation cost on the same cores
// (raw and gateway have none of them).
//
// At start it reads the memberships once from DATABASE_URL (the seeded
// topology) and loads them as serve does; no replication slot, no query
// after that. A control HTTP server takes a raw.Plan on POST /run and
// answers with a raw.Result once the schedule is issued, as raw's does:
// each commit becomes a schema.Transaction of event:updated envelopes with
// the payload koordi derives for the bench's UPDATE (the same bytes as
// raw's frames, a test checks it), stamped just before gateway.Publish,
// where raw stamps just before its first write and koordi's bench writer
// just before its SQL UPDATE.
package gwonly
