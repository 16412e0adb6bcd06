package main

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

// errHelp is returned when --help was asked for; the help text is printed.
var errHelp = errors.New("help requested")

// userError marks errors the user can fix; they exit 2.
type userError struct{ err error }

func (e userError) Error() string { return e.err.Error() }
func (e userError) Unwrap() error { return e.err }

// userErr wraps err (or a formatted message) as a user error.
func userErr(format string, args ...any) error { return userError{fmt.Errorf(format, args...)} }

func isUserError(err error) bool {
	var u userError
	return errors.As(err, &u)
}

// flags is a flag set whose flags each also read an environment variable.
// Precedence: flag, then environment, then default.
type flags struct {
	fs       *flag.FlagSet
	env      *environment
	entries  []flagEntry
	deferred []error // malformed environment values, reported by parse
	help     func()
}

type flagEntry struct {
	name, envName, def, usage string
}

func newFlags(env *environment, command, summary string) *flags {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	f := &flags{fs: fs, env: env}
	fs.SetOutput(io.Discard)
	// The flag package calls Usage on every parse error too; a bad flag must
	// end in one line, so help is printed only when asked for, by parse.
	f.fs.Usage = func() {}
	f.help = func() { f.printHelp(command, summary) }
	return f
}

func (f *flags) printHelp(command, summary string) {
	w := f.env.stderr
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

func (f *flags) lookup(envName, def string) string {
	if envName != "" {
		if v := f.env.getenv(envName); v != "" {
			return v
		}
	}
	return def
}

// String binds a string flag to envName (may be empty for flag-only).
func (f *flags) String(p *string, name, envName, def, usage string) {
	f.entries = append(f.entries, flagEntry{name, envName, def, usage})
	f.fs.StringVar(p, name, f.lookup(envName, def), usage)
}

// Duration binds a duration flag; a malformed environment value is reported by parse.
func (f *flags) Duration(p *time.Duration, name, envName string, def time.Duration, usage string) {
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
func (f *flags) Bool(p *bool, name, envName string, def bool, usage string) {
	f.entries = append(f.entries, flagEntry{name, envName, fmt.Sprint(def), usage})
	v := def
	if s := f.lookup(envName, ""); s != "" {
		v = s == "1" || strings.EqualFold(s, "true") || strings.EqualFold(s, "yes")
	}
	f.fs.BoolVar(p, name, v, usage)
}

// Int binds an integer flag.
func (f *flags) Int(p *int, name, envName string, def int, usage string) {
	f.entries = append(f.entries, flagEntry{name, envName, fmt.Sprint(def), usage})
	f.fs.Var(&intValue{p: p}, name, usage)
	*p = def
	if s := f.lookup(envName, ""); s != "" {
		if err := (&intValue{p: p}).Set(s); err != nil {
			f.deferred = append(f.deferred, fmt.Errorf("%s=%q: not an integer", envName, s))
		}
	}
}

// parse parses args; a bad flag or environment value is a user error, and
// --help prints the help and returns errHelp.
func (f *flags) parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.help()
			return errHelp
		}
		return userErr("%v (see --help)", err)
	}
	if len(f.deferred) > 0 {
		return userError{f.deferred[0]}
	}
	if f.fs.NArg() > 0 {
		return userErr("unexpected argument %q (see --help)", f.fs.Arg(0))
	}
	return nil
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

// newLogger builds the process logger: text for a terminal, JSON with
// LOG_FORMAT=json, on stderr so stdout stays for command output.
func newLogger(env *environment, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, userErr("LOG_LEVEL=%q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(env.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.stderr, opts)), nil
	}
	return nil, userErr("LOG_FORMAT=%q: want text or json", format)
}
