// Package schema is the event catalogue of koordi-realtime: the name of every
// socket event, its typed payload, the rooms events are addressed to and the
// envelope that carries an event with its offset.
//
// It is the only package that both sides of the service import: cdc produces
// [Transaction] values made of [Envelope]s, the gateway delivers them. JSON
// field names are exactly those Koordi's front end reads (DESIGN.md section 4);
// fields may be added, none removed or renamed.
//
// # Offsets
//
// Every event has an [Offset]: the commit LSN of its transaction and its index
// within that transaction, written as 16 + 4 upper-case hex digits
// ("000000000169A3F8-0002"). Offsets are stable when a transaction is decoded
// again after a restart, and their string forms sort in commit order.
package schema
