// Package cli holds the command-line conventions of koordi-realtime's
// binaries: every flag also reads an environment variable of the same
// meaning (flag, then environment, then default), errors the user can fix
// are marked as such (the binary exits 2 with one line), and logs go to
// stderr as text or JSON.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// ErrHelp is returned by [Flags.Parse] when --help was asked for; the help
// text has been printed.
var ErrHelp = errors.New("help requested")

// UserError marks an error the user can fix (a bad flag, a missing setting,
// an unreachable or unprepared database); the binary exits 2 with its one
// line, never a stack trace.
type UserError struct{ Err error }

func (e UserError) Error() string { return e.Err.Error() }
func (e UserError) Unwrap() error { return e.Err }

// User marks err as a user error (nil stays nil).
func User(err error) error {
	if err == nil {
		return nil
	}
	return UserError{Err: err}
}

// Errorf formats a user error.
func Errorf(format string, args ...any) error { return UserError{Err: fmt.Errorf(format, args...)} }

// IsUserError reports whether err is, or wraps, a UserError.
func IsUserError(err error) bool {
	var u UserError
	return errors.As(err, &u)
}

// Flags is a flag set whose flags each also read an environment variable.
type Flags struct {
	fs       *flag.FlagSet
	getenv   func(string) string
	stderr   io.Writer
	entries  []flagEntry
	deferred []error // malformed environment values, reported by Parse
	help     func()
}

type flagEntry struct {
	name, envName, def, usage string
}

// NewFlags returns the flags of one command; getenv reads the environment
// and stderr receives --help.
func NewFlags(getenv func(string) string, stderr io.Writer, command, summary string) *Flags {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	f := &Flags{fs: fs, getenv: getenv, stderr: stderr}
	fs.SetOutput(io.Discard)
	// The flag package calls Usage on every parse error too; a bad flag must
	// end in one line, so help is printed only when asked for, by Parse.
	f.fs.Usage = func() {}
	f.help = func() { f.printHelp(command, summary) }
	return f
}

func (f *Flags) printHelp(command, summary string) {
	w := f.stderr
	fmt.Fprintf(w, "usage: koordi-realtime %s [flags]\n\n%s\n\nflags (each also read from its environment variable):\n", command, summary)
	for _, e := range f.entries {
		env := e.envName
		if env == "" {
			env = "-"
		}
		def := e.def
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%-22s %-20s default %s\n      %s\n", e.name, env, def, e.usage)
	}
}

func (f *Flags) lookup(envName, def string) string {
	if envName != "" {
		if v := f.getenv(envName); v != "" {
			return v
		}
	}
	return def
}

// String binds a string flag to envName (empty for a flag without one).
func (f *Flags) String(p *string, name, envName, def, usage string) {
	f.entries = append(f.entries, flagEntry{name, envName, def, usage})
	f.fs.StringVar(p, name, f.lookup(envName, def), usage)
}

// Duration binds a duration flag; a malformed environment value is reported
// by Parse.
func (f *Flags) Duration(p *time.Duration, name, envName string, def time.Duration, usage string) {
	f.entries = append(f.entries, flagEntry{name, envName, def.String(), usage})
	f.fs.Var(&durationValue{p: p}, name, usage)
	*p = def
	if v := f.lookup(envName, ""); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			*p = d
		} else {
			f.deferred = append(f.deferred, fmt.Errorf("%s=%q: not a duration (e.g. 2m, 30s)", envName, v))
		}
	}
}

// Bool binds a boolean flag.
func (f *Flags) Bool(p *bool, name, envName string, def bool, usage string) {
	f.entries = append(f.entries, flagEntry{name, envName, fmt.Sprint(def), usage})
	v := def
	if s := f.lookup(envName, ""); s != "" {
		v = s == "1" || strings.EqualFold(s, "true") || strings.EqualFold(s, "yes")
	}
	f.fs.BoolVar(p, name, v, usage)
}

// Int binds an integer flag; a malformed environment value is reported by
// Parse.
func (f *Flags) Int(p *int, name, envName string, def int, usage string) {
	f.entries = append(f.entries, flagEntry{name, envName, fmt.Sprint(def), usage})
	f.fs.Var(&intValue{p: p}, name, usage)
	*p = def
	if s := f.lookup(envName, ""); s != "" {
		if err := (&intValue{p: p}).Set(s); err != nil {
			f.deferred = append(f.deferred, fmt.Errorf("%s=%q: not an integer", envName, s))
		}
	}
}

// Usage replaces a bound flag's help text, for commands that share another
// command's settings but give one a different meaning.
func (f *Flags) Usage(name, usage string) {
	for i := range f.entries {
		if f.entries[i].name == name {
			f.entries[i].usage = usage
		}
	}
}

// Parse parses args; a bad flag or environment value is a user error, and
// --help prints the help and returns ErrHelp.
func (f *Flags) Parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.help()
			return ErrHelp
		}
		return Errorf("%s (see --help)", flagError(err))
	}
	if len(f.deferred) > 0 {
		return UserError{Err: errors.New(JoinProblems(f.deferred))}
	}
	if f.fs.NArg() > 0 {
		return Errorf("unexpected argument %q (see --help)", f.fs.Arg(0))
	}
	return nil
}

// Value returns a bound flag's value as it stands (after Parse, or after a
// Parse that failed part way: the flags before the bad one are set), "" for
// a flag not bound.
func (f *Flags) Value(name string) string {
	if fl := f.fs.Lookup(name); fl != nil {
		return fl.Value.String()
	}
	return ""
}

type durationValue struct{ p *time.Duration }

func (d *durationValue) String() string {
	if d.p == nil {
		return ""
	}
	return d.p.String()
}

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("not a duration (e.g. 2m, 30s)")
	}
	*d.p = v
	return nil
}

type intValue struct{ p *int }

func (i *intValue) String() string {
	if i.p == nil {
		return ""
	}
	return fmt.Sprint(*i.p)
}

// Set takes the whole string: fmt.Sscan would read "10x" as 10 and "1e3"
// as 1 without complaint.
func (i *intValue) Set(s string) error {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return errors.New("not an integer")
	}
	*i.p = v
	return nil
}

// NewLogger builds a process logger on w (stderr, so stdout stays for
// command output): text for a terminal, JSON with format "json".
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, Errorf("LOG_LEVEL=%q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, Errorf("LOG_FORMAT=%q: want text or json", format)
}
