package gwonly

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/raw"
	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/schema"
)

// Config of the gateway-only server.
type Config struct {
	DatabaseURL string // read once, for the memberships
	JWTSecret   string
	Listen      string // Socket.IO address
	Control     string // control and pprof address
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	g, err := gateway.New(gateway.Config{JWTSecret: []byte(cfg.JWTSecret), RateLimit: 100})
	if err != nil {
		return err
	}
	snap, err := cdc.ReadMemberships(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("read memberships: %w", err)
	}
	g.LoadMemberships(&snap)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	cln, err := net.Listen("tcp", cfg.Control)
	if err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", g.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	p := &publisher{g: g}
	ctl := &http.Server{Handler: raw.ControlMux(p.run, g.Sockets), ReadHeaderTimeout: 10 * time.Second}

	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error { return serve(srv, ln) })
	eg.Go(func() error { return serve(ctl, cln) })
	eg.Go(func() error {
		<-ectx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(sctx)
		_ = srv.Shutdown(sctx)
		return ctl.Close()
	})
	err = eg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func serve(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// publisher issues plans to the gateway, one at a time.
type publisher struct {
	g    *gateway.Gateway
	mu   sync.Mutex
	next int64 // commits issued so far, across plans: offsets keep ascending
}

// run publishes plan: a fan-out backlog as fast as Publish takes it, or a
// rate plan on its open-loop schedule.
func (p *publisher) run(ctx context.Context, plan raw.Plan) (raw.Result, error) {
	if err := plan.Validate(); err != nil {
		return raw.Result{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	res := raw.Result{Sockets: p.g.Sockets(), PerCal: make([]int64, plan.Calendars)}
	start := time.Now()
	// Transactions go to PublishBatch as koordi's stream hands them over:
	// what is ready at once, up to a batch (a backlog in batches, a rate
	// plan's commits one by one unless some are already due together).
	var txs []schema.Transaction
	if plan.Backlog > 0 {
		for j := 0; j < plan.Backlog; j++ {
			tx := p.commit()
			tx.Events = make([]schema.Envelope, plan.Calendars)
			now := time.Now().UnixNano()
			for c := range plan.Calendars {
				tx.Events[c] = envelope(tx.CommitLSN, uint32(c), c, j%plan.EventsPerCalendar, now)
				res.PerCal[c]++
			}
			txs = append(txs, tx)
			if len(txs) == cdc.MaxBatch || j == plan.Backlog-1 {
				if err := p.g.PublishBatch(ctx, txs); err != nil {
					return res, err
				}
				txs = txs[:0]
			}
		}
		res.Commits = int64(plan.Backlog)
		res.Seconds = time.Since(start).Seconds()
		return res, nil
	}
	// A moment ahead, as raw starts its workers.
	start = start.Add(2 * time.Millisecond)
	total, iv := plan.Commits(), plan.Interval()
	due := func(k int64) time.Time { return start.Add(time.Duration(k) * iv) }
	for k := int64(0); k < total; {
		if d := time.Until(due(k)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return res, ctx.Err()
			}
		} else {
			res.Behind = max(res.Behind, -d)
		}
		txs = txs[:0]
		for now := time.Now(); k < total && len(txs) < cdc.MaxBatch && !due(k).After(now); k++ {
			c, e := plan.Commit(k)
			tx := p.commit()
			tx.Events = []schema.Envelope{envelope(tx.CommitLSN, 0, c, e, now.UnixNano())}
			res.PerCal[c]++
			txs = append(txs, tx)
		}
		if err := p.g.PublishBatch(ctx, txs); err != nil {
			return res, err
		}
	}
	res.Commits = total
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// commit starts the next transaction, at a made-up ascending LSN.
func (p *publisher) commit() schema.Transaction {
	p.next++
	return schema.Transaction{CommitLSN: 0x1000000 + uint64(p.next)<<8, CommitTime: time.Now(), Xid: uint32(p.next)}
}

// envelope is the event:updated koordi derives for the bench's UPDATE of
// event e of calendar cal's title to "bench:<stamp>".
func envelope(lsn uint64, index uint32, cal, e int, stamp int64) schema.Envelope {
	return schema.Envelope{
		Offset: schema.Offset{LSN: lsn, Index: index},
		Room:   "calendar:" + harness.CalendarID(cal),
		Event:  "event:updated",
		Data:   payload(cal, e, stamp),
	}
}

func payload(cal, e int, stamp int64) json.RawMessage {
	b := make([]byte, 0, 192)
	b = append(b, `{"event_id":"`...)
	b = append(b, harness.EventID(cal, e)...)
	b = append(b, `","event_title":"bench:`...)
	b = strconv.AppendInt(b, stamp, 10)
	b = append(b, `","event_calendar_id":"`...)
	b = append(b, harness.CalendarID(cal)...)
	b = append(b, `","changed":["title"]}`...)
	return b
}
