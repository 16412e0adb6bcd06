package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	"github.com/koordi/koordi-realtime/gateway/conformance"
)

// runConformance serves the protocol layer with the echo handlers and
// timings of the public Engine.IO/Socket.IO test suites.
func runConformance(ctx context.Context, env *environment, args []string) error {
	var (
		listen, logFormat, logLevel string
		cfg                         conformance.Config
	)
	f := env.flags("conformance", "Serve /engine.io/ and /socket.io/ with the echo handlers, /custom namespace and timings the public protocol test suites (test-suite/ of socketio/engine.io-protocol and socketio/socket.io-protocol) expect.")
	f.String(&listen, "listen-addr", "LISTEN_ADDR", "127.0.0.1:3000", "address to listen on (the suites use localhost:3000)")
	f.Duration(&cfg.PingInterval, "ping-interval", "", 300*time.Millisecond, "Engine.IO ping interval")
	f.Duration(&cfg.PingTimeout, "ping-timeout", "", 200*time.Millisecond, "Engine.IO ping timeout")
	f.Duration(&cfg.ConnectTimeout, "connect-timeout", "", time.Second, "close an engine connection that joins no namespace in this time")
	f.Int(&cfg.MaxPayload, "max-payload", "", 1_000_000, "largest accepted message or POST body, bytes")
	f.String(&logFormat, "log-format", "LOG_FORMAT", "text", "log format: text or json")
	f.String(&logLevel, "log-level", "LOG_LEVEL", "warn", "log level: debug, info, warn or error")
	if err := f.Parse(args); err != nil {
		return err
	}
	logger, err := env.logger(logFormat, logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = logger

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return cli.Errorf("listen on %s: %v", listen, err)
	}
	srv := conformance.New(cfg)
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	fmt.Fprintf(env.stdout, "conformance server on http://%s (/engine.io/, /socket.io/)\n", ln.Addr())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// http.Server.Shutdown does not wait for hijacked WebSockets: close ours first.
	err = errors.Join(srv.Shutdown(shutdownCtx), hs.Shutdown(shutdownCtx))
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return err
}
