//go:build linux

package raw

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/sioclient"
	"github.com/koordi/koordi-realtime/gateway/auth"
)

// received is what one client got: each frame's offset LSN and stamp.
type received struct {
	mu     sync.Mutex
	lsns   []uint64
	stamps []int64
	bad    int
}

func (r *received) handle(name, args []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	title, ok := sioclient.StringField(args, "event_title")
	i := bytes.LastIndexByte(args, ',')
	if string(name) != "event:updated" || !ok || i < 0 || len(args) < i+2+16 {
		r.bad++
		return
	}
	ns, err1 := strconv.ParseInt(strings.TrimPrefix(string(title), "bench:"), 10, 64)
	lsn, err2 := strconv.ParseUint(string(args[i+2:i+2+16]), 16, 64)
	if err1 != nil || err2 != nil {
		r.bad++
		return
	}
	r.lsns = append(r.lsns, lsn)
	r.stamps = append(r.stamps, ns)
}

func (r *received) take() ([]uint64, []int64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, s, b := r.lsns, r.stamps, r.bad
	r.lsns, r.stamps, r.bad = nil, nil, 0
	return l, s, b
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// TestServeRaw starts the raw server with two workers, connects clients as
// the bench does, and checks that every frame of a rate plan and of a
// fan-out arrives once, in schedule order, at the sockets of its room.
func TestServeRaw(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listen, control := freeAddr(t), freeAddr(t)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{Listen: listen, Control: control, Threads: 2}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	base, ctl := "http://"+listen, "http://"+control

	// The harness's readiness probe: a polling handshake.
	var resp *http.Response
	var err error
	for i := 0; i < 50; i++ {
		if resp, err = http.Get(base + "/socket.io/?EIO=4&transport=polling"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.HasPrefix(body, []byte(`0{"sid":"`)) {
		t.Fatalf("probe: %d %q", resp.StatusCode, body)
	}
	if resp, err := http.Get(base + "/other"); err == nil {
		if resp.StatusCode != 400 {
			t.Errorf("other path: %d", resp.StatusCode)
		}
		resp.Body.Close()
	}

	const users, cals = 12, 3
	secret := bytes.Repeat([]byte("k"), auth.MinSecretLen)
	recv := make([]*received, users)
	conns := make([]*sioclient.Conn, users)
	var wg sync.WaitGroup
	for u := range users {
		tok, err := auth.Mint(secret, harness.UserID(u), "u@bench.test", time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := sioclient.Dial(ctx, sioclient.Options{URL: base, Token: tok, HTTPClient: sioclient.SourceClient(net.IPv4(127, 0, 0, 1)), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("client %d: %v", u, err)
		}
		recv[u], conns[u] = &received{}, c
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(recv[u].handle); err != nil {
				t.Errorf("client %d: %v", u, err)
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	}()
	// A CONNECT whose token names no bench user is refused.
	if _, err := sioclient.Dial(ctx, sioclient.Options{URL: base, Token: "a.b.c", Timeout: 5 * time.Second}); err == nil {
		t.Error("a token without userId was accepted")
	}

	waitFor := func(want func(u int) int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for u := 0; u < users; u++ {
			for {
				recv[u].mu.Lock()
				n := len(recv[u].lsns) + recv[u].bad
				recv[u].mu.Unlock()
				if n >= want(u) || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		time.Sleep(50 * time.Millisecond) // duplicates would show up now
	}

	t.Run("rate", func(t *testing.T) {
		plan := Plan{Calendars: cals, EventsPerCalendar: 2, Rate: 400, Duration: 500 * time.Millisecond}
		before := time.Now().UnixNano()
		res, err := Start(ctx, ctl, plan)
		if err != nil {
			t.Fatal(err)
		}
		if res.Sockets != users || res.Commits != 200 || len(res.PerCal) != cals || res.PerCal[0]+res.PerCal[1]+res.PerCal[2] != 200 {
			t.Fatalf("result %+v", res)
		}
		waitFor(func(u int) int { return int(res.PerCal[u%cals]) })
		iv := plan.Interval()
		for u := range users {
			lsns, stamps, bad := recv[u].take()
			var want []uint64
			for k := int64(0); k < res.Commits; k++ {
				if int(k%cals) == u%cals {
					want = append(want, lsnOf(k))
				}
			}
			if bad > 0 || len(lsns) != len(want) {
				t.Fatalf("user %d: %d frames (%d bad), want %d", u, len(lsns), bad, len(want))
			}
			for i := range want {
				if lsns[i] != want[i] {
					t.Fatalf("user %d: frame %d has LSN %x, want %x (out of order or duplicated)", u, i, lsns[i], want[i])
				}
				// Stamped when taken, never before the commit is due.
				k := int64(lsns[i]-lsnOf(0)) >> 8
				if due := before + int64(time.Duration(k)*iv); stamps[i] < due {
					t.Fatalf("user %d: commit %d stamped %d, %s before it was due", u, k, stamps[i], time.Duration(due-stamps[i]))
				}
				if i > 0 && stamps[i] < stamps[i-1] {
					t.Fatalf("user %d: commit %d stamped before the one before it", u, k)
				}
			}
		}
	})

	t.Run("fanout", func(t *testing.T) {
		const backlog = 300
		res, err := Start(ctx, ctl, Plan{Calendars: cals, EventsPerCalendar: 7, Backlog: backlog})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sockets != users || res.Commits != backlog || res.PerCal[2] != backlog {
			t.Fatalf("result %+v", res)
		}
		waitFor(func(int) int { return backlog })
		for u := range users {
			lsns, _, bad := recv[u].take()
			if bad > 0 || len(lsns) != backlog {
				t.Fatalf("user %d: %d frames (%d bad), want %d", u, len(lsns), bad, backlog)
			}
			for j := range lsns {
				if lsns[j] != lsnOf(int64(j)) {
					t.Fatalf("user %d: frame %d has LSN %x, want %x", u, j, lsns[j], lsnOf(int64(j)))
				}
			}
		}
	})

	if resp, err := http.Get(ctl + "/status"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(b, []byte(`"sockets":12`)) {
			t.Errorf("status %s", b)
		}
	}
}
