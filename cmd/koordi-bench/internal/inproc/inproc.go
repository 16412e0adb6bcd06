package inproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cmd/internal/service"
	"github.com/koordi/koordi-realtime/gateway"
)

// Config of the profiled server.
type Config struct {
	DatabaseURL string
	JWTSecret   string
	Listen      string // Socket.IO address, e.g. 127.0.0.1:3000
	PprofListen string // pprof address; empty disables
	SlotName    string // default koordi_bench_inproc
	BulkEvents  int    // serve's BULK_EVENTS; 0: its default
}

// Run serves until ctx ends: serve's own assembly (package service) with
// serve's defaults, plus pprof on its own address.
func Run(ctx context.Context, cfg Config) error {
	if cfg.SlotName == "" {
		cfg.SlotName = "koordi_bench_inproc"
	}
	svc, err := service.New(service.Config{
		DatabaseURL:  cfg.DatabaseURL,
		SlotName:     cfg.SlotName,
		ReplayWindow: 2 * time.Minute,
		BulkEvents:   cfg.BulkEvents,
		Gateway:      gateway.Config{JWTSecret: []byte(cfg.JWTSecret), RateLimit: 100},
		Registry:     prometheus.NewRegistry(),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Run(gctx, ln) })
	if cfg.PprofListen != "" {
		pm := http.NewServeMux()
		pm.HandleFunc("/debug/pprof/", pprof.Index)
		pm.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pm.HandleFunc("/debug/pprof/trace", pprof.Trace)
		psrv := &http.Server{Addr: cfg.PprofListen, Handler: pm, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := psrv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("pprof: %w", err)
			}
			return nil
		})
		g.Go(func() error { <-gctx.Done(); return psrv.Close() })
	}
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}
