package cdc

import (
	"encoding/binary"
	"fmt"

	"github.com/koordi/koordi-realtime/cdc/wal"
	ksql "github.com/koordi/koordi-realtime/sql"
)

// Row messages (Insert, Update, Delete of pgoutput protocol 1) are decoded
// here rather than by pglogrepl.Parse, which copies every value into a
// TupleDataColumn of its own before the row copies it again into a string:
// two allocations per column, four per column of an UPDATE with its old
// tuple, most of the decoder's time and garbage in a fan-out. Here a tuple's
// values are located in the message (tupleCol offsets, into a slice the
// decoder reuses) and the tuple's bytes become one string that its values
// share. Values kept past the transaction (derivation's names) are cloned by
// their keeper, so one short value never holds a whole row alive.
//
// Every length and count is checked against the message, so hostile input
// costs at most a small multiple of the message's own size.

// Tuple value kinds (pgoutput TupleData).
const (
	tupleNull      = 'n'
	tupleToast     = 'u' // unchanged TOASTed value, not sent
	tupleText      = 't'
	tupleBinary    = 'b'
	tupleNew       = 'N'
	tupleKey       = 'K'
	tupleOld       = 'O'
	rowMessageHead = 1 + 4 // type byte, relation id
)

// tupleCol is one value of a tuple: its kind and, for text and binary, its
// bytes' place in the message.
type tupleCol struct {
	kind       byte
	start, end int
}

// tuple is one TupleData of a message: its values and the span of the
// message they lie in.
type tuple struct {
	cols       []tupleCol
	start, end int
}

// errTupleTruncated is made once: readTuple runs for every row.
var errTupleTruncated = fmt.Errorf("%w: tuple data truncated", errMalformed)

// readTuple reads the TupleData at data[p:] into cols (reused; its length
// is set to the tuple's column count).
func readTuple(data []byte, p int, cols []tupleCol) (tuple, error) {
	short := errTupleTruncated
	if p+2 > len(data) {
		return tuple{}, short
	}
	ncol := int(binary.BigEndian.Uint16(data[p:]))
	p += 2
	if ncol > len(data)-p {
		// Every value takes at least its kind byte: refused before cols
		// grows for a count the message cannot hold.
		return tuple{}, short
	}
	t := tuple{cols: cols[:0], start: p}
	for range ncol {
		if p >= len(data) {
			return tuple{}, short
		}
		c := tupleCol{kind: data[p]}
		p++
		if c.kind == tupleText || c.kind == tupleBinary {
			if p+4 > len(data) {
				return tuple{}, short
			}
			n := uint64(binary.BigEndian.Uint32(data[p:]))
			p += 4
			if n > uint64(len(data)-p) {
				return tuple{}, short
			}
			c.start, c.end = p, p+int(n)
			p += int(n)
		}
		t.cols = append(t.cols, c)
	}
	t.end = p
	return t, nil
}

// rowMessage decodes an Insert, Update or Delete message into the open
// transaction.
func (d *decoder) rowMessage(data []byte) error {
	kind := data[0]
	if len(data) < rowMessageHead+1 {
		return fmt.Errorf("%w: %c message truncated", errMalformed, kind)
	}
	relID := binary.BigEndian.Uint32(data[1:])
	p := rowMessageHead
	marker := data[p]
	p++
	switch {
	case kind == 'I' && marker != tupleNew,
		kind == 'D' && marker != tupleKey && marker != tupleOld,
		kind == 'U' && marker != tupleNew && marker != tupleKey && marker != tupleOld:
		return fmt.Errorf("%w: %c message: unexpected tuple type %q", errMalformed, kind, marker)
	}
	first, err := readTuple(data, p, d.cols[:0])
	if err != nil {
		return err
	}
	d.cols = first.cols
	// An UPDATE with its old tuple carries the new one after it; both are
	// read (and checked) before the relation is looked at, so a malformed
	// message is refused whatever table it names.
	var next tuple
	twoTuples := kind == 'U' && marker != tupleNew
	if twoTuples {
		p = first.end
		if p >= len(data) {
			return fmt.Errorf("%w: U message truncated", errMalformed)
		}
		if data[p] != tupleNew {
			return fmt.Errorf("%w: U message: unexpected tuple type %q", errMalformed, data[p])
		}
		if next, err = readTuple(data, p+1, d.newCols[:0]); err != nil {
			return err
		}
		d.newCols = next.cols
	}
	// A rare wide message's scratch is not kept for the session.
	if cap(d.cols) > maxKeptCols {
		d.cols = nil
	}
	if cap(d.newCols) > maxKeptCols {
		d.newCols = nil
	}
	if kind == 'I' {
		if rel := d.relations[relID]; rel != nil && rel.emit && d.tx != nil {
			return d.emitted(rel, data, first)
		}
	}
	rel, err := d.change(relID)
	if err != nil || rel == nil {
		return err
	}
	switch {
	case kind == 'I':
		row, err := d.row(rel, data, first, wal.Row{}, false)
		if err != nil {
			return err
		}
		return d.add(wal.Change{Op: wal.OpInsert, Table: rel.name, New: row})
	case kind == 'D':
		old, err := d.row(rel, data, first, wal.Row{}, marker == tupleKey)
		if err != nil {
			return err
		}
		return d.add(wal.Change{Op: wal.OpDelete, Table: rel.name, Old: old, OldFull: marker == tupleOld})
	case !twoTuples: // an UPDATE without its old tuple
		row, err := d.row(rel, data, first, wal.Row{}, false)
		if err != nil {
			return err
		}
		return d.add(wal.Change{Op: wal.OpUpdate, Table: rel.name, New: row})
	}
	old, err := d.row(rel, data, first, wal.Row{}, marker == tupleKey)
	if err != nil {
		return err
	}
	row, err := d.row(rel, data, next, old, false)
	if err != nil {
		return err
	}
	return d.add(wal.Change{Op: wal.OpUpdate, Table: rel.name, Old: old, New: row, OldFull: marker == tupleOld})
}

// maxKeptCols bounds the tuple scratch a decoder keeps between messages:
// a tuple of PostgreSQL's widest table.
const maxKeptCols = 1664

// row names the values of a tuple. An unchanged TOASTed value ('u') is not
// sent by PostgreSQL; it is taken from old (the full old tuple under REPLICA
// IDENTITY FULL), or left out of the row if there is no old value to take.
// A key tuple (keyOnly: REPLICA IDENTITY DEFAULT or an index) carries only
// the key's values and NULL for every other column: those are left out, so
// the rules never take a placeholder for the row's value.
func (d *decoder) row(rel *relation, data []byte, t tuple, old wal.Row, keyOnly bool) (wal.Row, error) {
	if len(t.cols) != len(rel.columns) {
		return wal.Row{}, fmt.Errorf("%w: %s: tuple has %d columns, relation has %d", errMalformed, rel.name, len(t.cols), len(rel.columns))
	}
	shared := string(data[t.start:t.end])
	row := wal.NewRow(rel.cols)
	for i, c := range t.cols {
		if keyOnly && !rel.key[i] {
			continue
		}
		switch c.kind {
		case tupleNull:
			row.SetAt(i, wal.Value{})
		case tupleText:
			row.SetAt(i, wal.Value{Text: shared[c.start-t.start : c.end-t.start], Valid: true})
		case tupleToast:
			// old is the same message's old tuple: the same columns.
			if !old.IsZero() {
				if v, ok := old.At(i); ok {
					row.SetAt(i, v)
					d.toastFilled++
				}
			}
		default:
			// Binary values are never requested (no 'binary' option).
			return wal.Row{}, fmt.Errorf("%w: %s.%s: tuple data type %q", errMalformed, rel.name, rel.columns[i], c.kind)
		}
	}
	return row, nil
}

// emitted turns an insert into koordi_realtime.emitted into the explicit
// event it carries. Only the table's owner can write it (through emit), so
// its rows are trusted to come from a role granted emit; their content is
// still validated by derivation. A message over the bound emit enforces is
// cut to one byte more than the bound before it is copied, so derivation
// rejects it (too_large) without the stream holding the rest.
func (d *decoder) emitted(rel *relation, data []byte, t tuple) error {
	if len(t.cols) != len(rel.columns) {
		return fmt.Errorf("%w: %s.%s: tuple does not match its relation", errMalformed, ksql.EmitSchema, rel.name)
	}
	if rel.message < 0 || t.cols[rel.message].kind != tupleText {
		// Not the table setup made (or a NULL message): nothing to read.
		d.skipped++
		return nil
	}
	c := t.cols[rel.message]
	msg := data[c.start:c.end]
	if len(msg) > ksql.MaxEmitBytes {
		msg = msg[:ksql.MaxEmitBytes+1]
	}
	return d.add(wal.Change{Op: wal.OpMessage, Message: append([]byte(nil), msg...)})
}
