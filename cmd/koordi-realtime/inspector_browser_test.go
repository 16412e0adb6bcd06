package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// browserRequire returns node, the testdata directory and the chromium
// binary. Anything missing fails the test under CI and skips it elsewhere.
func browserRequire(t *testing.T) (node, dir, chromium string) {
	t.Helper()
	node, dir = e2eRequireNode(t)
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing("playwright-core is not installed (cd testdata && npm ci): %v", err)
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		missing("no chromium at %s (Debian: apt-get install chromium; .ci/run does): %v", chromium, err)
	}
	return node, dir, chromium
}

// browserPage is testdata/browser/inspector.mjs: chromium pages on the
// inspector, driven line by line.
type browserPage struct {
	t       *testing.T
	stdin   io.WriteCloser
	reports chan map[string]any
}

func (b *browserPage) send(cmd map[string]any) {
	b.t.Helper()
	line, _ := json.Marshal(cmd)
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		b.t.Fatalf("browser driver: %v", err)
	}
}

func (b *browserPage) await(ev string) map[string]any {
	b.t.Helper()
	select {
	case r, ok := <-b.reports:
		switch {
		case !ok:
			b.t.Fatalf("browser driver ended before %q", ev)
		case r["ev"] == "fail":
			b.t.Fatalf("browser: %v", r["message"])
		case r["ev"] != ev:
			b.t.Fatalf("browser: got %v, want %q", r, ev)
		}
		return r
	case <-time.After(90 * time.Second):
		b.t.Fatalf("browser: no %q after 90s", ev)
	}
	return nil
}

// TestInspectorBrowser opens the inspector of a real `koordi-realtime dev`
// in Debian's chromium, once per demo user: Alex and Sam (both members of
// Maya · School) and Jordan (not a member). An assignment written with SQL
// appears in Alex's and Sam's event lists with the same offset and in
// Jordan's not at all; the service tiles count the three sockets. A
// screenshot goes to testdata/artifacts/inspector.png.
func TestInspectorBrowser(t *testing.T) {
	node, dir, chromium := browserRequire(t)
	url := pgcluster.NewDatabase(t, cluster)
	slot := e2eSlot("inspector", url)
	t.Cleanup(func() { e2eDropSlot(t, url, slot) }) // runs after dev has stopped
	p := startDev(t, t.TempDir(), devEnv(
		"DATABASE_URL="+url,
		"SLOT_NAME="+slot,
		"LISTEN_ADDR=127.0.0.1:0",
		"JWT_SECRET="+e2eSecret,
	))
	resp, err := http.Get(p.base + "/inspector/vendor/socket.io.min.js")
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(bundle), "KOORDI_BUNDLE_MISSING") {
		msg := "the binary was built without socket.io-client's browser bundle: run make inspector-bundle (make test does)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}

	artifacts := filepath.Join(dir, "artifacts")
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(artifacts, "inspector.png")
	cmd := exec.Command(node, filepath.Join(dir, "browser", "inspector.mjs"), p.base, shot)
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &browserPage{t: t, stdin: stdin, reports: make(chan map[string]any, 16)}
	go func() {
		defer close(b.reports)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r map[string]any
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				b.reports <- r
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		timer := time.AfterFunc(20*time.Second, func() { _ = cmd.Process.Kill() })
		_ = cmd.Wait()
		timer.Stop()
		for range b.reports {
		}
		if t.Failed() {
			t.Logf("browser driver stderr:\n%s", e2eLastLines(stderr.String(), 40))
		}
	})
	b.await("ready")

	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var eventID string
	if err := conn.QueryRow(context.Background(), `
		UPDATE events SET assigned_to_user_id = CASE WHEN assigned_to_user_id IS DISTINCT FROM $1::uuid THEN $1::uuid ELSE $2::uuid END
		WHERE id = (SELECT id FROM events WHERE event_calendar_id = $3 ORDER BY start_time, id LIMIT 1) RETURNING id::text`,
		ksql.DemoSam, ksql.DemoAlex, ksql.DemoSchool).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	b.send(map[string]any{"op": "expect", "event": "event:assigned", "event_id": eventID})
	got := b.await("expected")
	t.Logf("event:assigned %s reached both members, not the non-member", got["offset"])

	// A few more of the demo's writes, so the screenshot shows a stream.
	for n := range 6 {
		if _, err := ksql.DemoStep(context.Background(), conn, n); err != nil {
			t.Fatal(err)
		}
	}
	b.send(map[string]any{"op": "screenshot", "user": "alex"})
	if r := b.await("screenshot"); r["sockets"] != "3" {
		t.Errorf("the connected-sockets tile shows %v, want 3 (one per page)", r["sockets"])
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 10_000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
	b.send(map[string]any{"op": "exit"})
	p.interrupt()
}
