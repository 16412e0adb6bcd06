package scenario

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/sioclient"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
)

// stampPrefix starts every title the writers set; the rest is the write
// time in Unix nanoseconds.
const stampPrefix = "bench:"

// fleet is N connected clients and what they received.
type fleet struct {
	conns    []*sioclient.Conn
	received []atomic.Int64 // per client, event:updated with a stamp
	total    atomic.Int64
	other    atomic.Int64 // other events
	bad      atomic.Int64 // unparseable stamps
	// lat receives latencies while recording; a sweep gives each step its own.
	lat       atomic.Pointer[stats.Histogram]
	recording atomic.Bool
	// slots, if set, receives every latency by write time, recording or
	// not.
	slots atomic.Pointer[timeline]
	// ended is when client i's reader returned (Unix ns), 0 while it runs.
	ended    []atomic.Int64
	wg       sync.WaitGroup
	runErrs  atomic.Int64
	firstErr atomic.Value
}

type fleetConfig struct {
	URL string
	// URLs, if set, are several servers (the nodes of a cluster): client i
	// connects to URLs[i mod len(URLs)].
	URLs       []string
	Tokens     func(i int) string // token of client i
	N          int
	Parallel   int // concurrent handshakes; default 200
	ReadyEvent string
	Sources    int // source addresses 127.0.0.1..; default 8
	// SourceBase is the last byte of the first source address (default
	// 1): processes connecting at once use distinct addresses, so their
	// ephemeral ports do not come from one range.
	SourceBase int
	// Handle, if set, receives client i's events instead of the stamp
	// counter (received, total, latencies stay zero; runErrs still counts).
	Handle func(i int, name, args []byte)
}

// connect dials all clients; each starts reading at once.
func connect(ctx context.Context, cfg fleetConfig) (*fleet, time.Duration, error) {
	f := &fleet{conns: make([]*sioclient.Conn, cfg.N), received: make([]atomic.Int64, cfg.N), ended: make([]atomic.Int64, cfg.N)}
	urls := cfg.URLs
	if len(urls) == 0 {
		urls = []string{cfg.URL}
	}
	if cfg.SourceBase <= 0 {
		cfg.SourceBase = 1
	}
	f.lat.Store(&stats.Histogram{})
	if cfg.Parallel <= 0 {
		cfg.Parallel = 200
	}
	if cfg.Sources <= 0 {
		// Several source addresses, so consecutive runs do not run out of
		// ephemeral ports to sockets still in TIME_WAIT.
		cfg.Sources = 8
	}
	clients := make([]*http.Client, cfg.Sources)
	for i := range clients {
		clients[i] = sioclient.SourceClient(net.IPv4(127, 0, 0, byte(cfg.SourceBase+i)))
	}
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Parallel)
	for i := 0; i < cfg.N; i++ {
		g.Go(func() error {
			c, err := sioclient.Dial(gctx, sioclient.Options{
				URL: urls[i%len(urls)], Token: cfg.Tokens(i), ReadyEvent: cfg.ReadyEvent,
				HTTPClient: clients[i%len(clients)], Timeout: 60 * time.Second,
			})
			if err != nil {
				return fmt.Errorf("client %d: %w", i, err)
			}
			f.conns[i] = c
			f.wg.Add(1)
			go f.read(i, c, cfg.Handle)
			return nil
		})
	}
	err := g.Wait()
	took := time.Since(start)
	if err != nil {
		f.close()
		return nil, took, err
	}
	return f, took, nil
}

func (f *fleet) read(i int, c *sioclient.Conn, handle func(i int, name, args []byte)) {
	defer f.wg.Done()
	h := func(name, args []byte) { handle(i, name, args) }
	if handle == nil {
		h = f.count(i)
	}
	err := c.Run(h)
	f.ended[i].Store(time.Now().UnixNano())
	if err != nil {
		if f.runErrs.Add(1) == 1 {
			f.firstErr.Store(fmt.Errorf("client %d: %w", i, err))
		}
	}
}

// count is the default handler: event:updated carrying a stamp counts as a
// delivery with its latency.
func (f *fleet) count(i int) sioclient.Handler {
	return func(name, args []byte) {
		if string(name) != "event:updated" {
			f.other.Add(1)
			return
		}
		now := time.Now().UnixNano()
		ns, ok := parseStamp(args)
		if !ok {
			f.bad.Add(1)
			return
		}
		f.received[i].Add(1)
		f.total.Add(1)
		if f.recording.Load() {
			f.lat.Load().Record(now - ns)
		}
		if t := f.slots.Load(); t != nil {
			t.record(ns, now-ns) // the warmup too: a step's start is where it stalls
		}
	}
}

// parseStamp is the write time an event:updated payload's title carries
// (stampPrefix and Unix nanoseconds).
func parseStamp(args []byte) (int64, bool) {
	title, ok := sioclient.StringField(args, "event_title")
	if !ok || len(title) <= len(stampPrefix) || string(title[:len(stampPrefix)]) != stampPrefix {
		return 0, false
	}
	ns, err := strconv.ParseInt(string(title[len(stampPrefix):]), 10, 64)
	return ns, err == nil
}

// close disconnects every client and waits for the readers.
func (f *fleet) close() {
	for _, c := range f.conns {
		if c != nil {
			c.Close()
		}
	}
	f.wg.Wait()
}

// waitFor waits until total reaches want, nothing arrived for idle, limit
// passed (if > 0), or ctx ends; it returns when the last delivery was
// counted.
func (f *fleet) waitFor(ctx context.Context, want int64, idle, limit time.Duration) time.Time {
	last, lastAt := f.total.Load(), time.Now()
	start := lastAt
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		n := f.total.Load()
		if n != last {
			last, lastAt = n, time.Now()
		}
		if n >= want || time.Since(lastAt) > idle || (limit > 0 && time.Since(start) > limit) {
			return lastAt
		}
		select {
		case <-ctx.Done():
			return lastAt
		case <-t.C:
		}
	}
}

// accounting compares what each client got with what it should have.
type accounting struct {
	Expected   int64 `json:"expected"`
	Delivered  int64 `json:"delivered"`
	Lost       int64 `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	Other      int64 `json:"other_events"`
	BadStamps  int64 `json:"bad_stamps"`
	Dropped    int64 `json:"clients_dropped"`
}

// snapshot is what each client has received so far, for accountSince.
type snapshot struct {
	received               []int64
	total, other, bad, err int64
}

func (f *fleet) snapshot() snapshot {
	s := snapshot{received: make([]int64, len(f.received)), total: f.total.Load(), other: f.other.Load(), bad: f.bad.Load(), err: f.runErrs.Load()}
	for i := range f.received {
		s.received[i] = f.received[i].Load()
	}
	return s
}

func (f *fleet) account(expected func(i int) int64) accounting {
	return f.accountSince(snapshot{}, expected)
}

// accountSince compares what each client got since base with what it
// should have.
func (f *fleet) accountSince(base snapshot, expected func(i int) int64) accounting {
	var a accounting
	for i := range f.received {
		e, got := expected(i), f.received[i].Load()
		if base.received != nil {
			got -= base.received[i]
		}
		a.Expected += e
		a.Delivered += got
		if got < e {
			a.Lost += e - got
		} else {
			a.Duplicates += got - e
		}
	}
	a.Other, a.BadStamps, a.Dropped = f.other.Load()-base.other, f.bad.Load()-base.bad, f.runErrs.Load()-base.err
	return a
}
