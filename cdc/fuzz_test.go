package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/cdc/wal"
	ksql "github.com/koordi/koordi-realtime/sql"
)

// pgoutput protocol version 1 encoders for the decoder's table tests and the
// fuzz seeds.

type col struct {
	kind byte // 't', 'n' or 'u'
	text string
}

func txt(s string) col { return col{kind: 't', text: s} }

var (
	null  = col{kind: 'n'}
	toast = col{kind: 'u'}
)

func cstring(b []byte, s string) []byte { return append(append(b, s...), 0) }

func encRelation(id uint32, name string, cols ...string) []byte {
	return encRelationIn(id, "public", name, cols...)
}

func encRelationIn(id uint32, namespace, name string, cols ...string) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = cstring(b, namespace)
	b = cstring(b, name)
	b = append(b, 'f')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, 0)
		b = cstring(b, c)
		b = binary.BigEndian.AppendUint32(b, 25) // text
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	return b
}

func encBegin(final uint64) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, final)
	b = binary.BigEndian.AppendUint64(b, 0)
	return binary.BigEndian.AppendUint32(b, 7)
}

func encCommit(commit, end uint64) []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, commit)
	b = binary.BigEndian.AppendUint64(b, end)
	return binary.BigEndian.AppendUint64(b, 0)
}

func encTuple(b []byte, cols []col) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.kind)
		if c.kind == 't' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c.text)))
			b = append(b, c.text...)
		}
	}
	return b
}

func encInsert(rel uint32, cols ...col) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'I'}, rel)
	return encTuple(append(b, 'N'), cols)
}

func encUpdate(rel uint32, old, new []col) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'U'}, rel)
	if old != nil {
		b = encTuple(append(b, 'O'), old)
	}
	return encTuple(append(b, 'N'), new)
}

func encDelete(rel uint32, old ...col) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'D'}, rel)
	return encTuple(append(b, 'O'), old)
}

func encMessage(transactional bool, prefix, content string) []byte {
	b := []byte{'M', 0}
	if transactional {
		b[1] = 1
	}
	b = binary.BigEndian.AppendUint64(b, 0x100)
	b = cstring(b, prefix)
	b = binary.BigEndian.AppendUint32(b, uint32(len(content)))
	return append(b, content...)
}

// decodeCases are message sequences with what the decoder makes of them.
var decodeCases = []struct {
	name string
	msgs [][]byte
}{
	{"insert by column name", [][]byte{
		encRelation(1, "events", "id", "title"),
		encBegin(0x10), encInsert(1, txt("e1"), txt("Practice")), encCommit(0x10, 0x18),
	}},
	{"relation re-sent with an added and a dropped column", [][]byte{
		encRelation(1, "events", "id", "title", "location"),
		encBegin(0x10), encInsert(1, txt("e1"), txt("Practice"), null), encCommit(0x10, 0x18),
		encRelation(1, "events", "id", "colour", "title"),
		encBegin(0x20), encUpdate(1, []col{txt("e1"), null, txt("Practice")}, []col{txt("e1"), txt("red"), txt("Game")}), encCommit(0x20, 0x28),
	}},
	{"unchanged toast taken from the old tuple", [][]byte{
		encRelation(1, "events", "id", "description", "assigned_to_user_id"),
		encBegin(0x10), encUpdate(1, []col{txt("e1"), txt("long text"), null}, []col{txt("e1"), toast, txt("u1")}), encCommit(0x10, 0x18),
	}},
	{"unchanged toast without an old tuple is left out", [][]byte{
		encRelation(1, "events", "id", "description"),
		encBegin(0x10), encUpdate(1, nil, []col{txt("e1"), toast}), encCommit(0x10, 0x18),
	}},
	{"unwatched table and logical messages skipped, also with the service's prefix", [][]byte{
		encRelation(1, "audit_log", "id"),
		encRelation(2, "users", "id", "name"),
		encBegin(0x10),
		encInsert(1, txt("a1")),
		encMessage(true, "other", "x"),
		encMessage(true, "koordi_realtime", `{"room":"user:u1"}`),
		encDelete(2, txt("u1"), txt("Ada")),
		encCommit(0x10, 0x18),
	}},
	{"an insert into the emit table is an explicit event; its delete is skipped", [][]byte{
		encRelationIn(3, "koordi_realtime", "emitted", "id", "message"),
		encBegin(0x10),
		encInsert(3, txt("1"), txt(`{"room":"user:u1","event":"e","data":{}}`)),
		encDelete(3, txt("1"), null),
		encCommit(0x10, 0x18),
	}},
	{"a table named emitted elsewhere is not the emit table", [][]byte{
		encRelation(3, "emitted", "id", "message"),
		encBegin(0x10), encInsert(3, txt("1"), txt(`{"room":"user:u1","event":"e","data":{}}`)), encCommit(0x10, 0x18),
	}},
	{"an emit row with a NULL message is skipped", [][]byte{
		encRelationIn(3, "koordi_realtime", "emitted", "id", "message"),
		encBegin(0x10), encInsert(3, txt("1"), null), encCommit(0x10, 0x18),
	}},
	{"non-transactional message outside a transaction", [][]byte{
		encMessage(false, "koordi_realtime", "x"),
	}},
	{"change before its relation", [][]byte{
		encBegin(0x10), encInsert(9, txt("x")),
	}},
	{"tuple shorter than the relation", [][]byte{
		encRelation(1, "events", "id", "title"),
		encBegin(0x10), encInsert(1, txt("e1")),
	}},
	{"commit without begin", [][]byte{encCommit(0x10, 0x18)}},
	{"commit LSN differs from begin", [][]byte{encBegin(0x10), encCommit(0x11, 0x18)}},
	{"truncated tuple length", [][]byte{
		encRelation(1, "events", "id"),
		encBegin(0x10), encInsert(1, txt("e1"))[:12],
	}},
	{"tuple length beyond the message", [][]byte{
		encRelation(1, "events", "id"),
		encBegin(0x10), append(binary.BigEndian.AppendUint32([]byte{'I', 0, 0, 0, 1, 'N', 0, 1, 't'}, 0xFFFFFFF0), 'x'),
	}},
	{"truncate is skipped", [][]byte{
		encBegin(0x10), {'T', 0, 0, 0, 1, 0, 0, 0, 0, 1}, encCommit(0x10, 0x18),
	}},
	{"truncate relation count beyond the message", [][]byte{
		encBegin(0x10), {'T', 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 1},
	}},
	{"unknown message type", [][]byte{{'Z', 1, 2}}},
	{"empty", [][]byte{{}}},
}

// TestDecoderTable runs pgoutput message sequences through the decoder and
// compares what it makes of them with testdata/decoder.golden.
func TestDecoderTable(t *testing.T) {
	var b strings.Builder
	for _, tc := range decodeCases {
		fmt.Fprintf(&b, "== %s\n", tc.name)
		d := newDecoder(0, "")
		var txs []*wal.Tx
		for i, m := range tc.msgs {
			done, err := d.decode(m)
			if err != nil {
				if !errors.Is(err, errMalformed) {
					t.Errorf("%s: message %d: error %v does not wrap errMalformed", tc.name, i, err)
				}
				fmt.Fprintf(&b, "error at message %d: %v\n", i+1, err)
				break
			}
			if done != nil {
				fmt.Fprintf(&b, "commit %X end %X\n", done.tx.CommitLSN, done.end)
				txs = append(txs, done.tx)
			}
		}
		b.WriteString(render(txs))
		fmt.Fprintf(&b, "skipped %d, toast filled %d\n\n", d.skipped, d.toastFilled)
	}
	golden(t, "decoder.golden", b.String())
}

// FuzzDecode feeds arbitrary bytes through the decoder as a sequence of
// XLogData payloads (each prefixed by a 2-byte length): the relation cache,
// transaction buffering and tuple conversion must never panic, and a
// decoded row never holds more columns than its relation named.
func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add(joinFrames(tc.msgs))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDecoder(0, "")
		for _, m := range splitFrames(data) {
			done, err := d.decode(m)
			if err != nil {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("error %v does not wrap errMalformed", err)
				}
				return
			}
			if done == nil {
				continue
			}
			for _, c := range done.tx.Changes {
				for _, r := range []wal.Row{c.Old, c.New} {
					if r.Len() > 0xFFFF {
						t.Fatalf("row with %d columns", r.Len())
					}
				}
			}
		}
	})
}

func joinFrames(msgs [][]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

func splitFrames(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// TestFuzzSeedCorpus keeps testdata/fuzz/FuzzDecode in step with
// decodeCases (written with -update).
func TestFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	for i, tc := range decodeCases {
		path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", joinFrames(tc.msgs))
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != body {
			t.Errorf("%s (%s) is missing or stale: run go test -run TestFuzzSeedCorpus -update", path, tc.name)
		}
	}
}

// BenchmarkDecode measures decoding one single-row UPDATE transaction of an
// events row (19 columns, full old tuple) — the stream's hot path.
func BenchmarkDecode(b *testing.B) {
	cols := []string{"id", "event_calendar_id", "ics_uid", "title", "description", "location", "location_lat",
		"location_lng", "start_time", "end_time", "is_all_day", "assigned_to_user_id", "last_modified",
		"created_at", "updated_at", "version", "is_skipped", "sync_in_progress", "is_cancelled"}
	row := func(title string) []col {
		r := make([]col, len(cols))
		for i, c := range cols {
			r[i] = txt(c + "-value-0123456789")
		}
		r[3] = txt(title)
		return r
	}
	msgs := [][]byte{encBegin(0x10), encUpdate(1, row("old"), row("new")), encCommit(0x10, 0x18)}
	d := newDecoder(0, "")
	if _, err := d.decode(encRelation(1, "events", cols...)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			if _, err := d.decode(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestOversizedEmitCutBeforeCopy: a message longer than emit allows (only
// the table's owner could write one, bypassing emit) is handed on cut to one
// byte over the bound, which derivation rejects as too_large, so the
// transaction never holds the rest.
func TestOversizedEmitCutBeforeCopy(t *testing.T) {
	d := newDecoder(0, "")
	huge := strings.Repeat("x", 2*ksql.MaxEmitBytes)
	for _, m := range [][]byte{
		encRelationIn(3, "koordi_realtime", "emitted", "id", "message"),
		encBegin(0x10), encInsert(3, txt("1"), txt(huge)),
	} {
		if _, err := d.decode(m); err != nil {
			t.Fatal(err)
		}
	}
	done, err := d.decode(encCommit(0x10, 0x18))
	if err != nil || done == nil {
		t.Fatalf("commit: %v %v", done, err)
	}
	if n := len(done.tx.Changes); n != 1 {
		t.Fatalf("%d changes, want 1", n)
	}
	msg := done.tx.Changes[0].Message
	if got := len(msg); got != ksql.MaxEmitBytes+1 {
		t.Errorf("message of %d bytes handed on, want %d", got, ksql.MaxEmitBytes+1)
	}
	if cap(msg) >= len(huge) {
		t.Errorf("the message was copied whole (capacity %d) before it was cut", cap(msg))
	}
}
