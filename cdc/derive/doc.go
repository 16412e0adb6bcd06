// Package derive turns committed transactions of Koordi's tables into the
// Koordi socket events (EVENTS.md in this directory lists every one), and
// keeps the state those events need — names, memberships, sync windows —
// current from the same stream. It is pure logic: it reads [wal.Tx] values and returns
// [schema.Envelope]s; the replication stream (package cdc) feeds it and the
// gateway reads its [State].
//
// # Rules
//
// events → calendar:<event_calendar_id>
//   - INSERT: event:created, then event:assigned when assigned_to_user_id is set.
//   - UPDATE of assigned_to_user_id or is_skipped: event:assigned when the new
//     assignee is set, else event:unassigned, with previous_assigned_to_user_id,
//     is_skipped and start_time/end_time in RFC 3339 UTC.
//   - UPDATE of title, description, location, start_time, end_time, is_all_day,
//     is_cancelled: event:updated, changed listing those columns in that
//     (table) order. Both kinds in one UPDATE: the assignment event first.
//   - UPDATE of anything else only (updated_at, version, sync_in_progress,
//     last_modified, location_lat/lng, ics_uid, columns this code does not
//     know): nothing.
//   - UPDATE of event_calendar_id: event:deleted to the old room and
//     event:created to the new one, nothing else for that row.
//   - DELETE: event:deleted.
//   - Inside a sync: every event:created, event:updated, event:deleted,
//     event:assigned and event:unassigned derived while its calendar's sync
//     window is open (see event_calendars) carries "sync": true, so a client
//     can fold them into the one calendar:synced notice; the field is
//     omitted otherwise. These are exactly the changes calendar:synced
//     counts: a move's event:deleted is marked by the old calendar's
//     window, its event:created by the new one's. The window-less
//     calendar:synced (counts of its own transaction) marks nothing, and
//     changes of a window that ends without an outcome, or with
//     calendar:sync_failed, stay marked.
//
// event_calendar_memberships
//   - A row becoming accepted with a user_id (INSERT, or UPDATE from any other
//     state): member:added to the calendar room.
//   - An accepted row deleted, or leaving accepted: member:removed to the
//     calendar room, then to user:<user_id>. (An accepted row that changes
//     calendar or user is a removal followed by an addition.) Each moves the
//     user's sockets (see Room moves).
//   - INSERT pending: invitation:received to user:<id of the user whose email
//     is exactly invited_email, as Koordi compares them>; nothing when no
//     user has that email.
//
// event_calendars → calendar:<id>
//   - sync_in_progress false→true opens a sync window (no event); true→false
//     closes it.
//   - last_sync_at changed with last_sync_status 'success': calendar:synced with
//     the counts of that calendar's events rows inserted / updated (an UPDATE
//     that derived an event) / deleted since the window opened, a move
//     counting as a delete from one calendar and an insert into the other.
//     Changes are counted, not distinct rows: a row inserted and then
//     updated within one window counts once in each column.
//     With no open window the counts are those of the whole transaction.
//     With 'error': calendar:sync_failed {error: last_sync_error}. Either
//     outcome consumes the window. Bootstrapped windows count from zero.
//   - UPDATE of name, ics_url, child_id, color, sync_enabled: calendar:updated,
//     changed in that (table) order. It follows a synced/sync_failed of the
//     same UPDATE.
//   - DELETE: calendar:deleted. The events, memberships and supplemental events
//     deleted in the same transaction with that calendar (its cascade) derive
//     nothing, whatever their position in the transaction.
//
// supplemental_events → conflict:resolved {event1_id A, event2_id B, reason
// "same_location"} to A's calendar room, then B's when different:
//   - One transaction deleting `return` rows of event A and `departure` rows
//     of event B ≠ A, where the transaction changes A and B in no other way
//     (no other trip type deleted, no trip inserted or updated, the event's
//     row not inserted, updated or deleted). Such events are paired in WAL
//     order, the first A with the first B, and so on. So Koordi's
//     removeMember, which deletes every trip of the member's events and
//     reassigns them in one transaction, pairs nothing, even where earlier
//     resolutions left one event only its return and another only its
//     departure.
//   - Two transactions, as Koordi's resolve-conflict writes it (two
//     autocommitted deleteMany statements, A's returns then B's
//     departures). A "returns-only" transaction — every change a DELETE of a
//     `return` row of one event A, nothing else (no other type, table or
//     emit, so not A's own deletion) — is remembered: A, where its returns
//     leave from (origin address and coordinates, at most 4 rows), its
//     commit time. The first later "departures-only" transaction (the same
//     with `departure` rows of one event B ≠ A) decides it: when it
//     committed within 10 s (conflictPairWindow) of the first and one of its
//     departures goes to where one of A's returns leaves from (destination
//     and origin addresses equal after collapsing spaces and case, or
//     coordinates within 1e-6°), it derives conflict:resolved, with the
//     second transaction; else nothing. Either way the record is spent. It
//     also ends when a newer returns-only transaction replaces it, when any
//     transaction changes A's row or any of A's supplemental rows (Koordi
//     deleting and regenerating A's trips, unassigning or deleting A), and
//     at Bootstrap. A transaction deleting early_arrival rows, rows of
//     several events or several types is no half. So Koordi's trip
//     regeneration (one deleteMany of all of an event's trips, then one
//     insert per trip, between two updates of the event row) pairs with
//     nothing. The second transaction derived again (after a failed
//     delivery) pairs again, with the same bytes.
//
// reason "other" has no row change; the API emits it (koordi_realtime.emit).
// The calendar of each event comes from an event → calendar index kept from
// the stream and the bootstrap (see Memory), because a resolution deletes
// only supplemental rows. conflict:resolved events come after the
// transaction's row events.
//
// users: INSERT/UPDATE of name or email refreshes the state; no event.
//
// Emit messages (koordi_realtime.emit) become an envelope at their position in
// the transaction when the content is a JSON object with "room" (a valid
// user:/calendar: room), "event" (printable, 1 to 128 bytes, not a name
// socket.io-client reserves such as "connect") and "data" (any JSON value,
// compacted); koordi_events_derived_total counts them under their name when
// it is in the catalogue (schema.Names), else under "other", so SQL cannot
// grow the series count. Anything else is logged, counted in
// koordi_emit_rejected_total by reason, and skipped. Changes of unknown tables, and events whose room
// would not be a uuid room (ids that are not uuids), are counted in
// koordi_derive_skipped_total and skipped.
//
// Missing columns (dropped while streaming, or a key-only old tuple) never
// panic: a column absent from either tuple is treated as unchanged, and a
// missing value reads as NULL/empty. Columns are looked up by name, so extra
// columns are ignored.
//
// # Names as of the commit
//
// user_name, user_email, inviter_name and calendar_name are the values at the
// transaction's commit, wherever the rename sits in the transaction: Derive
// first applies every users and event_calendars INSERT/UPDATE of the
// transaction to the state, then runs the rules in WAL order, and only then
// forgets rows the transaction deleted. So "renamed and removed in one
// transaction" carries the new name whether the rename comes before or after
// the removal, and a user deleted together with their memberships is still
// named in member:removed.
//
// The state is as current as the last transaction derived. When a restarted
// process re-decodes transactions older than its bootstrap (the replay
// window), their offsets are the same but state-dependent parts — names,
// the invitation's recipient, sync counts of a window opened before the
// bootstrap — reflect the newer state.
//
// # Ordering and offsets
//
// Envelopes of one transaction are numbered tx.CommitLSN-00000000,
// -00000001, … in emission order, which is the WAL order of the changes that
// caused them (within one change: assignment before details, calendar room
// before user room), followed by conflict:resolved. Derive is deterministic:
// the same transaction on the same state gives the same bytes. Where the
// state rather than the transaction decides whether an event exists (an
// invitation:received needs a user with the invited email; a
// conflict:resolved goes to up to two calendar rooms the event index knows),
// its places are numbered even when it is not derived, so the same
// transaction on a later state (decoded again after a restart) gives every
// other event the same offset; the numbers then have a gap.
//
// # Room moves
//
// Derive attaches to the transaction the room moves its events imply
// ([schema.Move]), at their place among the events: a join of the user's
// sockets just before each member:added, a leave just before the calendar
// room's member:removed (the user still gets the user room's copy), and a
// close of the room just after calendar:deleted. Moves come only from
// membership and calendar rows; an emitted event never carries one, whatever
// its name.
//
// # Concurrency
//
// Derive and Bootstrap are called from one goroutine (the stream's); they are
// the only writers of the state. [State.IsAcceptedMember] and
// [State.AcceptedCalendars] may be called from any goroutine: the accepted
// index is guarded by a sync.RWMutex held only for single map operations, and
// is the only lock in the package. AcceptedCalendars returns a sorted copy. The state is updated when a transaction is
// derived, which is before its events are delivered: a reader may see a
// membership slightly before member:added reaches sockets.
//
// # Memory
//
// Ids are held as 16-byte uuids, not strings. Measured with
// BenchmarkStateMemory (go test -run - -bench StateMemory ./cdc/derive; Go
// 1.26, amd64), bootstrapping 100k users, each with one accepted membership
// and ten events: 172 bytes per user (id, name, email and the email index),
// 152 bytes per membership (the row's calendar/user/status and the accepted
// index) and 45 bytes per event (the event → calendar index entry; calendars
// are interned as 32-bit numbers). So 100k users with 200k memberships and
// 2M events hold about 140 MB. Map growth makes the figures vary by up to
// about a factor of two with the exact row counts. Calendars cost a few
// hundred bytes each. Ids that are not uuids are not tracked. Nothing else
// grows with the stream: per-transaction scratch is reused, and the pending
// half of a two-transaction conflict resolution is one fixed-size record
// (an id, at most 4 places with addresses of at most 512 bytes, a time).
package derive
