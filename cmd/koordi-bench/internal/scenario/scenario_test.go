package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
)

func TestAccounting(t *testing.T) {
	f := &fleet{received: make([]atomic.Int64, 4)}
	for i, n := range []int64{3, 2, 5, 0} {
		f.received[i].Add(n)
	}
	f.runErrs.Add(1)
	want := []int64{3, 3, 3, 1}
	got := f.account(func(i int) int64 { return want[i] })
	exp := accounting{Expected: 10, Delivered: 10, Lost: 2, Duplicates: 2, Dropped: 1}
	if got != exp {
		t.Fatalf("got %+v, want %+v", got, exp)
	}
}

func TestReportPrintAndJSON(t *testing.T) {
	var h stats.Histogram
	h.Record(int64(2 * time.Millisecond))
	rep := &Report{Scenario: "fanout", Started: time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC), Machine: Machine{CPUs: 2, LoadAvg: "1.00 1.00 1.00"},
		Rows: []DeliveryRow{{Server: "koordi", Clients: 10, RoomSize: 5, Commits: 4, WriteSeconds: 1, MsgsPerSec: 1234, Latency: h.Summarize(),
			Accounting: accounting{Expected: 20, Delivered: 20}}},
		Ratios: []Ratio{{Figure: "delivered msgs/s", Subject: "koordi", Baseline: "node", Value: 2.5, Goal: ">= 5"}},
	}
	var buf bytes.Buffer
	rep.Print(&buf)
	out := buf.String()
	for _, want := range []string{"== fanout", "koordi", "1234", "2.00 ms", "koordi/node = 2.50", "MISSED"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	path, err := rep.WriteJSON(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Scenario string
		Rows     []DeliveryRow
	}
	if err := json.Unmarshal(b, &back); err != nil || back.Scenario != "fanout" || len(back.Rows) != 1 || back.Rows[0].Accounting.Delivered != 20 {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if !strings.HasSuffix(path, "fanout-20261126T020000Z.json") {
		t.Errorf("path %s", path)
	}
}

func TestDeliveryConfigDefaults(t *testing.T) {
	c := DeliveryConfig{Clients: 1000, RoomSize: 100, Backlog: 10}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.Users != 1000 || c.EventsPerCalendar != 100 {
		t.Fatalf("defaults: %+v", c)
	}
	bad := DeliveryConfig{Clients: 1000, RoomSize: 300}
	if err := bad.defaults(); err == nil {
		t.Fatal("room size not dividing users accepted")
	}
}

func TestSweepConfigDefaults(t *testing.T) {
	c := SweepConfig{Clients: 1000, RoomSize: 100, Rates: []int{1000, 250, 1000, 500}, Step: time.Second, Warmup: 2 * time.Second}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.Users != 1000 || c.Writers != 8 || c.Warmup != 200*time.Millisecond || c.KneeP99 != 25*time.Millisecond ||
		c.MinDelivered != 0.95 || c.MaxP99 != 5*time.Second || !slices.Equal(c.Rates, []int{250, 500, 1000}) {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range []SweepConfig{
		{Clients: 1000, RoomSize: 100},
		{Clients: 1000, RoomSize: 100, Rates: []int{0, 10}},
		{Clients: 1000, RoomSize: 300, Rates: []int{10}},
	} {
		if err := bad.defaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestWriterProcessReport: the latency sweep's writer process is read back
// from its JSON report, and a failing one is reported with what it said.
func TestWriterProcessReport(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	topo := harness.Topology{Calendars: 2, EventsPerCalendar: 1}
	e := &Env{DatabaseURL: "postgres://unused", BenchBin: script("ok", `test "$1" = write-sql || exit 9; echo '{"commits":5,"seconds":1.5,"behind_ns":2000000,"per_calendar":[2,3]}'`)}
	r, _, err := e.writeRateProcess(context.Background(), topo, 100, time.Second, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.Commits != 5 || r.Seconds != 1.5 || r.Behind != 2*time.Millisecond || !slices.Equal(r.perCal, []int64{2, 3}) {
		t.Fatalf("report read back as %+v", r)
	}
	e.BenchBin = script("fail", `echo "connect: refused" >&2; exit 3`)
	if _, _, err := e.writeRateProcess(context.Background(), topo, 100, time.Second, 2); err == nil || !strings.Contains(err.Error(), "connect: refused") {
		t.Fatalf("a failing writer: %v", err)
	}
	if err := WriterMain(context.Background(), []string{"--rate", "100"}, io.Discard); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("WriterMain without a database: %v", err)
	}
}
