// Package schema is the event catalogue of koordi-realtime: the name of every
// socket event, its typed payload, the rooms events are addressed to, the
// envelope that carries an event with its offset, and the transaction that
// carries a commit's events with the room moves they imply.
//
// It is the only package that both sides of the service import: cdc produces
// [Transaction] values, the gateway delivers them. JSON field names are
// exactly those Koordi's front end reads; fields may be added, none removed
// or renamed.
//
// # Offsets
//
// Every event has an [Offset]: the commit LSN of its transaction and its index
// within that transaction, written as 16 + 8 upper-case hex digits
// ("000000000169A3F8-00000002"). Offsets are stable when a transaction is
// decoded again after a restart, and their string forms sort in commit order.
// The earlier form with a 4-digit index ("000000000169A3F8-0002") still
// parses, so a client that kept one across an upgrade recovers.
//
// # Room moves
//
// Which sockets are in which room follows the data, not the code that calls
// the gateway: derivation attaches to each [Transaction] the [Move]s its
// membership and calendar changes imply (join, leave, close), each at its
// place among the events, and the gateway applies them in that order under
// the same lock that orders publication. A transaction therefore says all
// there is to deliver it, in this process or in another.
//
// # Wire form of a transaction
//
// [Transaction.MarshalJSON] writes
//
//	{"commit_lsn":"000000000169A3F8","commit_time":"2026-11-26T17:00:00.123456Z","xid":731,
//	 "events":[{"offset":"000000000169A3F8-00000000","room":"calendar:<uuid>","event":"member:added","data":{…}}],
//	 "moves":[{"at":0,"op":"join","user":"<uuid>","room":"calendar:<uuid>"}]}
//
// (testdata/transaction.golden pins it), and [Transaction.UnmarshalJSON]
// refuses anything the gateway could not deliver safely. Each event inside is
// exactly the line `koordi-realtime tail` prints for it.
package schema
