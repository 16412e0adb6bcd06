package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/koordi/koordi-realtime/cmd/internal/natsserver"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
	"github.com/koordi/koordi-realtime/schema"
)

// The subjects scenario (issue 11.4): the feed's one subject "<stream>.tx"
// against a subject per room "<stream>.room.<id>", on a JetStream stream
// configured as feed.EnsureStream configures the feed's (file storage,
// limits retention, MaxAge 10 min, a 2 min duplicates window). Each run has
// a nats-server of its own (so its RSS and VmHWM are the layout's alone)
// and publishes Messages messages the way feed.Publisher does, then reads
// them back with ordered consumers, times the calls a starting publisher
// makes, and kills and restarts the server to time its recovery.

// Layouts of the subjects scenario.
const (
	LayoutOne  = "one"      // "<stream>.tx", what the feed does
	LayoutRoom = "per-room" // "<stream>.room.<id>"
)

const subjectsStream = "KOORDI_BENCH_SUBJECTS"

// SubjectsConfig configures the subjects scenario.
type SubjectsConfig struct {
	Messages int `json:"messages"`      // published per run
	Rooms    int `json:"rooms"`         // subjects of the per-room layout; each message goes to a uniformly random room
	Wanted   int `json:"wanted_rooms"`  // rooms a filtering node reads (every Rooms/Wanted-th)
	Payload  int `json:"payload_bytes"` // the JSON transaction of one event:updated, padded to this length (its title)
	Reps     int `json:"reps"`          // runs per layout, alternating one, per-room, per-room, one, …
	InFlight int `json:"in_flight"`     // unacknowledged publishes at most (feed.PublisherConfig.MaxInFlight's default)
	Lookups  int `json:"lookups"`       // repetitions of each start-up call
}

// SubjectsRow is one run of one layout.
type SubjectsRow struct {
	Layout         string           `json:"layout"`
	Run            int              `json:"run"`
	Subjects       uint64           `json:"subjects"` // the stream's num_subjects after the load
	Messages       int              `json:"messages"`
	MessageBytes   int              `json:"message_bytes"` // subject, headers and payload of one message
	PublishSeconds float64          `json:"publish_seconds"`
	PublishPerSec  float64          `json:"publish_msgs_per_sec"`
	Ack            stats.Summary    `json:"ack_latency"`
	PublishCPU     float64          `json:"publish_server_cpu_seconds"`
	Reads          []SubjectsRead   `json:"reads"`
	Start          []SubjectsLookup `json:"start_calls"`
	MemPublished   harness.Mem      `json:"server_mem_after_publish"`
	MemRead        harness.Mem      `json:"server_mem_after_reads"`
	StreamBytes    uint64           `json:"stream_bytes"`
	StoreBytes     int64            `json:"store_dir_bytes"`
	// RecoverSeconds is from SIGKILL's restart until the stream answers
	// with every message; MemRecovered the server's memory then.
	RecoverSeconds  float64     `json:"recover_seconds"`
	RecoverAttempts int         `json:"recover_attempts"` // starts until one could listen (startNATS)
	MemRecovered    harness.Mem `json:"server_mem_after_recovery"`
	Load            string      `json:"loadavg"`
	Failed          string      `json:"failed,omitempty"`
}

// SubjectsRead is one ordered consumer reading the stream from its start.
type SubjectsRead struct {
	Consumer string `json:"consumer"` // readAll, readFilter or readWildcard
	Filters  int    `json:"filter_subjects"`
	Filter   string `json:"first_filter"`
	// CreateSeconds is the ordered consumer's creation (the consumer
	// create request nats.go's OrderedConsumer makes); FirstSeconds and
	// Seconds are from its start to the first and to the last message it
	// waits for.
	CreateSeconds float64 `json:"create_seconds"`
	FirstSeconds  float64 `json:"first_message_seconds"`
	Seconds       float64 `json:"seconds"`
	Read          int64   `json:"read"`   // messages received
	Wanted        int64   `json:"wanted"` // of them in the node's rooms
	PerSec        float64 `json:"read_per_sec"`
	WantedPerSec  float64 `json:"wanted_per_sec"`
	ServerCPU     float64 `json:"server_cpu_seconds"`
	ServerRSS     int64   `json:"server_rss_after_bytes"` // VmRSS once it read everything
}

// SubjectsLookup is one call a publisher makes when it starts, repeated.
type SubjectsLookup struct {
	Call    string        `json:"call"`
	Latency stats.Summary `json:"latency"`
}

// Consumers of a run.
const (
	readAll      = "all"      // the layout's stream subject: everything, as the feed reads
	readFilter   = "filter"   // per-room: FilterSubjects, one per wanted room
	readWildcard = "wildcard" // per-room: "<stream>.room.>", everything through the filtered path; the node drops other rooms
)

// subjectsReadSpec is one consumer of a run: its filter and how many
// messages it waits for.
type subjectsReadSpec struct {
	name    string
	filters []string
	expect  int64
}

// Start-up calls.
const (
	callInfo    = "stream info"
	callLast    = "last msg for the stream subject" // feed.Publisher.start: GetLastMsgForSubject
	callLastOne = "last msg of one room"
	callBySeq   = "msg by last sequence"
)

// subjectsOrder is the layouts' order for reps runs each: one, per-room,
// per-room, one, one, per-room, … (ABBA), so neither has the machine's
// better minutes.
func subjectsOrder(reps int) []string {
	var out []string
	for r := range reps {
		if r%2 == 0 {
			out = append(out, LayoutOne, LayoutRoom)
		} else {
			out = append(out, LayoutRoom, LayoutOne)
		}
	}
	return out
}

// streamSubject is what a layout's stream is configured with; roomSubject
// the subject of room id.
func streamSubject(layout, stream string) string {
	if layout == LayoutRoom {
		return stream + ".room.*"
	}
	return stream + ".tx"
}

func roomSubject(stream string, id int) string { return stream + ".room." + strconv.Itoa(id) }

// wantedRooms is n rooms of rooms, spread evenly: 0, rooms/n, 2·rooms/n, …
func wantedRooms(rooms, n int) []int {
	n = min(n, rooms)
	out := make([]int, n)
	for i := range n {
		out[i] = i * rooms / n
	}
	return out
}

// feedPayload is the feed's JSON of one transaction with one event:updated
// (as cdc/derive writes it), size bytes long when size is at least that of
// the event with an empty title.
func feedPayload(size int) []byte {
	tx := func(title string) []byte {
		data, _ := json.Marshal(schema.EventChange{EventID: harness.EventID(1, 1), EventTitle: title,
			EventCalendarID: harness.CalendarID(1), Changed: []string{"title"}})
		b, _ := json.Marshal(schema.Transaction{
			CommitLSN: 0x169A3F8, CommitTime: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), Xid: 123456,
			Events: []schema.Envelope{{Offset: schema.Offset{LSN: 0x169A3F8}, Room: "calendar:" + harness.CalendarID(1),
				Event: schema.EventUpdated, Data: data}},
		})
		return b
	}
	b := tx("")
	if pad := size - len(b); pad > 0 {
		b = tx(strings.Repeat("x", pad))
	}
	return b
}

// Subjects runs every layout Reps times in subjectsOrder.
func Subjects(ctx context.Context, e *Env, cfg SubjectsConfig) (*Report, error) {
	cfg.Messages = max(cfg.Messages, 1)
	cfg.Rooms = max(cfg.Rooms, 1)
	cfg.Wanted = min(max(cfg.Wanted, 1), cfg.Rooms)
	cfg.Reps = max(cfg.Reps, 1)
	if cfg.Payload <= 0 {
		cfg.Payload = 400
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 256
	}
	if cfg.Lookups <= 0 {
		cfg.Lookups = 200
	}
	rep := &Report{Scenario: "subjects", Started: time.Now(), Config: cfg, Machine: machine()}
	// The same rooms, in the same order, in every per-room run.
	rng := rand.New(rand.NewPCG(11, 4))
	rooms := make([]int32, cfg.Messages)
	for i := range rooms {
		rooms[i] = int32(rng.IntN(cfg.Rooms))
	}
	var rows []SubjectsRow
	defer func() {
		rep.Rows = rows
		rep.Ratios = subjectsRatios(rows, cfg.Wanted)
		rep.Summary = subjectsSummary(rows)
	}()
	runs := map[string]int{}
	for _, layout := range subjectsOrder(cfg.Reps) {
		runs[layout]++
		row, err := e.subjectsRun(ctx, cfg, layout, runs[layout], rooms)
		if err != nil {
			row.Failed = err.Error()
			rows = append(rows, row)
			return rep, fmt.Errorf("subjects/%s run %d: %w", layout, runs[layout], err)
		}
		rows = append(rows, row)
	}
	return rep, nil
}

// subjectsRun is one layout's run on a nats-server of its own.
func (e *Env) subjectsRun(ctx context.Context, cfg SubjectsConfig, layout string, run int, rooms []int32) (SubjectsRow, error) {
	row := SubjectsRow{Layout: layout, Run: run, Messages: cfg.Messages, Load: harness.LoadAvg()}
	ns, err := startNATS(ctx, "")
	if err != nil {
		return row, fmt.Errorf("nats-server: %w", err)
	}
	defer ns.Stop()
	nc, err := nats.Connect(ns.URL(), nats.Name("koordi-bench subjects"))
	if err != nil {
		return row, err
	}
	defer func() { nc.Close() }()
	js, err := jetstream.New(nc)
	if err != nil {
		return row, err
	}
	// As feed.EnsureStream does with the default REPLAY_WINDOW (2m).
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: subjectsStream, Subjects: []string{streamSubject(layout, subjectsStream)},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxAge: 10 * time.Minute, Duplicates: 2 * time.Minute, Replicas: 1,
	})
	if err != nil {
		return row, err
	}
	pid := ns.PID()
	subject := func(i int) string { return subjectsStream + ".tx" }
	if layout == LayoutRoom {
		subs := make([]string, cfg.Rooms)
		for id := range subs {
			subs[id] = roomSubject(subjectsStream, id)
		}
		subject = func(i int) string { return subs[rooms[i]] }
	}
	payload := feedPayload(cfg.Payload)

	cpu0, _ := harness.CPUTime(pid)
	secs, ack, size, err := publishFeed(ctx, js, cfg, payload, subject)
	cpu1, _ := harness.CPUTime(pid)
	row.PublishSeconds, row.Ack, row.MessageBytes, row.PublishCPU = secs, ack, size, (cpu1 - cpu0).Seconds()
	row.PublishPerSec = float64(cfg.Messages) / max(secs, 1e-9)
	if err != nil {
		return row, fmt.Errorf("publish: %w", err)
	}
	row.MemPublished, _ = harness.Memory(pid)
	e.logf("subjects/%s run %d: published %d in %.2fs (%.0f msgs/s, ack p50 %s p99 %s), server RSS %s",
		layout, run, cfg.Messages, secs, row.PublishPerSec, ms(ack.P50), ms(ack.P99), mib(row.MemPublished.RSS))

	// What a node reads: everything (the feed); per room also the node that
	// wants only its rooms, through FilterSubjects and through a wildcard.
	wanted := map[string]bool{}
	var wantedMsgs int64
	if layout == LayoutRoom {
		isWanted := make([]bool, cfg.Rooms)
		for _, id := range wantedRooms(cfg.Rooms, cfg.Wanted) {
			isWanted[id] = true
			wanted[roomSubject(subjectsStream, id)] = true
		}
		for _, id := range rooms {
			if isWanted[id] {
				wantedMsgs++
			}
		}
	}
	reads := []subjectsReadSpec{{readAll, []string{streamSubject(layout, subjectsStream)}, int64(cfg.Messages)}}
	if layout == LayoutRoom {
		var filters []string
		for _, id := range wantedRooms(cfg.Rooms, cfg.Wanted) {
			filters = append(filters, roomSubject(subjectsStream, id))
		}
		reads = append(reads, subjectsReadSpec{readFilter, filters, wantedMsgs},
			subjectsReadSpec{readWildcard, []string{subjectsStream + ".room.>"}, int64(cfg.Messages)})
	}
	for _, r := range reads {
		c0, _ := harness.CPUTime(pid)
		rd, err := readFeed(ctx, js, r.filters, r.expect, wanted)
		c1, _ := harness.CPUTime(pid)
		rd.Consumer, rd.ServerCPU = r.name, (c1 - c0).Seconds()
		rd.ServerRSS, _ = harness.RSS(pid)
		row.Reads = append(row.Reads, rd)
		if err != nil {
			return row, fmt.Errorf("read %s: %w", r.name, err)
		}
		e.logf("subjects/%s run %d: read %s: %d (%d wanted) in %.2fs (%.0f msgs/s, server CPU %.2fs), created in %s; server RSS %s",
			layout, run, r.name, rd.Read, rd.Wanted, rd.Seconds, rd.PerSec, rd.ServerCPU, ms(time.Duration(rd.CreateSeconds*1e9)), mib(rd.ServerRSS))
	}

	// What a publisher asks when it starts.
	info, err := stream.Info(ctx)
	if err != nil {
		return row, err
	}
	row.Subjects, row.StreamBytes = info.State.NumSubjects, info.State.Bytes
	lastSeq := info.State.LastSeq
	type call struct {
		name string
		f    func() error
	}
	calls := []call{
		{callInfo, func() error { _, err := stream.Info(ctx); return err }},
		{callLast, func() error {
			m, err := stream.GetLastMsgForSubject(ctx, streamSubject(layout, subjectsStream))
			if err == nil && m.Sequence != lastSeq {
				err = fmt.Errorf("last message %d, stream's last %d", m.Sequence, lastSeq)
			}
			return err
		}},
		{callBySeq, func() error { _, err := stream.GetMsg(ctx, lastSeq); return err }},
	}
	if layout == LayoutRoom {
		calls = append(calls, call{callLastOne, func() error {
			_, err := stream.GetLastMsgForSubject(ctx, subject(cfg.Messages-1))
			return err
		}})
	}
	hists := make([]stats.Histogram, len(calls))
	for range cfg.Lookups {
		for i, c := range calls {
			t := time.Now()
			if err := c.f(); err != nil {
				return row, fmt.Errorf("%s: %w", c.name, err)
			}
			hists[i].Record(int64(time.Since(t)))
		}
	}
	for i, c := range calls {
		row.Start = append(row.Start, SubjectsLookup{Call: c.name, Latency: hists[i].Summarize()})
	}
	row.MemRead, _ = harness.Memory(pid)
	row.StoreBytes = dirBytes(ns.StoreDir())

	// A crash of the server: everything it recovers from the store, on a
	// new server (startNATS) with the same store.
	nc.Close()
	ns.Kill()
	t := time.Now()
	again, err := startNATS(ctx, filepath.Dir(ns.StoreDir()))
	if err != nil {
		return row, fmt.Errorf("restart: %w", err)
	}
	defer again.Stop() // before ns.Stop removes the directory
	t = again.started
	if nc, err = nats.Connect(again.URL(), nats.Name("koordi-bench subjects")); err != nil {
		return row, err
	}
	if js, err = jetstream.New(nc); err != nil {
		return row, err
	}
	for {
		s, err := js.Stream(ctx, subjectsStream)
		if err == nil {
			if in, err := s.Info(ctx); err == nil && in.State.Msgs == uint64(cfg.Messages) {
				break
			}
		}
		if time.Since(t) > 2*time.Minute {
			return row, errors.New("stream not back within 2m of a restart")
		}
		select {
		case <-ctx.Done():
			return row, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	row.RecoverSeconds = time.Since(t).Seconds()
	row.MemRecovered, _ = harness.Memory(again.PID())
	row.RecoverAttempts = again.attempts
	e.logf("subjects/%s run %d: %d subjects, stream %s, store %s, RSS %s after reads; recovered in %.2fs (start %d), RSS %s",
		layout, run, row.Subjects, mib(int64(row.StreamBytes)), mib(row.StoreBytes), mib(row.MemRead.RSS), row.RecoverSeconds, row.RecoverAttempts, mib(row.MemRecovered.RSS))
	return row, nil
}

// natsRun is a nats-server of the scenario: when its last start began and
// how many starts it took.
type natsRun struct {
	*natsserver.Server
	started  time.Time
	attempts int
}

// startNATS starts a nats-server on dir's store ("": a temporary one) on a
// free port below the ephemeral range, trying again (up to 5 times, a new
// port each) when the port was taken before the server listened: it
// listens only once JetStream restored its store, and on a machine that
// opens many connections an ephemeral port is soon some connection's
// source port.
func startNATS(ctx context.Context, dir string) (*natsRun, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 11_000 {
				lo = v
			}
		}
	}
	var last error
	for attempt := 1; attempt <= 5; attempt++ {
		port := 0
		for range 100 {
			p := 10_000 + rand.IntN(lo-10_000)
			if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
				l.Close()
				port = p
				break
			}
		}
		t := time.Now()
		s, err := natsserver.Start(ctx, natsserver.Config{Dir: dir, Port: port})
		if err == nil {
			return &natsRun{Server: s, started: t, attempts: attempt}, nil
		}
		if last = err; !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
	}
	return nil, last
}

// publishFeed publishes cfg.Messages messages as feed.Publisher does:
// asynchronously, at most cfg.InFlight unacknowledged, each with
// Nats-Msg-Id and Nats-Expected-Last-Sequence (the stream is one chain)
// and the feed's own headers, acknowledgements taken in order. It returns
// the time from the first publish to the last acknowledgement, the
// acknowledgement latencies and one message's size.
func publishFeed(ctx context.Context, js jetstream.JetStream, cfg SubjectsConfig, payload []byte, subject func(int) string) (float64, stats.Summary, int, error) {
	type pending struct {
		fut  jetstream.PubAckFuture
		seq  uint64
		sent time.Time
	}
	var hist stats.Histogram
	// As the publisher: a slot is taken before publishing and given back
	// with the acknowledgement, so at most cfg.InFlight are unacknowledged
	// (the JetStream context's own bound, 4,000, is above it).
	slots := make(chan struct{}, cfg.InFlight)
	inflight := make(chan pending, cfg.InFlight)
	acked := make(chan error, 1)
	go func() {
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		for p := range inflight {
			timer.Reset(10 * time.Second)
			select {
			case ack := <-p.fut.Ok():
				if ack.Duplicate || ack.Sequence != p.seq {
					acked <- fmt.Errorf("landed at sequence %d (duplicate %v), expected %d", ack.Sequence, ack.Duplicate, p.seq)
					return
				}
				hist.Record(int64(time.Since(p.sent)))
				<-slots
			case err := <-p.fut.Err():
				acked <- err
				return
			case <-timer.C:
				acked <- errors.New("no acknowledgement in 10s")
				return
			case <-ctx.Done():
				acked <- ctx.Err()
				return
			}
		}
		acked <- nil
	}()
	size := 0
	start := time.Now()
	prev := schema.Offset{}
	for i := range cfg.Messages {
		off := schema.Offset{LSN: 0x1000000 + uint64(i)*0x100}
		msg := &nats.Msg{Subject: subject(i), Data: payload, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, off.String())
		msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.Itoa(i))
		msg.Header.Set("Koordi-Commit", fmt.Sprintf("%016X", off.LSN))
		msg.Header.Set("Koordi-Prev", prev.String())
		msg.Header.Set("Koordi-Last", off.String())
		prev = off
		if i == 0 {
			size = len(msg.Subject) + len(msg.Data)
			for k, v := range msg.Header {
				size += len(k) + len(v[0]) + 4 // "k: v\r\n"
			}
		}
		select {
		case slots <- struct{}{}:
		case err := <-acked:
			return time.Since(start).Seconds(), hist.Summarize(), size, err
		}
		sent := time.Now()
		fut, err := js.PublishMsgAsync(msg)
		if err != nil {
			close(inflight)
			return time.Since(start).Seconds(), hist.Summarize(), size, err
		}
		inflight <- pending{fut: fut, seq: uint64(i) + 1, sent: sent} // never blocks: it holds no more than slots

	}
	close(inflight)
	err := <-acked
	return time.Since(start).Seconds(), hist.Summarize(), size, err
}

// readFeed reads the stream from its start with one ordered consumer
// filtered by filters until expect messages arrived; wanted names the
// subjects the node serves (nil: all of them).
func readFeed(ctx context.Context, js jetstream.JetStream, filters []string, expect int64, wanted map[string]bool) (SubjectsRead, error) {
	rd := SubjectsRead{Filters: len(filters), Filter: filters[0]}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	// nats.go creates the server's consumer here (and again after a gap).
	cons, err := js.OrderedConsumer(ctx, subjectsStream, jetstream.OrderedConsumerConfig{FilterSubjects: filters})
	if err != nil {
		return rd, err
	}
	rd.CreateSeconds = time.Since(start).Seconds()
	it, err := cons.Messages()
	if err != nil {
		return rd, err
	}
	defer func() {
		it.Stop()
		if ci := cons.CachedInfo(); ci != nil {
			_ = js.DeleteConsumer(context.Background(), subjectsStream, ci.Name)
		}
	}()
	go func() { <-ctx.Done(); it.Stop() }()
	for rd.Read < expect {
		m, err := it.Next()
		if err != nil {
			return rd, fmt.Errorf("after %d of %d: %w", rd.Read, expect, err)
		}
		if rd.Read == 0 {
			rd.FirstSeconds = time.Since(start).Seconds()
		}
		rd.Read++
		if wanted == nil || wanted[m.Subject()] {
			rd.Wanted++
		}
		if rd.Read == expect {
			if meta, err := m.Metadata(); err == nil && meta.NumPending != 0 {
				return rd, fmt.Errorf("%d messages read and %d still pending, want %d in all", rd.Read, meta.NumPending, expect)
			}
		}
	}
	rd.Seconds = time.Since(start).Seconds()
	rd.PerSec = float64(rd.Read) / max(rd.Seconds, 1e-9)
	rd.WantedPerSec = float64(rd.Wanted) / max(rd.Seconds, 1e-9)
	return rd, nil
}

// dirBytes is the size of the files under dir.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func (x SubjectsRow) read(name string) (SubjectsRead, bool) {
	for _, r := range x.Reads {
		if r.Consumer == name {
			return r, true
		}
	}
	return SubjectsRead{}, false
}

func (x SubjectsRow) call(name string) (stats.Summary, bool) {
	for _, c := range x.Start {
		if c.Call == name {
			return c.Latency, true
		}
	}
	return stats.Summary{}, false
}

// subjectsFigure is one figure of a row compared between the layouts;
// ok is false when the row has no such figure.
type subjectsFigure struct {
	name string
	f    func(SubjectsRow) (float64, bool)
}

func readFig(name string, f func(SubjectsRead) float64) func(SubjectsRow) (float64, bool) {
	return func(x SubjectsRow) (float64, bool) {
		r, ok := x.read(name)
		if !ok || r.Seconds == 0 {
			return 0, false
		}
		return f(r), true
	}
}

func callFig(name string, f func(stats.Summary) time.Duration) func(SubjectsRow) (float64, bool) {
	return func(x SubjectsRow) (float64, bool) {
		s, ok := x.call(name)
		if !ok || s.Count == 0 {
			return 0, false
		}
		return float64(f(s)), true
	}
}

func always(f func(SubjectsRow) float64) func(SubjectsRow) (float64, bool) {
	return func(x SubjectsRow) (float64, bool) { return f(x), x.Failed == "" }
}

var subjectsFigures = []subjectsFigure{
	{"publish msgs/s", always(func(x SubjectsRow) float64 { return x.PublishPerSec })},
	{"ack p50", always(func(x SubjectsRow) float64 { return float64(x.Ack.P50) })},
	{"ack p99", always(func(x SubjectsRow) float64 { return float64(x.Ack.P99) })},
	{"server CPU per published msg", always(func(x SubjectsRow) float64 { return x.PublishCPU / float64(x.Messages) })},
	{"read all msgs/s", readFig(readAll, func(r SubjectsRead) float64 { return r.PerSec })},
	{"server CPU per msg read (all)", readFig(readAll, func(r SubjectsRead) float64 { return r.ServerCPU / float64(r.Read) })},
	{"consumer creation (all)", readFig(readAll, func(r SubjectsRead) float64 { return r.CreateSeconds })},
	{"stream info p50", callFig(callInfo, func(s stats.Summary) time.Duration { return s.P50 })},
	{"last msg for the stream subject p50", callFig(callLast, func(s stats.Summary) time.Duration { return s.P50 })},
	{"msg by last sequence p50", callFig(callBySeq, func(s stats.Summary) time.Duration { return s.P50 })},
	{"server RSS after reading all", readFig(readAll, func(r SubjectsRead) float64 { return float64(r.ServerRSS) })},
	{"server RSS after reads", always(func(x SubjectsRow) float64 { return float64(x.MemRead.RSS) })},
	{"server VmHWM", always(func(x SubjectsRow) float64 { return float64(x.MemRead.HWM) })},
	{"stream bytes", always(func(x SubjectsRow) float64 { return float64(x.StreamBytes) })},
	{"store directory bytes", always(func(x SubjectsRow) float64 { return float64(x.StoreBytes) })},
	{"recovery after SIGKILL", always(func(x SubjectsRow) float64 { return x.RecoverSeconds })},
	{"server RSS after recovery", always(func(x SubjectsRow) float64 { return float64(x.MemRecovered.RSS) })},
}

// figure is the figure of subjectsFigures named name.
func figure(name string) func(SubjectsRow) (float64, bool) {
	for _, f := range subjectsFigures {
		if f.name == name {
			return f.f
		}
	}
	panic("no figure " + name)
}

// subjectsMean is the mean of f over the rows of layout that have the figure.
func subjectsMean(rows []SubjectsRow, layout string, f func(SubjectsRow) (float64, bool)) (float64, bool) {
	var sum float64
	n := 0
	for _, x := range rows {
		if x.Layout != layout {
			continue
		}
		if v, ok := f(x); ok {
			sum += v
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

// subjectsRatios is each figure's per-room mean over the one-subject mean,
// and the node that wants wanted rooms (filter and wildcard): its time to
// read them over the one-subject node's time to read everything.
func subjectsRatios(rows []SubjectsRow, wanted int) []Ratio {
	var out []Ratio
	for _, f := range subjectsFigures {
		a, okA := subjectsMean(rows, LayoutRoom, f.f)
		b, okB := subjectsMean(rows, LayoutOne, f.f)
		if okA && okB && b != 0 {
			out = append(out, Ratio{Figure: f.name, Subject: LayoutRoom, Baseline: LayoutOne, Value: a / b})
		}
	}
	base, ok := subjectsMean(rows, LayoutOne, readFig(readAll, func(r SubjectsRead) float64 { return r.Seconds }))
	if !ok || base == 0 {
		return out
	}
	for _, c := range []string{readFilter, readWildcard} {
		if v, ok := subjectsMean(rows, LayoutRoom, readFig(c, func(r SubjectsRead) float64 { return r.Seconds })); ok {
			out = append(out, Ratio{Figure: fmt.Sprintf("secs to read %d rooms (%s)", wanted, c), Subject: LayoutRoom + " " + c,
				Baseline: LayoutOne + " all", Value: v / base})
		}
	}
	return out
}

// subjectsSummary is the mean of each layout's main figures.
func subjectsSummary(rows []SubjectsRow) []string {
	var out []string
	for _, layout := range []string{LayoutOne, LayoutRoom} {
		pub, ok := subjectsMean(rows, layout, figure("publish msgs/s"))
		if !ok {
			continue
		}
		p99, _ := subjectsMean(rows, layout, figure("ack p99"))
		all, _ := subjectsMean(rows, layout, figure("read all msgs/s"))
		rss, _ := subjectsMean(rows, layout, figure("server RSS after reads"))
		rec, _ := subjectsMean(rows, layout, figure("recovery after SIGKILL"))
		out = append(out, fmt.Sprintf("%-9s mean: publish %.0f msgs/s, ack p99 %s, read all %.0f msgs/s, server RSS %s, recovery %.2fs",
			layout, pub, ms(time.Duration(p99)), all, mib(int64(rss)), rec))
	}
	return out
}

// printSubjects prints the rows as two tables: publishing and reading, then
// start-up calls, memory and the store.
func printSubjects(w io.Writer, rows []SubjectsRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layout\trun\tsubjects\tmsgs\tmsg bytes\tpublish msgs/s\tack p50\tack p99\tsrv µs/msg\tread all/s\tfilter create\tfilter wanted/s\tfilter secs\tfilter srv CPU s\twildcard wanted/s\twildcard secs\tall secs\tload\t")
	for _, x := range rows {
		all, _ := x.read(readAll)
		line := fmt.Sprintf("%s\t%d\t%d\t%d\t%d\t%.0f\t%s\t%s\t%.1f\t%.0f\t", x.Layout, x.Run, x.Subjects, x.Messages, x.MessageBytes,
			x.PublishPerSec, ms(x.Ack.P50), ms(x.Ack.P99), x.PublishCPU/float64(max(x.Messages, 1))*1e6, all.PerSec)
		if f, ok := x.read(readFilter); ok {
			line += fmt.Sprintf("%s\t%.0f\t%.2f\t%.1f\t", ms(time.Duration(f.CreateSeconds*1e9)), f.WantedPerSec, f.Seconds, f.ServerCPU)
		} else {
			line += "-\t-\t-\t-\t"
		}
		if f, ok := x.read(readWildcard); ok {
			line += fmt.Sprintf("%.0f\t%.2f\t", f.WantedPerSec, f.Seconds)
		} else {
			line += "-\t-\t"
		}
		fmt.Fprintf(tw, "%s%.2f\t%s\t\n", line, all.Seconds, x.Load)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "layout\trun\tinfo p50\tinfo p99\tlast p50\tlast p99\tby seq p50\tone room p50\tRSS published\tRSS read all\tRSS read\tVmHWM\tstream\tstore dir\trecover secs\tRSS recovered\t  failed")
	for _, x := range rows {
		q := func(call string, p99 bool) string {
			s, ok := x.call(call)
			if !ok {
				return "-"
			}
			if p99 {
				return ms(s.P99)
			}
			return ms(s.P50)
		}
		all, _ := x.read(readAll)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t  %s\n", x.Layout, x.Run,
			q(callInfo, false), q(callInfo, true), q(callLast, false), q(callLast, true), q(callBySeq, false), q(callLastOne, false),
			mib(x.MemPublished.RSS), mib(all.ServerRSS), mib(x.MemRead.RSS), mib(x.MemRead.HWM), mib(int64(x.StreamBytes)), mib(x.StoreBytes),
			x.RecoverSeconds, mib(x.MemRecovered.RSS), x.Failed)
	}
	tw.Flush()
}
