package cdc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/schema"
)

func TestGapRecord(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	at := time.Unix(1_700_000_000, 123)
	good := gapRecord(key, "koordi_realtime", 1234, "publication_changed", at)
	fields := strings.Fields(good)
	for _, tc := range []struct {
		name, slot, content string
		key                 []byte
		want                string // "" for refused
		xid                 uint32 // 0: the record's, 1234
	}{
		{"signed", "koordi_realtime", good, key, "publication_changed", 0},
		{"other key", "koordi_realtime", good, bytes.Repeat([]byte{8}, 32), "", 0},
		{"no key", "koordi_realtime", good, nil, "", 0},
		{"other slot", "other_slot", good, key, "", 0},
		{"replayed in another transaction", "koordi_realtime", good, key, "", 1235},
		{"reason changed", "koordi_realtime", strings.Replace(good, "publication_changed", "slot_recreated", 1), key, "", 0},
		{"time changed", "koordi_realtime", strings.Replace(good, fields[1], "1", 1), key, "", 0},
		{"mac cut", "koordi_realtime", good[:len(good)-2], key, "", 0},
		{"other version", "koordi_realtime", "v2" + good[2:], key, "", 0},
		{"extra field", "koordi_realtime", good + " x", key, "", 0},
		{"empty", "koordi_realtime", "", key, "", 0},
		{"too long", "koordi_realtime", good + strings.Repeat(" ", maxGapRecord), key, "", 0},
		{"time not a number", "koordi_realtime", gapRecordRaw(key, "koordi_realtime", "soon", "slot_created"), key, "", 0},
		{"reason not a word", "koordi_realtime", gapRecordRaw(key, "koordi_realtime", "1", "Slot-Created"), key, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			xid := tc.xid
			if xid == 0 {
				xid = 1234
			}
			got, ok := parseGapRecord(tc.key, tc.slot, xid, []byte(tc.content))
			if ok != (tc.want != "") || got != tc.want {
				t.Fatalf("parseGapRecord(%q) = %q, %v; want %q", tc.content, got, ok, tc.want)
			}
		})
	}
}

// gapRecordRaw signs fields parseGapRecord must refuse before the MAC.
func gapRecordRaw(key []byte, slot, ns, reason string) string {
	return "v1 " + ns + " " + reason + " " + gapMAC(key, slot, 1234, ns, reason)
}

// gapSink records, in order, the transactions delivered and the resets it
// carries; fail makes its next Reset fail.
type gapSink struct {
	mu   sync.Mutex
	log  []string
	lsns []uint64 // of the transactions delivered
	fail bool
	ch   chan string
}

func newGapSink() *gapSink { return &gapSink{ch: make(chan string, 100)} }

func (s *gapSink) Deliver(_ context.Context, tx schema.Transaction) error {
	s.mu.Lock()
	s.lsns = append(s.lsns, tx.CommitLSN)
	s.mu.Unlock()
	s.note(fmt.Sprintf("tx %d", len(tx.Events)))
	return nil
}

func (s *gapSink) RecordedGap(_ context.Context, reason string, _ uint64) error {
	s.mu.Lock()
	fail := s.fail
	s.fail = false
	s.mu.Unlock()
	if fail {
		return errSinkClosed
	}
	s.note("reset " + reason)
	return nil
}

func (s *gapSink) note(x string) {
	s.mu.Lock()
	s.log = append(s.log, x)
	s.mu.Unlock()
	s.ch <- x
}

func (s *gapSink) next(t *testing.T) string {
	t.Helper()
	select {
	case x := <-s.ch:
		return x
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the sink")
		return ""
	}
}

// TestRecordedGap: a gap recorded in the stream is reported by the consumer
// that decodes it, in its place among the transactions, to a sink that
// carries resets; one the sink fails to carry stays in the slot for the next
// session; a record signed with another key, written by a role with no
// grant at all, is ignored.
func TestRecordedGap(t *testing.T) {
	url, conn := koordiDB(t)
	key := bytes.Repeat([]byte{42}, 32)
	cfg := Config{ConnString: url, GapKey: key}
	write := func(name string) {
		exec(t, conn, `INSERT INTO users (id, email, name) VALUES (gen_random_uuid(), $1, $1)`, name+"@example.com")
	}
	sink := newGapSink()
	r := start(t, cfg, newRecorder(), sink)
	waitStreaming(t, r.c)

	write("before")
	if got := sink.next(t); got != "tx 1" {
		t.Fatalf("first: %q, want tx 1", got)
	}
	if err := r.c.RecordGap(context.Background(), "publication_changed"); err != nil {
		t.Fatal(err)
	}
	write("after")
	for _, want := range []string{"reset publication_changed", "tx 1"} {
		if got := sink.next(t); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}

	// Every role may emit a logical decoding message: one with no grant
	// on anything forges a record with a key of its own.
	exec(t, conn, `CREATE ROLE gap_forger LOGIN`)
	t.Cleanup(func() { exec(t, conn, `DROP ROLE IF EXISTS gap_forger`) })
	pc, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	pc.User = "gap_forger"
	forger, err := pgx.ConnectConfig(context.Background(), pc)
	if err != nil {
		t.Fatal(err)
	}
	var xid int64
	if err := forger.QueryRow(context.Background(), `SELECT txid_current()`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	// In a transaction of its own, so the xid is another one: signed
	// with the wrong key, and a copy of a good record in the wrong xid.
	forged := gapRecord(bytes.Repeat([]byte{1}, 32), r.c.cfg.SlotName, uint32(xid)+1, "slot_created", time.Now())
	replayed := gapRecord(key, r.c.cfg.SlotName, uint32(xid), "slot_created", time.Now())
	for _, rec := range []string{forged, replayed} {
		if _, err := forger.Exec(context.Background(), `SELECT pg_logical_emit_message(true, $1, $2)`, gapPrefix, rec); err != nil {
			t.Fatal(err)
		}
	}
	forger.Close(context.Background())
	write("after forgery")
	if got := sink.next(t); got != "tx 1" {
		t.Fatalf("after the forged record: %q, want only the next transaction", got)
	}

	// A reset the sink cannot carry ends the session before the record is
	// confirmed; the next session reports it again.
	if err := r.stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// The session stopped may not have confirmed its last transaction:
	// the next one may deliver it again, but nothing past the record.
	var before string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	var hi, lo uint64
	if _, err := fmt.Sscanf(before, "%X/%X", &hi, &lo); err != nil {
		t.Fatal(err)
	}
	recordAfter := hi<<32 | lo
	if err := r.c.RecordGap(context.Background(), "slot_recreated"); err != nil {
		t.Fatal(err)
	}
	write("behind the record")
	failing := newGapSink()
	failing.fail = true
	r2 := start(t, cfg, newRecorder(), failing)
	if err := r2.wait(); !errors.Is(err, errSinkClosed) {
		t.Fatalf("Run with a sink that cannot carry the reset: %v, want the sink's error", err)
	}
	sink3 := newGapSink()
	start(t, cfg, newRecorder(), sink3)
	got := sink3.next(t)
	for got == "tx 1" { // delivered again from before the record
		got = sink3.next(t)
	}
	if got != "reset slot_recreated" {
		t.Fatalf("next session: %q, want the recorded reset", got)
	}
	if got := sink3.next(t); got != "tx 1" {
		t.Fatalf("next session after the reset: %q, want the transaction behind the record", got)
	}
	failing.mu.Lock()
	defer failing.mu.Unlock()
	for _, lsn := range failing.lsns {
		if lsn > recordAfter {
			t.Errorf("the failing session delivered the transaction at %X, past the record: want nothing past it", lsn)
		}
	}
}

func TestRecordGapRefused(t *testing.T) {
	c := newConsumer(Config{ConnString: "postgres://nowhere.invalid/db", SlotName: "s"}, nil)
	if err := c.RecordGap(context.Background(), "slot_created"); !errors.Is(err, ErrNoGapKey) {
		t.Errorf("without a key: %v, want ErrNoGapKey", err)
	}
	c.cfg.GapKey = bytes.Repeat([]byte{1}, 32)
	if err := c.RecordGap(context.Background(), "not a reason"); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("bad reason: %v", err)
	}
	if err := (&Config{ConnString: "x", GapKey: []byte("short")}).fill(); !errors.Is(err, ErrConfig) {
		t.Errorf("short key: %v, want ErrConfig", err)
	}
}

// FuzzGapRecord: any message content under the gap prefix is refused or is
// exactly a record signed with the key.
func FuzzGapRecord(f *testing.F) {
	key := bytes.Repeat([]byte{42}, 32)
	f.Add([]byte(gapRecord(key, "koordi_realtime", 7, "slot_created", time.Unix(1, 0))))
	f.Add([]byte("v1 1 slot_created 00"))
	f.Add([]byte("v1  \x00 \xff"))
	f.Fuzz(func(t *testing.T, content []byte) {
		reason, ok := parseGapRecord(key, "koordi_realtime", 7, content)
		if !ok {
			return
		}
		if !validReason(reason) {
			t.Fatalf("accepted reason %q", reason)
		}
		f := strings.Fields(string(content))
		if f[3] != gapMAC(key, "koordi_realtime", 7, f[1], reason) {
			t.Fatalf("accepted %q without its MAC", content)
		}
	})
}

func TestIsPowerOf10(t *testing.T) {
	for n, want := range map[int]bool{1: true, 10: true, 100: true, 1000: true, 0: false, 2: false, 11: false, 20: false, 110: false} {
		if got := isPowerOf10(n); got != want {
			t.Errorf("isPowerOf10(%d) = %v", n, got)
		}
	}
}
