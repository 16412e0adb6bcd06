// Package wal holds decoded, committed transactions as the replication
// consumer hands them to derivation: rows by column name, in text format.
package wal

import "time"

// Op is the kind of a decoded change.
type Op uint8

const (
	OpInsert Op = iota + 1
	OpUpdate
	OpDelete
	// OpMessage is an explicit event written by koordi_realtime.emit: an
	// insert into the emit table (sql.EmitTable), its message column.
	OpMessage
)

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "INSERT"
	case OpUpdate:
		return "UPDATE"
	case OpDelete:
		return "DELETE"
	case OpMessage:
		return "MESSAGE"
	}
	return "UNKNOWN"
}

// Value is one column value in PostgreSQL's text output format.
type Value struct {
	Text  string
	Valid bool // false means SQL NULL
}

// Row is a decoded tuple: column values by column name, as the most recent
// Relation message named them. Unchanged TOASTed values have already been
// filled in from the old tuple, so a Row never holds a placeholder.
type Row map[string]Value

// Change is one decoded row change (or emit message) of a transaction.
type Change struct {
	Op    Op
	Table string // unqualified table name; empty for OpMessage
	// Old is the row before an UPDATE or DELETE: every column under
	// REPLICA IDENTITY FULL (OldFull), only the key's columns under a key
	// identity, and nil for an UPDATE that did not change the key under
	// one. Nil for OpInsert and OpMessage.
	Old Row
	// OldFull reports that Old is the whole old row. The rules can tell what
	// an UPDATE changed, and name what a DELETE removed, only then.
	OldFull bool
	New     Row // nil for OpDelete and OpMessage
	// Message is the content of an OpMessage.
	Message []byte
}

// Tx is one committed transaction, buffered from BEGIN to COMMIT, with its
// changes in WAL order. Derivation sees only committed transactions. Read
// the changes with Each: a large transaction is spilled to disk (see Add).
type Tx struct {
	CommitLSN  uint64
	CommitTime time.Time
	Xid        uint32 // PostgreSQL's transaction id, from BEGIN
	// Changes holds the changes while they are in memory; nil once
	// spilled.
	Changes []Change
	// Gaps are the reasons of gaps recorded in this transaction (a
	// sync:reset owed by an earlier session, cdc.Consumer.RecordGap): the
	// consumer reports them before the transaction's events.
	Gaps []string

	size  int // approximate bytes of Changes
	spill *spillFile
	err   error
}
