package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	"github.com/koordi/koordi-realtime/cmd/internal/service"
)

// slotNameRE is what PostgreSQL accepts as a replication slot name.
var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// checkValues adds to p what is wrong with serve's values (validate checks
// what is required): each is reported before anything starts, all at once.
func (c *serveConfig) checkValues(p *cli.Problems) {
	checkLog(p, c.db.logFormat, c.db.logLevel)
	if c.db.slot != "" && !slotNameRE.MatchString(c.db.slot) {
		p.Addf("SLOT_NAME=%q: use 1-63 lower-case letters, digits and underscores", c.db.slot)
	}
	if c.db.publication == "" {
		p.Addf("PUBLICATION_NAME is empty")
	}
	if c.jwtPublicKey != "" {
		if _, err := os.Stat(c.jwtPublicKey); err != nil {
			p.Addf("JWT_PUBLIC_KEY_FILE: %v", err)
		}
	}
	if err := checkListenAddr(c.listenAddr); err != nil {
		p.Addf("LISTEN_ADDR=%q: %v", c.listenAddr, err)
	}
	for _, o := range strings.Split(c.frontendURL, ",") {
		if o = strings.TrimSpace(o); o != "" {
			if err := checkOrigin(o); err != nil {
				p.Addf("FRONTEND_URL: %q is not an origin: %v", o, err)
			}
		}
	}
	for _, n := range []struct {
		name  string
		value int
		zero  string
	}{
		{"RATE_LIMIT", c.rateLimit, "0 for no limit"},
		{"MAX_SOCKETS_PER_USER", c.maxSockets, "0 for no limit"},
		{"MAX_CONNECTIONS", c.maxConnections, "0 for no limit"},
		{"READY_MAX_LAG_BYTES", c.readyMaxLag, "0 for the default, 64 MiB"},
	} {
		if n.value < 0 {
			p.Addf("%s=%d must not be negative (%s)", n.name, n.value, n.zero)
		}
	}
	if c.shutdownGrace < 0 {
		p.Addf("SHUTDOWN_GRACE must not be negative")
	}
	if c.tableCheck < 0 {
		p.Addf("TABLE_CHECK_INTERVAL must not be negative")
	}
	if c.idleRelease < 0 {
		p.Addf("IDLE_MEMORY_RELEASE must not be negative (0: never)")
	}
}

// checkLog is the LOG_FORMAT and LOG_LEVEL check every command's logger
// makes, as problems among the others.
func checkLog(p *cli.Problems, format, level string) {
	if format != "" && format != "text" && format != "json" {
		p.Addf("LOG_FORMAT=%q: want text or json", format)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		p.Addf("LOG_LEVEL=%q: want debug, info, warn or error", level)
	}
}

// checkListenAddr accepts host:port and :port, the port a number or a
// service name.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port or :port (e.g. :3000, 127.0.0.1:3000)")
	}
	if n, err := strconv.Atoi(port); err == nil && (n < 0 || n > 65535) {
		return errors.New("the port must be 0-65535")
	}
	return nil
}

// checkOrigin accepts what a browser sends as Origin: scheme://host[:port],
// with no path (a trailing slash aside), query, fragment or user; or "*",
// any origin.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	switch {
	case err != nil || u.Scheme == "" || u.Opaque != "":
		return errors.New("want scheme://host[:port], e.g. https://app.koordi.example")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("no host: want scheme://host[:port]")
	case u.User != nil:
		return errors.New("an origin has no user part")
	case u.Path != "" && u.Path != "/":
		return errors.New("an origin has no path: browsers send scheme://host[:port] only, so " + u.Path + " would never match")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return errors.New("an origin has no query or fragment")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return errors.New("the port must be 1-65535")
		}
	}
	return nil
}

// preflight runs the service's database checks before anything listens;
// what it finds is the user's to fix.
func preflight(ctx context.Context, svc *service.Service) error {
	err := svc.Preflight(ctx)
	if err != nil && ctx.Err() == nil {
		return cli.User(err)
	}
	return err
}
