package inproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/gateway"
)

// Config of the profiled server.
type Config struct {
	DatabaseURL string
	JWTSecret   string
	Listen      string // Socket.IO address, e.g. 127.0.0.1:3000
	PprofListen string // pprof address; empty disables
	SlotName    string // default koordi_bench_inproc
}

type memberships struct{ c *cdc.Consumer }

func (m memberships) AcceptedCalendars(_ context.Context, userID string) ([]string, error) {
	return m.c.State().AcceptedCalendars(userID), nil
}

func (m memberships) IsAcceptedMember(_ context.Context, userID, calendarID string) (bool, error) {
	return m.c.State().IsAcceptedMember(userID, calendarID), nil
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.SlotName == "" {
		cfg.SlotName = "koordi_bench_inproc"
	}
	consumer, err := cdc.New(cdc.Config{ConnString: cfg.DatabaseURL, SlotName: cfg.SlotName, Retain: 2 * time.Minute})
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Config{JWTSecret: []byte(cfg.JWTSecret), Memberships: memberships{consumer}})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !consumer.Status().Streaming {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		gw.Handler().ServeHTTP(w, r)
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return consumer.Run(gctx, cdc.SinkFunc(gw.Publish)) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
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
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		go func() { _ = gw.Shutdown(sctx) }()
		return srv.Shutdown(sctx)
	})
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}
