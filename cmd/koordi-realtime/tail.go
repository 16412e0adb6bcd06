package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	"github.com/koordi/koordi-realtime/schema"
)

func runTail(ctx context.Context, env *environment, args []string) error {
	var (
		db             dbConfig
		statusInterval time.Duration
	)
	f := env.flags("tail", "Run the CDC side alone and print each derived event as one JSON line "+
		`{"offset","room","event","data"} on stdout. Uses its own replication slot, so it never takes events from serve. `+
		"The slot stays when tail exits (it resumes there next time); drop it with SELECT pg_drop_replication_slot('koordi_realtime_tail').")
	db.bind(f, false)
	f.String(&db.slot, "slot-name", "TAIL_SLOT_NAME", "koordi_realtime_tail", "replication slot of tail (not serve's SLOT_NAME)")
	f.Duration(&statusInterval, "status-interval", "TAIL_STATUS_INTERVAL", 10*time.Second, "how often tail confirms the position of the lines it has printed to PostgreSQL (the slot then frees the WAL before it); at most a quarter of wal_sender_timeout")
	if err := f.Parse(args); err != nil {
		return err
	}
	var problems cli.Problems
	if db.url == "" {
		problems.Addf("DATABASE_URL is not set (flag --database-url)")
	}
	if statusInterval < 0 {
		problems.Addf("TAIL_STATUS_INTERVAL must not be negative")
	}
	checkLog(&problems, db.logFormat, db.logLevel)
	if err := problems.Err(); err != nil {
		return err
	}
	logger, err := env.logger(db.logFormat, db.logLevel)
	if err != nil {
		return err
	}
	consumer, err := cdc.New(cdc.Config{
		ConnString:     db.url,
		SlotName:       db.slot,
		Publication:    db.publication,
		StatusInterval: statusInterval,
		Logger:         logger,
	})
	if err != nil {
		return cli.User(err)
	}
	if err := consumer.Run(ctx, newLineSink(env.stdout)); err != nil {
		if cdc.IsConfigError(err) {
			return cli.User(err)
		}
		return err
	}
	return nil
}

// lineSink prints envelopes as JSON lines. It flushes before Deliver
// returns, so a transaction is confirmed to PostgreSQL only once its lines
// were written.
type lineSink struct {
	w   *bufio.Writer
	enc *json.Encoder
}

func newLineSink(w io.Writer) *lineSink {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false) // payloads are printed as PostgreSQL and the rules wrote them
	return &lineSink{w: bw, enc: enc}
}

func (s *lineSink) Deliver(_ context.Context, tx schema.Transaction) error {
	for _, ev := range tx.Events {
		if err := s.enc.Encode(ev); err != nil {
			return fmt.Errorf("print event %s: %w", ev.Offset, err)
		}
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("print: %w", err)
	}
	return nil
}
