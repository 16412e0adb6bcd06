package service

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBoundDrain: a request that declares a body and never sends it gets its
// answer and then loses the connection once the drain deadline passes,
// instead of holding it for ever; a request with no body keeps the
// connection alive for the next.
func TestBoundDrain(t *testing.T) {
	ts := httptest.NewServer(boundDrain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /big outgrows net/http's 2 KiB header buffer: the drain then
		// runs inside the handler's Write, not after it.
		if r.URL.Path == "/big" {
			_, _ = w.Write([]byte(strings.Repeat("x", 100<<10)))
			return
		}
		fmt.Fprintln(w, "ok")
	}), 200*time.Millisecond))
	t.Cleanup(ts.Close)
	addr := strings.TrimPrefix(ts.URL, "http://")

	for _, path := range []string{"/healthz", "/big"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", path)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: no answer: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if rest, err := br.ReadString(0); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("%s: connection still held after the drain deadline: %q %v", path, rest, err)
		}
	}

	// Keep-alive without a body is unaffected.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	br2 := bufio.NewReader(c2)
	for i := range 2 {
		fmt.Fprintf(c2, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br2, nil)
		if err != nil {
			t.Fatalf("request %d on a kept-alive connection: %v", i, err)
		}
		resp.Body.Close()
		time.Sleep(300 * time.Millisecond) // past the drain deadline
	}
}
