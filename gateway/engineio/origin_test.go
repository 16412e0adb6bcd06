package engineio

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// originCase is one request's Origin (and X-Forwarded-Proto) and whether
// the server must serve it.
type originCase struct {
	origin, proto string
	ok            bool
}

// checkOrigins opens a polling session and a WebSocket with each case's
// headers, expecting the handshake (200/101, CORS headers for polling) or
// 403.
func checkOrigins(t *testing.T, base string, client *http.Client, cases []originCase) {
	t.Helper()
	for _, c := range cases {
		hdr := http.Header{}
		if c.origin != "" {
			hdr.Set("Origin", c.origin)
		}
		if c.proto != "" {
			hdr.Set("X-Forwarded-Proto", c.proto)
		}
		name := c.origin + " proto=" + c.proto

		req, _ := http.NewRequest("GET", base+"?EIO=4&transport=polling", nil)
		req.Header = hdr.Clone()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := http.StatusForbidden
		if c.ok {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			t.Errorf("polling, %s: %d %s, want %d", name, resp.StatusCode, body, want)
		}
		if acao := resp.Header.Get("Access-Control-Allow-Origin"); c.origin != "" && (acao == c.origin) != c.ok {
			t.Errorf("polling, %s: Access-Control-Allow-Origin %q", name, acao)
		}

		// The preflight of a POST answers the same.
		req, _ = http.NewRequest("OPTIONS", base+"?EIO=4&transport=polling", nil)
		req.Header = hdr.Clone()
		req.Header.Set("Access-Control-Request-Method", "POST")
		if resp, err = client.Do(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: 204, false: 403}[c.ok]; c.origin != "" && resp.StatusCode != want {
			t.Errorf("preflight, %s: %d, want %d", name, resp.StatusCode, want)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ws, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"?EIO=4&transport=websocket",
			&websocket.DialOptions{HTTPHeader: hdr.Clone(), HTTPClient: client})
		cancel()
		if c.ok {
			if err != nil {
				t.Errorf("websocket, %s: %v", name, err)
			} else {
				ws.CloseNow()
			}
		} else if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			if ws != nil {
				ws.CloseNow()
			}
			t.Errorf("websocket, %s: err %v, want 403", name, err)
		}
	}
}

// TestOriginsOnlyConfigured: an Origin is allowed when it is configured,
// whatever the Host header says; the host of the server itself is no
// exception (a page on http://host, or on another port's scheme, is
// another origin than the one deployed).
func TestOriginsOnlyConfigured(t *testing.T) {
	ts := newTestServer(t, Config{AllowedOrigins: []string{"http://app.example", "https://App.Example:8443/"}})
	host := strings.TrimPrefix(ts.url[:strings.Index(ts.url, "/engine.io/")], "http://")
	checkOrigins(t, ts.url, http.DefaultClient, []originCase{
		{"", "", true}, // not a browser: Origin is what CORS protects
		{"http://app.example", "", true},
		{"https://app.example:8443", "", true},
		{"http://app.example:8443", "", false},
		{"https://app.example", "", false},
		{"http://evil.example", "", false},
		{"http://" + host, "", false},
		{"https://" + host, "", false},
		{"ws://" + host, "", false},
		{"null", "", false},
	})
}

// TestAllowSameOrigin: with AllowSameOrigin, a page served by the same
// scheme and host may connect too. The scheme is https when this process
// terminates TLS, else what X-Forwarded-Proto says (one value, http or
// https), else http.
func TestAllowSameOrigin(t *testing.T) {
	ts := newTestServer(t, Config{AllowedOrigins: []string{"http://app.example"}, AllowSameOrigin: true})
	hostPort := strings.TrimPrefix(ts.url[:strings.Index(ts.url, "/engine.io/")], "http://")
	_, port, _ := strings.Cut(hostPort, ":")
	checkOrigins(t, ts.url, http.DefaultClient, []originCase{
		{"http://app.example", "", true},
		{"http://" + hostPort, "", true},
		{"HTTP://" + strings.ToUpper(hostPort), "", true},
		{"https://" + hostPort, "", false},
		{"http://localhost:" + port, "", false}, // another host name is another origin
		{"http://" + hostPort + ".evil.example", "", false},
		{"http://" + hostPort + "@evil.example", "", false},
		{"https://" + hostPort, "https", true},
		{"http://" + hostPort, "https", false},
		{"https://" + hostPort, "HTTPS", true},
		{"https://" + hostPort, "https, http", false}, // appended by a chain: ambiguous, refused
		{"http://" + hostPort, "http", true},
		{"http://evil.example", "https", false},
	})
}

// TestAllowSameOriginTLS: a server terminating TLS is https whatever
// X-Forwarded-Proto claims; default ports are the same origin as none.
func TestAllowSameOriginTLS(t *testing.T) {
	h := newRecHandler()
	s := NewServer(Config{PingInterval: time.Minute, PingTimeout: time.Minute, AllowedOrigins: []string{"http://app.example"}, AllowSameOrigin: true}, h)
	hs := httptest.NewUnstartedServer(s)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.StartTLS()
	t.Cleanup(func() {
		_ = s.Shutdown(context.Background())
		hs.Close()
	})
	client := hs.Client()
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	base := hs.URL + "/engine.io/"
	hostPort := strings.TrimPrefix(hs.URL, "https://")
	checkOrigins(t, base, client, []originCase{
		{"https://" + hostPort, "", true},
		{"https://" + hostPort, "http", true},
		{"http://" + hostPort, "", false},
		{"http://" + hostPort, "http", false},
		{"http://app.example", "", true},
	})
	// Host "example.test:443" and Origin "https://example.test" are one origin.
	for _, c := range []struct {
		host, origin string
		ok           bool
	}{
		{"example.test:443", "https://example.test", true},
		{"example.test", "https://example.test:443", true},
		{"example.test:80", "https://example.test", false},
	} {
		req, _ := http.NewRequest("GET", base+"?EIO=4&transport=polling", nil)
		req.Host = c.host
		req.Header.Set("Origin", c.origin)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if (resp.StatusCode == 200) != c.ok {
			t.Errorf("Host %s, Origin %s: %d", c.host, c.origin, resp.StatusCode)
		}
	}
}
