package raw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// Config of the raw server.
type Config struct {
	Listen  string // Socket.IO address, e.g. 127.0.0.1:3000 (IPv4)
	Control string // control and pprof address
	// Threads is the number of epoll workers; default GOMAXPROCS.
	Threads int
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Threads <= 0 {
		cfg.Threads = runtime.GOMAXPROCS(0)
	}
	ln, err := net.Listen("tcp", cfg.Control)
	if err != nil {
		return err
	}
	p, err := startPool(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer p.close()
	srv := &http.Server{Handler: controlMux(p), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		_ = srv.Close()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}

func controlMux(p *pool) *http.ServeMux { return ControlMux(p.run, p.sockets) }

// ControlMux is the control API of a server run from a Plan (raw's, and
// the gateway-only server's): POST /run takes a Plan and answers with the
// Result once run has issued it, GET /status counts the sockets, and
// net/http/pprof is under /debug/pprof/.
func ControlMux(run func(context.Context, Plan) (Result, error), sockets func() int) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /run", func(w http.ResponseWriter, r *http.Request) {
		var plan Plan
		if err := json.NewDecoder(r.Body).Decode(&plan); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res, err := run(r.Context(), plan)
		if err != nil {
			res.Error = err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int{"sockets": sockets()})
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	return mux
}

// Start runs plan on the raw server whose control address is base
// (http://host:port) and returns what it issued, once it is issued.
func Start(ctx context.Context, base string, plan Plan) (Result, error) {
	body, err := json.Marshal(plan)
	if err != nil {
		return Result{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/run", bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return Result{}, fmt.Errorf("raw /run: %s: %s", resp.Status, bytes.TrimSpace(b.Bytes()))
	}
	var res Result
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, err
	}
	if res.Error != "" {
		return res, errors.New("raw /run: " + res.Error)
	}
	return res, nil
}
