package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pglogrepl"

	"github.com/koordi/koordi-realtime/cdc/wal"
	ksql "github.com/koordi/koordi-realtime/sql"
)

// errMalformed marks pgoutput data this decoder cannot make sense of. The
// stream treats it as a broken connection: it reconnects and decodes the
// same WAL again rather than skipping a change.
var errMalformed = errors.New("malformed pgoutput message")

// relation is what the decoder knows of one table from its latest Relation
// message. Columns are kept by position only to name the tuple values; rows
// are handed on by name, so a column added or dropped while streaming only
// changes this list.
type relation struct {
	name    string
	columns []string
	cols    *wal.Columns // columns, shared by the relation's rows
	key     []bool       // the column is part of the replica identity key
	watched bool
	// emit is koordi_realtime.emitted: its inserts are explicit events;
	// message is the position of its message column (-1 if absent).
	emit    bool
	message int
}

// committed is a decoded transaction plus the end of its commit record,
// which is the position to confirm once it is handed off: PostgreSQL skips
// a transaction on restart when its commit record begins before the
// confirmed position, so confirming the end excludes exactly this one.
type committed struct {
	tx    *wal.Tx
	end   uint64
	bytes int // of the queue's budget it holds until the delivery goroutine takes it
}

// decoder turns pgoutput protocol version 1 messages into committed wal.Tx
// values. It is pure (no I/O) and owned by one goroutine; a new replication
// session starts with a new decoder because pgoutput resends Relation
// messages on every connection.
type decoder struct {
	spillAt   int    // bytes of a transaction's changes held in memory before it spills to disk
	spillDir  string // where spilled transactions go ("": the system's temporary directory)
	relations map[uint32]*relation
	tx        *wal.Tx // nil outside BEGIN … COMMIT
	// skipped counts changes to tables that are not watched (and other
	// ignored content); the consumer exports it as a metric.
	skipped int
	// toastFilled counts unchanged TOASTed values taken from old tuples
	// (the decoder's golden tests show it).
	toastFilled int
	// gapKey and slot verify recorded gaps (see RecordGap); without a key
	// none is trusted. forgedGaps counts the records that did not verify.
	gapKey     []byte
	slot       string
	forgedGaps int
	// schemas are the watched tables' schemas (ksql.WatchedSchemas); nil
	// takes a watched name in any schema.
	schemas map[string]string
	// cols and newCols are the tuple reader's scratch space (see
	// rowMessage): an UPDATE's first tuple and its new one after an old.
	cols, newCols []tupleCol
}

// isWatched reports whether a relation is one of Koordi's tables: a watched
// name in the schema it was found in at the session's start. A table not
// found then (it may be created during the session) is taken in any schema.
func (d *decoder) isWatched(schema, name string) bool {
	if !slices.Contains(ksql.WatchedTables, name) {
		return false
	}
	want, found := d.schemas[name]
	return !found || want == schema
}

func newDecoder(spillAt int, spillDir string) *decoder {
	return &decoder{relations: make(map[uint32]*relation), spillAt: spillAt, spillDir: spillDir}
}

// release frees an unfinished transaction (the session ended mid-way).
func (d *decoder) release() {
	if d.tx != nil {
		d.tx.Release()
		d.tx = nil
	}
}

// add appends a change to the open transaction, spilling it past spillAt.
func (d *decoder) add(c wal.Change) error {
	if err := d.tx.Add(c, d.spillAt, d.spillDir); err != nil {
		return err
	}
	return nil
}

// inTx reports whether a transaction is open (BEGIN seen, COMMIT not yet).
func (d *decoder) inTx() bool { return d.tx != nil }

// decode consumes one XLogData payload. It returns the transaction when the
// payload was its COMMIT, nil otherwise.
func (d *decoder) decode(data []byte) (*committed, error) {
	if len(data) > 0 {
		switch data[0] {
		case 'I', 'U', 'D':
			return nil, d.rowMessage(data)
		}
	}
	msg, err := parse(data)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		cols := make([]string, len(m.Columns))
		key := make([]bool, len(m.Columns))
		for i, c := range m.Columns {
			cols[i] = c.Name
			key[i] = c.Flags&1 != 0
		}
		emit := m.Namespace == ksql.EmitSchema && m.RelationName == ksql.EmitTable
		d.relations[m.RelationID] = &relation{
			name:    m.RelationName,
			columns: cols,
			cols:    wal.NewColumns(cols),
			key:     key,
			watched: !emit && d.isWatched(m.Namespace, m.RelationName),
			emit:    emit,
			message: slices.Index(cols, "message"),
		}
	case *pglogrepl.BeginMessage:
		if d.tx != nil {
			return nil, fmt.Errorf("%w: BEGIN inside a transaction", errMalformed)
		}
		d.tx = &wal.Tx{CommitLSN: uint64(m.FinalLSN), CommitTime: m.CommitTime.UTC(), Xid: m.Xid}
	case *pglogrepl.CommitMessage:
		if d.tx == nil {
			return nil, fmt.Errorf("%w: COMMIT outside a transaction", errMalformed)
		}
		tx := d.tx
		d.tx = nil
		if uint64(m.CommitLSN) != tx.CommitLSN {
			return nil, fmt.Errorf("%w: COMMIT at %s for BEGIN announcing %s", errMalformed, m.CommitLSN, pglogrepl.LSN(tx.CommitLSN))
		}
		tx.CommitTime = m.CommitTime.UTC()
		return &committed{tx: tx, end: uint64(m.TransactionEndLSN)}, nil
	case *pglogrepl.LogicalDecodingMessage:
		// Never an event, whatever its prefix: every role may call
		// pg_logical_emit_message, so a message proves nothing about its
		// writer. Explicit events are rows of the emit table (emitted). A
		// recorded gap is trusted by its HMAC alone.
		if m.Prefix == gapPrefix && m.Transactional && d.tx != nil {
			if reason, ok := parseGapRecord(d.gapKey, d.slot, d.tx.Xid, m.Content); ok {
				d.tx.Gaps = append(d.tx.Gaps, reason)
				return nil, nil
			}
			if len(d.gapKey) > 0 {
				d.forgedGaps++
			}
		}
		d.skipped++
	case *pglogrepl.TruncateMessage:
		// TRUNCATE has no per-row old values; nothing can be derived from it.
		d.skipped++
	default:
		// Type and Origin messages carry nothing we use.
	}
	return nil, nil
}

// change resolves the relation of a row change. It returns nil (and counts
// the change as skipped) for tables that are not watched.
func (d *decoder) change(id uint32) (*relation, error) {
	if d.tx == nil {
		return nil, fmt.Errorf("%w: row change outside a transaction", errMalformed)
	}
	rel, ok := d.relations[id]
	if !ok {
		return nil, fmt.Errorf("%w: change for relation %d before its Relation message", errMalformed, id)
	}
	if !rel.watched {
		d.skipped++
		return nil, nil
	}
	return rel, nil
}

// parse is pglogrepl.Parse made safe for any input. pglogrepl trusts the
// lengths inside messages (it allocates what a count claims and indexes
// without bounds checks), which is right for a trusted server but must not
// take the process down on a corrupt or hostile stream; counts are checked
// first and any remaining panic becomes errMalformed.
func parse(data []byte) (msg pglogrepl.Message, err error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty", errMalformed)
	}
	if err := checkTruncate(data); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: %c message: %v", errMalformed, data[0], r)
		}
	}()
	msg, err = pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return msg, nil
}

// checkTruncate verifies that the relation ids of a Truncate lie within data,
// so pglogrepl never allocates more than the message holds (row messages
// never reach it: see rowMessage).
func checkTruncate(data []byte) error {
	// pglogrepl allocates the relation count before reading the ids.
	if data[0] == 'T' && len(data) >= 5 && uint64(binary.BigEndian.Uint32(data[1:]))*4 > uint64(len(data)) {
		return fmt.Errorf("%w: TRUNCATE relation count beyond the message", errMalformed)
	}
	return nil
}
