// Package wal holds decoded, committed transactions as the replication
// consumer hands them to derivation: rows read by column name, values in
// text format.
package wal

import (
	"iter"
	"slices"
	"time"
)

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

// Columns names the columns of a table, as a Relation message lists them.
// Every row of the relation shares one Columns, so a row is its values by
// position and a lookup by name is one map access shared by all of them.
type Columns struct {
	names []string
	index map[string]int
}

// NewColumns returns the columns names, in order. A name that repeats
// (never so in a table) names its first position.
func NewColumns(names []string) *Columns {
	c := &Columns{names: names, index: make(map[string]int, len(names))}
	for i, n := range names {
		if _, dup := c.index[n]; !dup {
			c.index[n] = i
		}
	}
	return c
}

// Len is the number of columns.
func (c *Columns) Len() int { return len(c.names) }

// Row is a decoded tuple: column values by column name, as the most recent
// Relation message named them. Unchanged TOASTed values have already been
// filled in from the old tuple, so a Row never holds a placeholder. A
// column the tuple did not carry — the non-key columns of a key tuple, an
// unchanged TOASTed value with no old value to take — is absent, which is
// not the same as NULL. The zero Row is no row at all (IsZero): the old
// row of an INSERT.
//
// A Row is a view of values by position: one slice per tuple, not a map,
// since a map per tuple and its buckets were most of what decoding a
// transaction allocated. Rows are read-only once decoded.
type Row struct {
	cols  *Columns
	cells []cell
}

type cell struct {
	text    string
	valid   bool
	present bool
}

// NewRow returns a row of cols with every column absent, to be filled with
// SetAt.
func NewRow(cols *Columns) Row { return Row{cols: cols, cells: make([]cell, cols.Len())} }

// RowOf builds a row from values by name, for rows made by hand (tests,
// derivation's stand-in rows). A nil map is the zero Row.
func RowOf(m map[string]Value) Row {
	if m == nil {
		return Row{}
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	r := NewRow(NewColumns(names))
	for i, n := range names {
		r.SetAt(i, m[n])
	}
	return r
}

// SetAt sets the value of column i, which becomes present.
func (r Row) SetAt(i int, v Value) { r.cells[i] = cell{text: v.Text, valid: v.Valid, present: true} }

// At returns the value of column i and whether the tuple carried it.
func (r Row) At(i int) (Value, bool) {
	c := r.cells[i]
	return Value{Text: c.text, Valid: c.valid}, c.present
}

// Columns returns the row's columns (nil for the zero Row).
func (r Row) Columns() *Columns { return r.cols }

// IsZero reports whether r is no row (as opposed to a row of no columns).
func (r Row) IsZero() bool { return r.cols == nil }

// Lookup returns the value of column col and whether the row has it.
func (r Row) Lookup(col string) (Value, bool) {
	if r.cols == nil {
		return Value{}, false
	}
	i, ok := r.cols.index[col]
	if !ok {
		return Value{}, false
	}
	return r.At(i)
}

// Get returns the value of column col: NULL (the zero Value) when it is
// NULL or absent.
func (r Row) Get(col string) Value {
	v, _ := r.Lookup(col)
	return v
}

// Has reports whether the row has column col (NULL or not).
func (r Row) Has(col string) bool {
	_, ok := r.Lookup(col)
	return ok
}

// Len returns the number of columns the row has.
func (r Row) Len() int {
	n := 0
	for _, c := range r.cells {
		if c.present {
			n++
		}
	}
	return n
}

// All yields the row's columns and values in column order.
func (r Row) All() iter.Seq2[string, Value] {
	return func(yield func(string, Value) bool) {
		for i, c := range r.cells {
			if c.present && !yield(r.cols.names[i], Value{Text: c.text, Valid: c.valid}) {
				return
			}
		}
	}
}

// Change is one decoded row change (or emit message) of a transaction.
type Change struct {
	Op    Op
	Table string // unqualified table name; empty for OpMessage
	// Old is the row before an UPDATE or DELETE: every column under
	// REPLICA IDENTITY FULL (OldFull), only the key's columns under a key
	// identity, and the zero Row for an UPDATE that did not change the key under
	// one. The zero Row for OpInsert and OpMessage.
	Old Row
	// OldFull reports that Old is the whole old row. The rules can tell what
	// an UPDATE changed, and name what a DELETE removed, only then.
	OldFull bool
	New     Row // the zero Row for OpDelete and OpMessage
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
