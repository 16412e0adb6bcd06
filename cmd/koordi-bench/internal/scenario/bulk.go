package scenario

import (
	"context"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/cdc/derive"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/sioclient"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
	"github.com/koordi/koordi-realtime/schema"
)

// BulkShape is one bulk UPDATE: Calendars rooms of one member and one
// socket each, EventsPerCalendar events in each, all updated by one
// statement.
type BulkShape struct {
	Calendars         int `json:"calendars"`
	EventsPerCalendar int `json:"events_per_calendar"`
}

func (s BulkShape) String() string { return fmt.Sprintf("%dx%d", s.Calendars, s.EventsPerCalendar) }

// ParseBulkShapes parses "300x667,100x2000".
func ParseBulkShapes(s string) ([]BulkShape, error) {
	var out []BulkShape
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, b, ok := strings.Cut(f, "x")
		c, err1 := strconv.Atoi(a)
		e, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || c < 1 || e < 1 || e > 0xffff {
			return nil, fmt.Errorf("bulk shape %q: want CALENDARSxEVENTS, e.g. 300x667", f)
		}
		out = append(out, BulkShape{Calendars: c, EventsPerCalendar: e})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no bulk shape")
	}
	return out, nil
}

// BulkConfig configures the bulk scenario.
type BulkConfig struct {
	Servers []string      // koordi, inproc or variants (koordi+GOGC=50); others are skipped
	Shapes  []BulkShape   // one fresh server per shape
	Bulk    int           // the server's BULK_EVENTS (default serve's 1,000): a room over it expects one sync:reset
	Sources int           // client source addresses; default 8
	Sample  time.Duration // RSS sampling period; default 10ms
	// Profile fetches heap profiles of servers with pprof (inproc) every
	// ProfileEvery (default 500ms) from the UPDATE to the end, each after a
	// forced collection (what is live then), named with the time since the
	// commit and the RSS. The collections lower the peak: take the peak
	// from a run without it.
	Profile      bool
	ProfileEvery time.Duration
}

// BulkRow is one server's figures for one shape.
type BulkRow struct {
	Server          string         `json:"server"`
	Shape           string         `json:"shape"`
	Rows            int            `json:"rows"`
	Expect          string         `json:"expect"` // "events" or "reset"
	ConnectSeconds  float64        `json:"connect_seconds"`
	UpdateSeconds   float64        `json:"update_seconds"`       // the UPDATE statement, to its commit
	FirstSeconds    float64        `json:"first_seconds"`        // commit to the first delivery
	DeliverySeconds float64        `json:"delivery_seconds"`     // commit to the last delivery
	EventsPerSec    float64        `json:"delivered_per_second"` // events ÷ (commit to last delivery)
	Latency         stats.Summary  `json:"latency"`              // statement start to receipt, per event
	Accounting      bulkAccounting `json:"accounting"`
	MemStart        harness.Mem    `json:"mem_started"` // server up, caught up, no socket
	MemBefore       harness.Mem    `json:"mem_before"`  // sockets connected, before the UPDATE
	MemAfter        harness.Mem    `json:"mem_after"`   // after the last delivery
	MemSettled      harness.Mem    `json:"mem_settled"` // 5 s later
	PeakSampled     int64          `json:"peak_rss_sampled_bytes"`
	PeakAtSeconds   float64        `json:"peak_at_seconds"` // after the commit
	ServerCores     float64        `json:"server_cpu_cores"`
	Load            string         `json:"loadavg"`
	GCTrace         []string       `json:"gctrace,omitempty"` // the server's gctrace lines during the run, if GODEBUG=gctrace=1
	Profiles        []string       `json:"profiles,omitempty"`
	Done            bool           `json:"complete"`
	// RSSSeries is the server's RSS, the most per 100 ms, from the
	// statement's start; At is seconds after the commit.
	RSSSeries []rssPoint `json:"rss_series"`
}

type rssPoint struct {
	slot int
	At   float64 `json:"at"`
	MiB  float64 `json:"mib"`
}

// bulkAccounting is what the sockets received against what each should.
type bulkAccounting struct {
	Sockets        int            `json:"sockets"`
	Complete       int            `json:"sockets_complete"` // got exactly what they should
	ExpectedEvents int64          `json:"expected_events"`
	Events         int64          `json:"events"` // distinct event:updated of the update, each socket's own room
	Duplicates     int64          `json:"duplicates"`
	Missing        int64          `json:"missing"`
	Foreign        int64          `json:"foreign"` // an event of another calendar, or not of the update
	ExpectedResets int64          `json:"expected_resets"`
	BulkResets     int64          `json:"bulk_resets"`
	OtherResets    map[string]int `json:"other_resets,omitempty"` // sync:reset by reason, other than bulk_change
	Other          int64          `json:"other_events"`
	Dropped        int64          `json:"clients_dropped"`
}

// bulkClient is one socket's receipts; only its reader goroutine writes
// them (counters are atomic for the progress check).
type bulkClient struct {
	cal         int
	seen        []uint64 // bitset of event indices
	events      atomic.Int64
	dups        atomic.Int64
	resets      atomic.Int64 // bulk_change
	foreign     atomic.Int64
	other       atomic.Int64
	mu          sync.Mutex
	otherResets map[string]int
}

// Bulk runs the bulk scenario: per shape, seed, start each server fresh,
// connect one socket per calendar, run one UPDATE of every event's title,
// and wait until every socket has its events (or its room's one sync:reset).
// It reports the server's peak RSS (VmHWM) and the delivery accounting.
func Bulk(ctx context.Context, e *Env, cfg BulkConfig) (*Report, error) {
	if cfg.Bulk == 0 {
		cfg.Bulk = derive.DefaultBulkEvents
	}
	if cfg.ProfileEvery <= 0 {
		cfg.ProfileEvery = 500 * time.Millisecond
	}
	if cfg.Sample <= 0 {
		cfg.Sample = 10 * time.Millisecond
	}
	rep := &Report{Scenario: "bulk", Started: time.Now(), Config: cfg, Machine: machine()}
	var rows []BulkRow
	defer func() { rep.Rows = rows }()
	var servers []string
	for _, s := range cfg.Servers {
		sp, err := parseServerSpec(s)
		if err != nil {
			return rep, err
		}
		switch sp.kind {
		case "koordi", "inproc", "url":
			servers = append(servers, s)
		default:
			e.logf("bulk: server %s skipped (the bulk scenario measures koordi-realtime: koordi, inproc, url)", s)
		}
	}
	for _, shape := range cfg.Shapes {
		topo := harness.Topology{Users: shape.Calendars, Calendars: shape.Calendars, EventsPerCalendar: shape.EventsPerCalendar}
		tokens, err := e.tokens(topo.Users)
		if err != nil {
			return rep, err
		}
		for _, s := range servers {
			e.logf("bulk %s: seeding %d calendars × %d events (%d rows)", shape, shape.Calendars, shape.EventsPerCalendar, shape.Calendars*shape.EventsPerCalendar)
			if err := harness.Seed(ctx, e.DatabaseURL, topo); err != nil {
				return rep, err
			}
			if err := vacuum(ctx, e.DatabaseURL); err != nil {
				return rep, err
			}
			row, err := e.bulkOne(ctx, s, shape, topo, tokens, cfg)
			rows = append(rows, row)
			if err != nil {
				return rep, fmt.Errorf("bulk %s on %s: %w", shape, s, err)
			}
		}
	}
	const goal = 256 << 20
	for _, x := range rows {
		if x.Rows >= 200_000 && x.MemAfter.HWM > 0 {
			v := float64(x.MemAfter.HWM) / goal
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "peak RSS (VmHWM), " + x.Shape + " UPDATE", Subject: x.Server, Baseline: "256 MiB",
				Value: v, Goal: "<= 1", Met: v <= 1})
		}
		if x.Accounting.Complete != x.Accounting.Sockets {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "sockets complete, " + x.Shape, Subject: x.Server, Baseline: "sockets",
				Value: float64(x.Accounting.Complete) / float64(max(x.Accounting.Sockets, 1)), Goal: "1", Met: false})
		}
	}
	return rep, nil
}

// vacuum makes the seeded rows all-visible, so the UPDATE's WAL is the
// update alone (no hint-bit writes or freezing in the way).
func vacuum(ctx context.Context, url string) error {
	return withConn(ctx, url, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `VACUUM (ANALYZE) events`)
		return err
	})
}

func (e *Env) bulkOne(ctx context.Context, srvName string, shape BulkShape, topo harness.Topology, tokens func(int) string, cfg BulkConfig) (BulkRow, error) {
	rows := shape.Calendars * shape.EventsPerCalendar
	row := BulkRow{Server: srvName, Shape: shape.String(), Rows: rows, Expect: "events"}
	reset := shape.EventsPerCalendar > cfg.Bulk && cfg.Bulk > 0
	if reset {
		row.Expect = "reset"
	}
	srv, err := e.startServer(ctx, srvName)
	if err != nil {
		return row, err
	}
	defer srv.stop()
	time.Sleep(500 * time.Millisecond)
	row.MemStart, _ = harness.Memory(srv.pid)

	clients := make([]*bulkClient, topo.Users)
	for i := range clients {
		clients[i] = &bulkClient{cal: topo.CalendarOf(i), seen: make([]uint64, (shape.EventsPerCalendar+63)/64)}
	}
	var progress atomic.Int64 // events + bulk resets, all sockets
	var lastAt, firstAt atomic.Int64
	var lat stats.Histogram
	var stampNS atomic.Int64 // the update's stamp, once written
	handle := func(i int, name, args []byte) {
		c := clients[i]
		now := time.Now().UnixNano()
		switch string(name) {
		case "event:updated":
			title, ok := stringField(args, "event_title")
			id, ok2 := stringField(args, "event_id")
			want := stampNS.Load()
			if !ok || !ok2 || want == 0 || title != stampPrefix+strconv.FormatInt(want, 10) {
				c.foreign.Add(1)
				return
			}
			cal, ev, ok := parseEventID(id)
			if !ok || cal != c.cal || ev >= shape.EventsPerCalendar {
				c.foreign.Add(1)
				return
			}
			w, b := ev/64, uint64(1)<<(ev%64)
			if c.seen[w]&b != 0 {
				c.dups.Add(1)
				return
			}
			c.seen[w] |= b
			c.events.Add(1)
			lat.Record(now - want)
		case schema.SyncReset:
			reason, _ := stringField(args, "reason")
			if reason != "bulk_change" {
				c.mu.Lock()
				if c.otherResets == nil {
					c.otherResets = map[string]int{}
				}
				c.otherResets[reason]++
				c.mu.Unlock()
				return
			}
			c.resets.Add(1)
		default:
			c.other.Add(1)
			return
		}
		progress.Add(1)
		firstAt.CompareAndSwap(0, now)
		lastAt.Store(now)
	}
	e.logf("bulk %s/%s: connecting %d sockets", shape, srvName, topo.Users)
	f, took, err := connect(ctx, fleetConfig{URL: srv.url, Tokens: tokens, N: topo.Users, ReadyEvent: srv.readyEvent, Sources: cfg.Sources, Handle: handle})
	if err != nil {
		return row, err
	}
	closed := false
	defer func() {
		if !closed {
			f.close()
		}
	}()
	row.ConnectSeconds = took.Seconds()
	time.Sleep(time.Second)
	row.MemBefore, _ = harness.Memory(srv.pid)
	logStart := 0
	if srv.output != nil {
		logStart = len(srv.output())
	}

	// Sample RSS from just before the statement to the end.
	var peak, peakAt atomic.Int64
	var committed atomic.Int64
	t0 := time.Now()
	var series []rssPoint // the sampler's; read after sampleDone
	sampleDone := make(chan struct{})
	sampleStop := make(chan struct{})
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(cfg.Sample)
		defer t.Stop()
		for {
			if m, err := harness.Memory(srv.pid); err == nil {
				now := time.Now()
				if m.RSS > peak.Load() {
					peak.Store(m.RSS)
					peakAt.Store(now.UnixNano())
				}
				// The most per 100 ms, from the statement's start.
				slot := int(now.Sub(t0) / (100 * time.Millisecond))
				if len(series) == 0 || series[len(series)-1].slot < slot {
					series = append(series, rssPoint{slot: slot, MiB: float64(m.RSS) / (1 << 20)})
				} else if v := float64(m.RSS) / (1 << 20); v > series[len(series)-1].MiB {
					series[len(series)-1].MiB = v
				}
			}
			select {
			case <-sampleStop:
				return
			case <-t.C:
			}
		}
	}()
	var profDone chan []string
	if cfg.Profile && srv.pprof != "" {
		profDone = make(chan []string, 1)
		go func() {
			var paths []string
			for k := 0; ; k++ {
				select {
				case <-sampleStop:
					profDone <- paths
					return
				case <-time.After(cfg.ProfileEvery):
				}
				m, _ := harness.Memory(srv.pid)
				at := time.Duration(0)
				if c := committed.Load(); c > 0 {
					at = time.Since(time.Unix(0, c))
				}
				// gc=1: what is live at this moment, not as of the last cycle.
				p := e.fetchProfile(srv.pprof, fmt.Sprintf("bulk-%s-%s-heap-%02d-at%+.1fs-rss%dMiB.pprof", shape, srvName, k, at.Seconds(), m.RSS>>20), "heap?gc=1")
				if p != "" {
					paths = append(paths, p)
				}
			}
		}()
	}

	s0 := sample(srv.pid)
	st := stamp()
	ns, _ := strconv.ParseInt(strings.TrimPrefix(st, stampPrefix), 10, 64)
	stampNS.Store(ns)
	e.logf("bulk %s/%s: UPDATE events SET title = … (%d rows); RSS %s, VmHWM %s", shape, srvName, rows, mib(row.MemBefore.RSS), mib(row.MemBefore.HWM))
	start := time.Now()
	var n int64
	err = withConn(ctx, e.DatabaseURL, func(conn *pgx.Conn) error {
		tag, err := conn.Exec(ctx, `UPDATE events SET title = $1`, st)
		n = tag.RowsAffected()
		return err
	})
	commit := time.Now()
	committed.Store(commit.UnixNano())
	row.UpdateSeconds = commit.Sub(start).Seconds()
	if err == nil && n != int64(rows) {
		err = fmt.Errorf("UPDATE touched %d rows, want %d", n, rows)
	}
	if err != nil {
		close(sampleStop)
		<-sampleDone
		return row, err
	}
	e.logf("bulk %s/%s: committed in %.2fs; waiting for the deliveries", shape, srvName, row.UpdateSeconds)

	var want int64
	if reset {
		want = int64(topo.Users)
	} else {
		want = int64(rows)
	}
	// Done when everything arrived, or nothing for 20 s (decoding a 200k-row
	// transaction takes seconds before the first delivery: the idle clock
	// starts at the commit), or 5 minutes.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		got := progress.Load()
		last := lastAt.Load()
		if last == 0 {
			last = commit.UnixNano()
		}
		if got >= want || time.Since(time.Unix(0, last)) > 20*time.Second || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	row.Done = progress.Load() >= want
	// A moment more: duplicates or a late sync:reset would show up now.
	time.Sleep(500 * time.Millisecond)
	s1 := sample(srv.pid)
	if l := lastAt.Load(); l > 0 {
		s1.at = time.Unix(0, l)
		row.DeliverySeconds = time.Unix(0, l).Sub(commit).Seconds()
	}
	if fa := firstAt.Load(); fa > 0 {
		row.FirstSeconds = time.Unix(0, fa).Sub(commit).Seconds()
	}
	row.ServerCores, _ = cores(s0, s1)
	row.MemAfter, _ = harness.Memory(srv.pid)
	close(sampleStop)
	<-sampleDone
	if profDone != nil {
		row.Profiles = <-profDone
	}
	row.PeakSampled = peak.Load()
	for _, p := range series {
		p.At = (time.Duration(p.slot)*100*time.Millisecond - commit.Sub(t0)).Seconds()
		row.RSSSeries = append(row.RSSSeries, p)
	}
	if pa := peakAt.Load(); pa > 0 {
		row.PeakAtSeconds = time.Unix(0, pa).Sub(commit).Seconds()
	}
	row.Latency = lat.Summarize()
	row.Load = harness.LoadAvg()
	if srv.output != nil {
		for _, l := range strings.Split(srv.output()[logStart:], "\n") {
			if strings.HasPrefix(l, "gc ") {
				row.GCTrace = append(row.GCTrace, l)
			}
		}
	}
	time.Sleep(5 * time.Second)
	row.MemSettled, _ = harness.Memory(srv.pid)

	f.close()
	closed = true
	a := &row.Accounting
	a.Sockets = len(clients)
	a.Dropped = f.runErrs.Load()
	for _, c := range clients {
		ev, res := c.events.Load(), c.resets.Load()
		a.Events += ev
		a.BulkResets += res
		a.Duplicates += c.dups.Load()
		a.Foreign += c.foreign.Load()
		a.Other += c.other.Load()
		for r, k := range c.otherResets {
			if a.OtherResets == nil {
				a.OtherResets = map[string]int{}
			}
			a.OtherResets[r] += k
		}
		if reset {
			a.ExpectedResets++
			if res == 1 && ev == 0 && c.dups.Load() == 0 && len(c.otherResets) == 0 {
				a.Complete++
			}
			continue
		}
		a.ExpectedEvents += int64(shape.EventsPerCalendar)
		a.Missing += int64(shape.EventsPerCalendar) - ev
		if ev == int64(shape.EventsPerCalendar) && res == 0 && c.dups.Load() == 0 && len(c.otherResets) == 0 {
			a.Complete++
		}
	}
	if row.DeliverySeconds > 0 {
		row.EventsPerSec = float64(a.Events) / row.DeliverySeconds
	}
	e.logf("bulk %s/%s: %d/%d sockets complete (%d events, %d bulk resets, %d dup, %d missing) in %.2fs after commit; VmHWM %s -> %s, sampled peak %s at +%.2fs",
		shape, srvName, a.Complete, a.Sockets, a.Events, a.BulkResets, a.Duplicates, a.Missing, row.DeliverySeconds,
		mib(row.MemBefore.HWM), mib(row.MemAfter.HWM), mib(row.PeakSampled), row.PeakAtSeconds)
	return row, nil
}

// stringField is sioclient.StringField as a string.
func stringField(args []byte, key string) (string, bool) {
	v, ok := sioclient.StringField(args, key)
	return string(v), ok
}

// parseEventID inverts harness.EventID: 00000000-IIII-4000-a000-CCCCCCCCCCCC.
func parseEventID(id string) (cal, ev int, ok bool) {
	if len(id) != 36 || id[:9] != "00000000-" || id[13:24] != "-4000-a000-" {
		return 0, 0, false
	}
	e, err1 := strconv.ParseUint(id[9:13], 16, 16)
	c, err2 := strconv.ParseUint(id[24:], 16, bits.UintSize-1)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return int(c), int(e), true
}
