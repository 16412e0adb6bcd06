package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// flagName matches a flag as the flag package's errors name it ("-bogus"),
// after the few phrases that precede one.
var flagName = regexp.MustCompile(`(not defined: |for flag |value "[^"]*" for |needs an argument: )-([^\s:=]+)`)

// flagError rewrites the flag package's parse errors with two dashes, as
// --help and the documentation write flags: "flag provided but not defined:
// -bogus" becomes "unknown flag --bogus".
func flagError(err error) string {
	msg := flagName.ReplaceAllString(err.Error(), "$1--$2")
	if rest, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return "unknown flag " + rest
	}
	return msg
}

// JoinProblems folds several settings' problems into the one line a user
// error must be, in the order they were found.
func JoinProblems(errs []error) string {
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	return strings.Join(msgs, "; ")
}

// Problems collects what is wrong with a command's settings, so that all of
// it is reported at once rather than one fix per run.
type Problems []error

// Addf records a problem.
func (p *Problems) Addf(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// Err is nil without problems, else one user error naming them all.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return UserError{Err: errors.New(JoinProblems(p))}
}

// OneLine folds a multi-line error (pgx lists every address it tried on its
// own line) into one line.
func OneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// PrintError writes the final error of a command in one line on w: "prefix:
// message" as text, or, with format "json", one JSON record shaped as the
// log's (time, level ERROR, msg), so a log collector reading stderr as JSON
// gets it too.
func PrintError(w io.Writer, format, prefix string, err error, exitCode int) {
	msg := OneLine(err.Error())
	if format != "json" {
		fmt.Fprintf(w, "%s: %s\n", prefix, msg)
		return
	}
	rec := struct {
		Time     string `json:"time"`
		Level    string `json:"level"`
		Msg      string `json:"msg"`
		Command  string `json:"command"`
		ExitCode int    `json:"exit_status"`
	}{time.Now().UTC().Format(time.RFC3339Nano), slog.LevelError.String(), msg, prefix, exitCode}
	b, _ := json.Marshal(rec)
	fmt.Fprintf(w, "%s\n", b)
}

// ConnectCause says in a few words why a connection to PostgreSQL failed,
// for a message that already names the host, port, database and role: what
// the server answered (a wrong password, a database that does not exist),
// or the network's refusal, once — pgx's own text names the target again and
// repeats the cause for every address and TLS attempt it made.
func ConnectCause(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Sprintf("the server says %q (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Sprintf("host %q not found", dnsErr.Name)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var netErr net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return "timed out (is the host reachable, the port right?)"
	}
	// Whatever else: pgx's text, each distinct line once.
	var seen []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(seen, l) {
			seen = append(seen, l)
		}
	}
	return strings.Join(seen, "; ")
}
