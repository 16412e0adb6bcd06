package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// browserPages is browser/inspector.mjs: chromium pages on the inspector,
// one per demo user, that answer each command with one report.
type browserPages struct {
	*nodeDriver
	answered int // reports consumed, "ready" included
}

// await takes the script's next report, which must be ev.
func (b *browserPages) await(ev string) nodeReport {
	b.t.Helper()
	var got nodeReport
	b.waitFor(ev, func(rs []nodeReport) bool {
		if len(rs) <= b.answered {
			return false
		}
		got = rs[b.answered]
		return true
	})
	b.answered++
	if got.Ev != ev {
		b.t.Fatalf("browser: got %+v, want %q", got, ev)
	}
	return got
}

// TestInspectorBrowser opens the inspector of a real `koordi-realtime dev`
// in Debian's chromium, once per demo user: Alex and Sam (both members of
// Maya · School) and Jordan (not a member). An assignment written with SQL
// appears in Alex's and Sam's event lists with the same offset and in
// Jordan's not at all; the service tiles count the three sockets. A
// screenshot goes to testdata/artifacts/inspector.png.
func TestInspectorBrowser(t *testing.T) {
	// The page's socket.io-client bundle is copied from the npm package.
	_, dir := requireNode(t, "playwright-core", "socket.io-client")
	chromium := os.Getenv("CHROMIUM") // inspector.mjs reads it too
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		unavailable(t, "no chromium at %s (Debian: apt-get install chromium; .ci/run does): %v", chromium, err)
	}
	db := &testDB{t: t, url: pgcluster.NewDatabase(t, cluster)}
	slot := db.slot("inspector")
	t.Cleanup(func() { db.dropSlot(slot) }) // runs after dev has stopped
	p := startDev(t, t.TempDir(), devEnv(
		"DATABASE_URL="+db.url,
		"SLOT_NAME="+slot,
		"LISTEN_ADDR=127.0.0.1:0",
		"JWT_SECRET="+testSecret,
	))
	if _, bundle := httpGet(t, p.base+"/inspector/vendor/socket.io.min.js"); strings.Contains(bundle, "KOORDI_BUNDLE_MISSING") {
		unavailable(t, "the binary was built without socket.io-client's browser bundle: run make inspector-bundle (make test does)")
	}

	artifacts := filepath.Join(dir, "artifacts")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifacts, "inspector.png")
	// Chromium's start and three pages' connects take their time on a
	// loaded machine: a longer bound than the sockets'.
	b := &browserPages{nodeDriver: startNode(t, "playwright-core", 90*time.Second, "browser/inspector.mjs", p.base, shot)}
	b.answered = 1 // "ready"

	conn := pgcluster.Connect(t, db.url)
	b.do(map[string]any{"op": "expect", "event": "event:assigned", "event_id": assignDemoEvent(t, conn)})
	got := b.await("expected")
	t.Logf("event:assigned %s reached both members, not the non-member", got.Offset)

	// A few more of the demo's writes, so the screenshot shows a stream.
	for n := range 6 {
		if _, err := ksql.DemoStep(context.Background(), conn, n); err != nil {
			t.Fatal(err)
		}
	}
	b.do(map[string]any{"op": "screenshot", "user": "alex"})
	if r := b.await("screenshot"); r.Sockets != "3" {
		t.Errorf("the connected-sockets tile shows %q, want 3 (one per page)", r.Sockets)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 10_000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
	b.close() // the pages go before dev does
	p.interrupt()
}
