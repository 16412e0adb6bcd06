package socketio

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/gateway/engineio"
)

// TestConfigEmbedsEngine: the Engine.IO settings are engineio.Config's
// own, embedded, reaching the engine as given; zero values are the
// defaults of both layers, and Config reports them in effect.
func TestConfigEmbedsEngine(t *testing.T) {
	s := NewServer(Config{Config: engineio.Config{PingInterval: 1234 * time.Millisecond, PingTimeout: 567 * time.Millisecond, MaxPayload: 4321}})
	hs := httptest.NewServer(s)
	defer hs.Close()
	defer s.Shutdown(t.Context())
	resp, err := http.Get(hs.URL + "/socket.io/?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var open struct{ PingInterval, PingTimeout, MaxPayload int }
	if err := json.Unmarshal(b[1:], &open); err != nil || open.PingInterval != 1234 || open.PingTimeout != 567 || open.MaxPayload != 4321 {
		t.Errorf("handshake %s (%v)", b, err)
	}
	if c := s.Config(); c.MaxAttachmentBytes != 4321 || c.AttachmentTimeout != 567*time.Millisecond {
		t.Errorf("attachment defaults follow the engine's: %+v", c)
	}

	d := NewServer(Config{}).Config()
	if d.PingInterval != 25*time.Second || d.PingTimeout != 20*time.Second || d.MaxPayload != 1_000_000 ||
		d.SendQueue != engineio.DefaultSendQueue || d.Logger == nil || d.AllowSameOrigin ||
		d.ConnectTimeout != 45*time.Second || d.MaxAttachmentBytes != 1_000_000 || d.AttachmentTimeout != 20*time.Second {
		t.Errorf("defaults %+v", d)
	}
}
