package cdc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cdc/derive"
	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// koordiDB creates a fresh database with Koordi's tables and the service's
// objects, and returns its URL and a connection to it.
func koordiDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	return pgcluster.NewKoordiDatabase(t, cluster)
}

func dial(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	return pgcluster.Connect(t, url)
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// recorder stands in for the derivation rules: it records every decoded
// transaction and turns each change into one envelope, so the stream's
// tests see exactly what the decoder produced.
type recorder struct {
	mu  sync.Mutex
	txs []*wal.Tx
	ch  chan *wal.Tx
}

func newRecorder() *recorder { return &recorder{ch: make(chan *wal.Tx, 10000)} }

func (r *recorder) Bootstrap(context.Context, derive.Querier) error { return nil }

func (r *recorder) Derive(tx *wal.Tx) schema.Transaction {
	r.mu.Lock()
	r.txs = append(r.txs, tx)
	r.mu.Unlock()
	r.ch <- tx
	out := schema.Transaction{CommitLSN: tx.CommitLSN, CommitTime: tx.CommitTime, Xid: tx.Xid, Events: make([]schema.Envelope, len(tx.Changes))}
	for i, c := range tx.Changes {
		out.Events[i] = schema.Envelope{
			Offset: schema.Offset{LSN: tx.CommitLSN, Index: uint32(i)},
			Room:   "test",
			Event:  c.Op.String() + " " + c.Table,
			Data:   json.RawMessage(`{}`),
		}
	}
	return out
}

// State: a recorder keeps no state.
func (r *recorder) State() *derive.State { return nil }

// waitTx returns the next recorded transaction for which match is true.
func (r *recorder) waitTx(t *testing.T, match func(*wal.Tx) bool) *wal.Tx {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case tx := <-r.ch:
			if match(tx) {
				return tx
			}
		case <-timeout:
			t.Fatal("timed out waiting for a transaction")
		}
	}
}

// sets reports whether tx updates table so that column becomes value.
func sets(table, column, value string) func(*wal.Tx) bool {
	return func(tx *wal.Tx) bool {
		for _, c := range tx.Changes {
			if c.Table == table && c.New.Has(column) && c.New.Get(column).Text == value {
				return true
			}
		}
		return false
	}
}

// running is a consumer run by a test.
type running struct {
	c      *Consumer
	cancel context.CancelFunc
	result chan error
	once   sync.Once
	err    error
}

// wait returns Run's error once it has ended on its own.
func (r *running) wait() error {
	r.once.Do(func() { r.err = <-r.result })
	return r.err
}

// stop cancels Run and returns its error.
func (r *running) stop() error {
	r.cancel()
	return r.wait()
}

// start runs a consumer with d as deriver (nil: the derivation rules) until
// the test ends or stop.
func start(t *testing.T, cfg Config, d deriver, sink Sink) *running {
	t.Helper()
	if cfg.SlotName == "" {
		cfg.SlotName = slotFor(cfg.ConnString)
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 50 * time.Millisecond
	}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	if d == nil {
		d = derive.New(derive.Config{Logger: cfg.Logger, Registerer: cfg.Registerer})
	}
	c := newConsumer(cfg, d)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, result: make(chan error, 1)}
	go func() { r.result <- c.Run(ctx, sink) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil && !errors.Is(err, errSinkClosed) && !errors.Is(err, ErrLostLeadership) {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

var errSinkClosed = errors.New("test sink failed on purpose")

// discard is a sink that accepts everything.
var discard = SinkFunc(func(context.Context, schema.Transaction) error { return nil })

// slotConfirmed reads the slot's confirmed_flush_lsn.
func slotConfirmed(t *testing.T, conn *pgx.Conn, slot string) uint64 {
	t.Helper()
	var lsn string
	err := conn.QueryRow(context.Background(),
		`SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn)
	if err != nil {
		t.Fatal(err)
	}
	var hi, lo uint64
	if _, err := fmt.Sscanf(lsn, "%X/%X", &hi, &lo); err != nil {
		t.Fatal(err)
	}
	return hi<<32 | lo
}

// render prints transactions for golden files, with LSNs replaced by their
// order so the output is stable.
func render(txs []*wal.Tx) string {
	var b strings.Builder
	for i, tx := range txs {
		fmt.Fprintf(&b, "tx %d (%d changes)\n", i+1, len(tx.Changes))
		for _, c := range tx.Changes {
			if c.Op == wal.OpMessage {
				fmt.Fprintf(&b, "  MESSAGE %s\n", c.Message)
				continue
			}
			fmt.Fprintf(&b, "  %s %s\n", c.Op, c.Table)
			if !c.Old.IsZero() {
				fmt.Fprintf(&b, "    old: %s\n", renderRow(c.Old))
			}
			if !c.New.IsZero() {
				fmt.Fprintf(&b, "    new: %s\n", renderRow(c.New))
			}
		}
	}
	return b.String()
}

func renderRow(r wal.Row) string {
	var parts []string
	for k, v := range r.All() {
		if !v.Valid {
			parts = append(parts, k+"=NULL")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%q", k, v.Text))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slotFor names a slot after the test's database: slot names are
// cluster-wide, databases are per test.
func slotFor(url string) string {
	db := url[strings.LastIndex(url, "/")+1:]
	db, _, _ = strings.Cut(db, "?")
	return "slot_" + db
}

// requireToasted fails the test unless the events table's TOAST relation
// holds data: a value stored out of line is what makes pgoutput send an
// unchanged column as "unchanged TOAST" instead of its value, so a test of
// that path must see it is exercised.
func requireToasted(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var size int64
	if err := conn.QueryRow(context.Background(),
		`SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'events'::regclass`).Scan(&size); err != nil {
		t.Fatal(err)
	}
	if size == 0 {
		t.Fatal("nothing of events is stored out of line; the test does not exercise unchanged TOAST values")
	}
}

// waitReset is the next reason given to OnReset, or the test fails after
// 30 s: a gap that is never reported must not hang the package.
func waitReset(t *testing.T, resets <-chan string) string {
	t.Helper()
	select {
	case reason := <-resets:
		return reason
	case <-time.After(30 * time.Second):
		t.Fatal("OnReset was not called")
		return ""
	}
}
