package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/inspector"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// requireChromium returns Debian's chromium (or $CHROMIUM); see unavailable.
func requireChromium(t *testing.T) {
	t.Helper()
	chromium := os.Getenv("CHROMIUM") // the scripts read it too
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		unavailable(t, "no chromium at %s (Debian: apt-get install chromium; .ci/run does): %v", chromium, err)
	}
}

// shotsDir is where the screenshots go: $INSPECTOR_SHOTS to keep them for
// a look, else the test's temporary directory.
func shotsDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("INSPECTOR_SHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// page is browser/page.mjs: one chromium page, one command at a time.
type page struct{ b *browserPages }

func openPage(t *testing.T, url, shots string) *page {
	t.Helper()
	requireChromium(t)
	b := &browserPages{nodeDriver: startNode(t, "playwright-core", 60*time.Second, "browser/page.mjs", url, shots)}
	b.answered = 1 // "ready"
	return &page{b}
}

func (p *page) run(cmd map[string]any) json.RawMessage {
	p.b.t.Helper()
	p.b.do(cmd)
	return p.b.await("ok").Value
}

// wait waits until expr is truthy in the page and returns its value.
func (p *page) wait(expr string) json.RawMessage {
	p.b.t.Helper()
	return p.run(map[string]any{"op": "wait", "expr": expr})
}

func (p *page) eval(expr string, v any) {
	p.b.t.Helper()
	if err := json.Unmarshal(p.run(map[string]any{"op": "eval", "expr": expr}), v); err != nil {
		p.b.t.Fatalf("eval %s: %v", expr, err)
	}
}

func (p *page) click(sel string) { p.b.t.Helper(); p.run(map[string]any{"op": "click", "sel": sel}) }

func (p *page) shot(name string) {
	p.b.t.Helper()
	var path string
	_ = json.Unmarshal(p.run(map[string]any{"op": "shot", "name": name}), &path)
	p.b.t.Logf("screenshot %s", path)
}

func (p *page) text(sel string) string {
	p.b.t.Helper()
	var s string
	p.eval(fmt.Sprintf(`document.querySelector(%q)?.textContent ?? ""`, sel), &s)
	return s
}

// apiCall makes an inspector API request with token (none: no header).
func apiCall(t *testing.T, method, url, token, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bytes.TrimSpace(b))
}

// startDevOn runs dev on the test's own database (no local cluster).
func startDevOn(t *testing.T, db *testDB, slot string, vars ...string) *devProc {
	t.Helper()
	return startDev(t, t.TempDir(), devEnv(append([]string{
		"DATABASE_URL=" + db.url, "SLOT_NAME=" + slot, "LISTEN_ADDR=127.0.0.1:0", "JWT_SECRET=" + testSecret,
	}, vars...)...))
}

// TestDevBannerFromDatabase: dev's banner and the inspector's demo users
// are the database's, not the seed file's: after a calendar is renamed, a
// user renamed and Casey accepted into a calendar, the next start shows
// them. That start resumes the replication slot and says so ("streaming
// resumed"), where the first said "streaming started".
func TestDevBannerFromDatabase(t *testing.T) {
	db := &testDB{t: t, url: pgcluster.NewDatabase(t, cluster)}
	slot := db.slot("banner")
	t.Cleanup(func() { db.dropSlot(slot) })
	p := startDevOn(t, db, slot, "LOG_FORMAT=json")
	if !strings.Contains(p.stdout.String(), "Jordan Lee <jordan@demo.koordi.app>, member of Maya · Soccer\n") {
		t.Fatalf("first banner:\n%s", p.stdout.String())
	}
	db.conn = pgcluster.Connect(t, db.url)
	db.exec(`UPDATE event_calendars SET name = 'Maya · Football' WHERE id = $1`, ksql.DemoSoccer)
	db.exec(`UPDATE users SET name = 'Jordan Lee-Rivera' WHERE id = $1`, ksql.DemoJordan)
	db.exec(`INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id)
		VALUES ($1, $2, 'casey@demo.koordi.app', 'banner-test', 'accepted', $3)`, ksql.DemoSchool, ksql.DemoCasey, ksql.DemoAlex)
	p.interrupt()
	if !strings.Contains(p.stderr.String(), `"msg":"streaming started"`) {
		t.Errorf("first run: no \"streaming started\":\n%s", p.stderr.String())
	}

	p = startDevOn(t, db, slot, "LOG_FORMAT=json")
	banner := p.stdout.String()
	for _, want := range []string{
		"Alex Rivera <alex@demo.koordi.app>, member of Maya · Football, Maya · School\n",
		"Jordan Lee-Rivera <jordan@demo.koordi.app>, member of Maya · Football\n",
		"Casey Kim <casey@demo.koordi.app>, member of Maya · School\n",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("second banner lacks %q:\n%s", want, banner)
		}
	}
	if strings.Contains(banner, "Soccer") {
		t.Errorf("second banner still names the seed's calendar:\n%s", banner)
	}
	_, body := httpGet(t, p.base+"/inspector/api/config")
	var cfg struct {
		DemoUsers []inspector.DemoUser `json:"demo_users"`
		Calendars []inspector.Calendar `json:"calendars"`
	}
	if err := json.Unmarshal([]byte(body), &cfg); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, c := range cfg.Calendars {
		names[c.ID] = c.Name
	}
	if names[ksql.DemoSoccer] != "Maya · Football" || len(cfg.DemoUsers) != 4 || cfg.DemoUsers[2].Name != "Jordan Lee-Rivera" ||
		!slices.Equal(cfg.DemoUsers[3].Calendars, []string{ksql.DemoSchool}) {
		t.Errorf("inspector config after the changes: %s", body)
	}
	// The token printed for Casey works and carries the email.
	c := devSocket(t, p.base, p.token("casey@demo.koordi.app"))
	devWait(c, "connect", func(r nodeReport) bool { return r.Ev == "connect" })
	c.close()
	p.interrupt()
	logs := p.stderr.String()
	if !strings.Contains(logs, `"msg":"streaming resumed"`) || strings.Contains(logs, `"msg":"streaming started"`) {
		t.Errorf("second run: want \"streaming resumed\" and no \"streaming started\":\n%s", logs)
	}
}

// TestInspectorAPI: /inspector/api/rooms answers for a verified token only,
// with its own user's rooms; /inspector/api/emit (dev only) sends a test
// event through koordi_realtime.emit to one of the token's rooms, and
// refuses another's.
func TestInspectorAPI(t *testing.T) {
	db := &testDB{t: t, url: pgcluster.NewDatabase(t, cluster)}
	slot := db.slot("api")
	t.Cleanup(func() { db.dropSlot(slot) })
	p := startDevOn(t, db, slot)
	jordan := p.token("jordan@demo.koordi.app")
	rooms := p.base + "/inspector/api/rooms"
	emit := p.base + "/inspector/api/emit"

	if code, _ := apiCall(t, "GET", rooms, "", "", ""); code != 401 {
		t.Errorf("rooms without a token: %d, want 401", code)
	}
	forged, _ := auth.Mint([]byte("another-secret-that-is-long-enough-000"), ksql.DemoAlex, "", time.Now(), time.Hour)
	if code, body := apiCall(t, "GET", rooms, forged, "", ""); code != 401 || strings.Contains(body, "calendar:") {
		t.Errorf("rooms with a token of another secret: %d %s, want 401", code, body)
	}
	code, body := apiCall(t, "GET", rooms, jordan, "", "")
	var got inspector.RoomsReply
	_ = json.Unmarshal([]byte(body), &got)
	slices.Sort(got.Rooms)
	if code != 200 || got.User != ksql.DemoJordan || !slices.Equal(got.Rooms, []string{"calendar:" + ksql.DemoSoccer, "user:" + ksql.DemoJordan}) {
		t.Errorf("Jordan's rooms: %d %s", code, body)
	}

	c := devSocket(t, p.base, jordan)
	devWait(c, "connect", func(r nodeReport) bool { return r.Ev == "connect" })
	if code, body := apiCall(t, "POST", emit, jordan, "application/json", `{"room":"calendar:`+ksql.DemoSchool+`"}`); code != 403 {
		t.Errorf("emit to a calendar Jordan is not in: %d %s, want 403", code, body)
	}
	if code, _ := apiCall(t, "POST", emit, jordan, "text/plain", `{"room":"calendar:`+ksql.DemoSoccer+`"}`); code != 415 {
		t.Errorf("emit as text/plain: %d, want 415", code)
	}
	if code, _ := apiCall(t, "POST", emit, "", "application/json", `{"room":"calendar:`+ksql.DemoSoccer+`"}`); code != 401 {
		t.Errorf("emit without a token: %d, want 401", code)
	}
	if code, body := apiCall(t, "POST", emit, jordan, "application/json", `{"room":"calendar:`+ksql.DemoSoccer+`"}`); code != 202 {
		t.Fatalf("emit to Jordan's calendar: %d %s, want 202", code, body)
	}
	got2 := devWait(c, inspector.EventTest, func(r nodeReport) bool { return r.Ev == "event" && r.Event == inspector.EventTest })
	if !strings.Contains(string(got2.Args[0]), `"room":"calendar:`+ksql.DemoSoccer+`"`) {
		t.Errorf("test event %s", got2.Args[0])
	}
	c.close()
	p.interrupt()
}

// TestInspectorStates drives dev's inspector in chromium through the states
// issue 12 names, asserting on the page and taking a screenshot of each: the
// empty state of dev; the rooms the server says; a test event from the
// button, folded like every payload until "Unfold all"; names and user
// cards renamed by calendar:updated and member:added; tiles on one line
// each with the sparkline clear of its caption; "Drop connection" closing
// the transport and the client recovering; stale numbers dimmed while the
// server is unreachable; the empty state of a connected page.
func TestInspectorStates(t *testing.T) {
	requireChromium(t)
	db := &testDB{t: t, url: pgcluster.NewDatabase(t, cluster)}
	slot := db.slot("states")
	t.Cleanup(func() { db.dropSlot(slot) })
	p := startDevOn(t, db, slot)
	if _, bundle := httpGet(t, p.base+"/inspector/vendor/socket.io.min.js"); strings.Contains(bundle, "KOORDI_BUNDLE_MISSING") {
		unavailable(t, "the binary was built without socket.io-client's browser bundle: run make inspector-bundle (make test does)")
	}
	db.conn = pgcluster.Connect(t, db.url)
	pg := openPage(t, p.base+"/", shotsDir(t))
	defer pg.b.close()

	if got := pg.text("#empty-title"); got != "Pick a demo user" {
		t.Errorf("dev's empty state before connecting: %q", got)
	}
	pg.shot("dev-1-empty.png")

	pg.click(`.user[data-email="alex@demo.koordi.app"]`)
	pg.wait(`document.querySelector("#state").dataset.state === "connected"`)
	school, soccer := "calendar:"+ksql.DemoSchool, "calendar:"+ksql.DemoSoccer
	pg.wait(fmt.Sprintf(`document.querySelectorAll("#rooms li[data-room]").length === 3 && document.querySelector('#rooms li[data-room=%q]') && document.querySelector('#rooms li[data-room=%q]')`, school, soccer))
	if got := pg.text("#empty-title"); got != "Waiting for events for Alex Rivera" {
		t.Errorf("dev's empty state once connected: %q", got)
	}

	// A test event to the selected room, from the button.
	pg.click(fmt.Sprintf(`#rooms li[data-room=%q]`, school))
	pg.click("#emit")
	pg.wait(fmt.Sprintf(`document.querySelector('#events li.ev[data-event=%q][data-room=%q]')`, inspector.EventTest, school))

	// Renames and a new member, from the stream.
	db.exec(`UPDATE event_calendars SET name = 'Maya · Football', updated_at = now() WHERE id = $1`, ksql.DemoSoccer)
	db.exec(`INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id, responded_at)
		VALUES ($1, $2, 'casey@demo.koordi.app', 'states-test', 'accepted', $3, now())`, ksql.DemoSchool, ksql.DemoCasey, ksql.DemoAlex)
	pg.wait(fmt.Sprintf(`document.querySelector('#rooms li[data-room=%q] .rname').textContent === "calendar:Maya · Football"`, soccer))
	pg.wait(`document.querySelector('.user[data-email="alex@demo.koordi.app"] .ucals').textContent.includes("Maya · Football")`)
	pg.wait(`document.querySelector('.user[data-email="casey@demo.koordi.app"] .ucals').textContent === "Maya · School"`)
	for n := range 6 {
		if _, err := ksql.DemoStep(context.Background(), db.conn, n); err != nil {
			t.Fatal(err)
		}
	}
	pg.wait(`document.querySelectorAll("#events li.ev:not(.system)").length >= 8`)
	var unfolded int
	pg.eval(`document.querySelectorAll("#events li.ev:not(.system):not(.folded)").length`, &unfolded)
	if unfolded != 0 {
		t.Errorf("%d payloads unfolded by default", unfolded)
	}
	pg.wait(`document.getElementById("st-rate").textContent !== "–"`)
	time.Sleep(2200 * time.Millisecond) // two stats polls: rates and the sparkline
	pg.shot("dev-2-stream-folded.png")
	pg.click("#fold")
	pg.eval(`document.querySelectorAll("#events li.ev:not(.system).folded").length`, &unfolded)
	if unfolded != 0 || pg.text("#fold") != "Fold all" {
		t.Errorf("after Unfold all: %d still folded, button %q", unfolded, pg.text("#fold"))
	}
	pg.shot("dev-3-unfolded.png")
	pg.click("#fold")

	// Tiles: every line fits (no wrap, nothing cut), the sparkline is clear
	// of the rate and of its caption, and counts agree in number.
	var layout struct {
		Overflowing []string
		SparkOver   bool
		Replay      string
	}
	pg.eval(`(() => {
		const r = (id) => document.getElementById(id).getBoundingClientRect();
		const apart = (a, b) => a.bottom <= b.top || b.bottom <= a.top || a.right <= b.left || b.right <= a.left;
		const overflowing = [...document.querySelectorAll(".tile .label, .tile .value, .tile .hint")]
			.filter((n) => n.scrollWidth > n.clientWidth + 1 || n.getClientRects().length !== 1 || n.offsetHeight > 34)
			.map((n) => n.id + ": " + n.textContent);
		return { overflowing, sparkOver: !apart(r("spark"), r("st-derived")) || !apart(r("spark"), r("st-rate")),
			replay: document.getElementById("st-replay").textContent };
	})()`, &layout)
	if len(layout.Overflowing) > 0 || layout.SparkOver {
		t.Errorf("tiles: overflowing %q, sparkline over its caption or the rate: %v", layout.Overflowing, layout.SparkOver)
	}
	if strings.HasPrefix(layout.Replay, "1 events") || !strings.HasSuffix(layout.Replay, " in replay window") {
		t.Errorf("replay tile: %q", layout.Replay)
	}

	// Drop connection: the transport closes without a goodbye; the client
	// reconnects by itself and recovers.
	pg.click("#drop")
	pg.wait(`[...document.querySelectorAll("#events li.system")].some((li) => li.textContent.includes("transport dropped")) && [...document.querySelectorAll("#events li.system")].some((li) => li.textContent.includes("disconnected: "))`)
	pg.wait(`document.querySelector("#state").dataset.state === "connected" && document.getElementById("recovered").textContent.startsWith("yes")`)
	pg.shot("dev-4-recovered.png")

	// The server unreachable: the numbers stay, dimmed.
	pg.run(map[string]any{"op": "offline", "on": true})
	pg.wait(`document.getElementById("tiles").classList.contains("stale") && document.getElementById("ready").textContent === "unreachable"`)
	pg.shot("dev-5-stale.png")
	pg.run(map[string]any{"op": "offline", "on": false})
	pg.wait(`!document.getElementById("tiles").classList.contains("stale")`)

	pg.click("#clear")
	if got := pg.text("#empty-title"); got != "Waiting for events for Alex Rivera" {
		t.Errorf("empty state after Clear: %q", got)
	}
	pg.shot("dev-6-cleared.png")
	pg.b.close()
	p.interrupt()
}

// TestInspectorServeToken: `serve --inspector` has no demo users; a pasted
// token's socket shows every room the server put it in (the calendars come
// from /inspector/api/rooms, which the page cannot know otherwise), and a
// rename reaches the room's label from the stream. There is no test-event
// endpoint outside dev.
func TestInspectorServeToken(t *testing.T) {
	db := newTestDB(t)
	if err := ksql.SeedDemo(context.Background(), db.conn); err != nil {
		t.Fatal(err)
	}
	db.setup()
	s := startServer(t, db, "INSPECTOR=1")
	alex, err := auth.Mint([]byte(testSecret), ksql.DemoAlex, "alex@demo.koordi.app", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := apiCall(t, "POST", s.url()+"/inspector/api/emit", alex, "application/json", `{"room":"user:`+ksql.DemoAlex+`"}`); code != 404 {
		t.Errorf("serve's emit endpoint: %d, want 404", code)
	}
	if code, body := apiCall(t, "GET", s.url()+"/inspector/api/rooms", alex, "", ""); code != 200 || strings.Count(body, "calendar:") != 2 {
		t.Errorf("serve's rooms for Alex: %d %s", code, body)
	}

	pg := openPage(t, s.url()+"/", shotsDir(t))
	defer pg.b.close()
	if got := pg.text("#empty-title"); got != "Paste a token" {
		t.Errorf("serve's empty state: %q", got)
	}
	pg.shot("serve-1-empty.png")
	pg.run(map[string]any{"op": "fill", "sel": "#token", "text": alex})
	pg.click("#connect-token")
	school := "calendar:" + ksql.DemoSchool
	pg.wait(fmt.Sprintf(`document.querySelector("#state").dataset.state === "connected" && document.querySelectorAll("#rooms li[data-room]").length === 3 && document.querySelector('#rooms li[data-room=%q]')`, school))
	var emitHidden bool
	pg.eval(`document.getElementById("emit-box").hidden`, &emitHidden)
	if !emitHidden {
		t.Error("serve's page offers test events")
	}
	db.exec(`UPDATE event_calendars SET name = 'Maya · Lincoln Elementary', updated_at = now() WHERE id = $1`, ksql.DemoSchool)
	pg.wait(fmt.Sprintf(`document.querySelector('#rooms li[data-room=%q] .rname').textContent === "calendar:Maya · Lincoln Elementary"`, school))
	if got := pg.text("#empty-title"); !strings.HasPrefix(got, "Waiting for events") {
		t.Errorf("serve's empty state once connected: %q", got)
	}
	pg.click("#fold") // the calendar:updated payload, unfolded for the picture
	pg.shot("serve-2-rooms.png")
	pg.b.close()
}
