package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/koordi/koordi-realtime/cdc/wal"
)

// The row messages' own decoder (rowMessage) against pglogrepl's reading of
// the same bytes: whatever pglogrepl reads, rowMessage reads the same rows
// from; what pglogrepl refuses, rowMessage refuses too.

// referenceChange is the change pglogrepl.Parse gives for a row message of
// relation rel, converted the way the decoder did before rowMessage.
func referenceChange(rel *relation, data []byte) (c wal.Change, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("pglogrepl panicked: %v", r)
		}
	}()
	// As the decoder did: the tuples' lengths checked first, so pglogrepl
	// never allocates what a hostile length claims.
	if err := oldBoundsCheck(data); err != nil {
		return c, err
	}
	msg, err := pglogrepl.Parse(data)
	if err != nil {
		return c, err
	}
	if !rel.watched {
		return c, errUnwatched
	}
	row := func(t *pglogrepl.TupleData, old wal.Row, keyOnly bool) (wal.Row, error) {
		if t == nil || len(t.Columns) != len(rel.columns) {
			return wal.Row{}, errors.New("tuple does not match the relation")
		}
		r := map[string]wal.Value{}
		for i, col := range t.Columns {
			name := rel.columns[i]
			if keyOnly && !rel.key[i] {
				continue
			}
			switch col.DataType {
			case 'n':
				r[name] = wal.Value{}
			case 't':
				r[name] = wal.Value{Text: string(col.Data), Valid: true}
			case 'u':
				if v, ok := old.Lookup(name); ok {
					r[name] = v
				}
			default:
				return wal.Row{}, errors.New("binary value")
			}
		}
		return wal.RowOf(r), nil
	}
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage:
		c = wal.Change{Op: wal.OpInsert, Table: rel.name}
		c.New, err = row(m.Tuple, wal.Row{}, false)
	case *pglogrepl.UpdateMessage:
		c = wal.Change{Op: wal.OpUpdate, Table: rel.name, OldFull: m.OldTuple != nil && m.OldTupleType == 'O'}
		if m.OldTuple != nil {
			if c.Old, err = row(m.OldTuple, wal.Row{}, m.OldTupleType == 'K'); err != nil {
				return c, err
			}
		}
		c.New, err = row(m.NewTuple, c.Old, false)
	case *pglogrepl.DeleteMessage:
		c = wal.Change{Op: wal.OpDelete, Table: rel.name, OldFull: m.OldTupleType == 'O'}
		c.Old, err = row(m.OldTuple, wal.Row{}, m.OldTupleType == 'K')
	default:
		err = fmt.Errorf("not a row message: %T", msg)
	}
	return c, err
}

// errUnwatched: pglogrepl read the message, and the decoder skips it.
var errUnwatched = errors.New("unwatched table")

// oldBoundsCheck is the check the decoder made before pglogrepl.Parse:
// every tuple of the message lies within it.
func oldBoundsCheck(data []byte) error {
	tuples := 1
	if data[0] == 'U' {
		tuples = 2 // an optional old tuple, then the new one
	}
	p := rowMessageHead
	for n := 0; n < tuples; n++ {
		if p >= len(data) {
			return errors.New("truncated")
		}
		kind := data[p]
		p++
		if data[0] == 'U' && n == 0 && kind == 'N' {
			n++
		}
		t, err := readTuple(data, p, nil)
		if err != nil {
			return err
		}
		p = t.end
	}
	return nil
}

// testRelation is relation 1, "events", whose first column is its key.
func testRelation() *relation {
	cols := []string{"id", "title", "description"}
	return &relation{name: "events", columns: cols, cols: wal.NewColumns(cols),
		key: []bool{true, false, false}, watched: true, message: -1}
}

// newAfterOld reports whether the byte after an UPDATE's old tuple is 'N':
// pglogrepl skips that byte unread, rowMessage requires it.
func newAfterOld(data []byte) bool {
	if len(data) < 6 || data[0] != 'U' || (data[5] != 'K' && data[5] != 'O') {
		return true
	}
	t, err := readTuple(data, 6, nil)
	return err != nil || t.end >= len(data) || data[t.end] == 'N'
}

func FuzzRowMessage(f *testing.F) {
	key := func(b []byte) []byte { b[5] = 'K'; return b }
	for _, m := range [][]byte{
		encInsert(1, txt("e1"), txt("Practice"), null),
		encInsert(1, txt("e1"), txt(""), txt("long")),
		encUpdate(1, []col{txt("e1"), txt("Practice"), txt("long")}, []col{txt("e1"), txt("Game"), toast}),
		encUpdate(1, nil, []col{txt("e1"), txt("Game"), toast}),
		key(encUpdate(1, []col{txt("e1"), null, null}, []col{txt("e2"), txt("Game"), null})),
		encDelete(1, txt("e1"), txt("Game"), null),
		key(encDelete(1, txt("e1"), null, null)),
		encInsert(1, txt("e1")),
		encInsert(1, txt("e1"), txt("x"), txt("y"))[:14],
		append(binary.BigEndian.AppendUint32([]byte{'I', 0, 0, 0, 1, 'N', 0, 3, 't'}, 0xFFFFFFF0), 'x'),
		{'U', 0, 0, 0, 1, 'X'},
		{'D', 0, 0, 0, 1},
	} {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || (data[0] != 'I' && data[0] != 'U' && data[0] != 'D') {
			return
		}
		// Relation 1 is watched, 2 is not.
		relID := uint32(1)
		if len(data) >= 5 {
			relID = 1 + uint32(data[4]&1)
			binary.BigEndian.PutUint32(data[1:], relID)
		}
		rel := testRelation()
		skipped := *rel
		skipped.name, skipped.watched = "audit_log", false
		d := newDecoder(0, "")
		d.relations[1], d.relations[2] = rel, &skipped
		if relID == 2 {
			rel = &skipped
		}
		d.tx = &wal.Tx{CommitLSN: 1}
		want, refErr := referenceChange(rel, data)
		err := d.rowMessage(data)
		switch {
		case err != nil && !errors.Is(err, errMalformed):
			t.Fatalf("error %v does not wrap errMalformed", err)
		case refErr != nil && !errors.Is(refErr, errUnwatched) && err == nil:
			if len(data) == 8 && data[0] == 'I' {
				// pglogrepl wants 8 bytes after the type, so it refuses an
				// INSERT of a table without columns (CREATE TABLE t ()),
				// which the old decoder then reconnected on for ever;
				// rowMessage reads it (and skips it: no watched table is
				// without columns).
				return
			}
			t.Fatalf("pglogrepl refused %q (%v); rowMessage read %+v", data, refErr, d.tx.Changes)
		case refErr == nil && err != nil:
			if newAfterOld(data) {
				t.Fatalf("pglogrepl read %q as %+v; rowMessage: %v", data, want, err)
			}
		case errors.Is(refErr, errUnwatched):
			if err != nil && newAfterOld(data) {
				t.Fatalf("pglogrepl read %q of an unwatched table; rowMessage: %v", data, err)
			}
			if n := len(d.tx.Changes); n != 0 {
				t.Fatalf("%d changes of an unwatched table", n)
			}
		case refErr == nil:
			if len(d.tx.Changes) != 1 {
				t.Fatalf("%d changes, want 1", len(d.tx.Changes))
			}
			got := d.tx.Changes[0]
			if got.Op != want.Op || got.Table != want.Table || got.OldFull != want.OldFull ||
				!maps.Equal(maps.Collect(got.Old.All()), maps.Collect(want.Old.All())) ||
				!maps.Equal(maps.Collect(got.New.All()), maps.Collect(want.New.All())) ||
				got.Old.IsZero() != want.Old.IsZero() || got.New.IsZero() != want.New.IsZero() {
				t.Fatalf("%q:\nrowMessage %+v\npglogrepl  %+v", data, got, want)
			}
		}
	})
}
