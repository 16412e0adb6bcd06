// Command koordi-realtime streams Koordi's committed PostgreSQL changes to
// browsers as Socket.IO events. See README.md for the commands and
// ../../README.md#configuration for every setting.
//
// main only wires: it parses the command line and environment into the
// packages' Config structs, builds the logger and metrics registry, and runs
// the command until a signal.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/koordi/koordi-realtime/cmd/internal/cli"
)

// command is one subcommand. run gets the arguments after the command name.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

// environment is what a command may touch of the process, so tests can run
// commands in-process with their own streams.
type environment struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// cmdFlags are the running command's flags, from which its final error
	// learns LOG_FORMAT.
	cmdFlags *cli.Flags
}

// flags starts a command's flags, each also read from the environment.
func (e *environment) flags(command, summary string) *cli.Flags {
	e.cmdFlags = cli.NewFlags(e.getenv, e.stderr, command, summary)
	return e.cmdFlags
}

// logFormat is the running command's LOG_FORMAT (flag, then environment),
// so its final error is in the format of its log.
func (e *environment) logFormat() string {
	if e.cmdFlags != nil {
		if v := e.cmdFlags.Value("log-format"); v != "" {
			return v
		}
	}
	return e.getenv("LOG_FORMAT")
}

// logger is the process logger, on stderr.
func (e *environment) logger(format, level string) (*slog.Logger, error) {
	return cli.NewLogger(e.stderr, format, level)
}

func commands() []command {
	return []command{
		{"serve", "stream PostgreSQL changes to Socket.IO clients", runServe},
		{"setup", "prepare an existing Koordi database (replica identity, publication, emit function)", runSetup},
		{"migrate", "create Koordi's tables (development and tests)", runMigrate},
		{"dev", "local cluster + demo data + serve, for a first run", runDev},
		{"conformance", "serve the protocol layer for the public Engine.IO/Socket.IO test suites", runConformance},
		{"tail", "run the CDC side alone and print each derived event as a JSON line", runTail},
		{"token", "mint a development JWT", runToken},
		{"version", "print the version", runVersion},
	}
}

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &environment{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(run(ctx, env, os.Args[1:]))
}

// run executes one command line and returns the process exit code:
// 0 on success, 2 for anything the user can fix (bad flags, configuration,
// an unreachable or unprepared database), 1 for failures while running.
func run(ctx context.Context, env *environment, args []string) int {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version") {
		return run(ctx, env, []string{"version"})
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		switch {
		case err == nil, errors.Is(err, cli.ErrHelp):
			return 0
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			return 0
		case cli.IsUserError(err):
			cli.PrintError(env.stderr, env.logFormat(), "koordi-realtime "+c.name, err, 2)
			return 2
		default:
			cli.PrintError(env.stderr, env.logFormat(), "koordi-realtime "+c.name, err, 1)
			return 1
		}
	}
	fmt.Fprintf(env.stderr, "koordi-realtime: unknown command %q (run koordi-realtime --help)\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: koordi-realtime <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flag can also be set by its environment variable; `koordi-realtime <command> --help` lists them.")
	fmt.Fprintln(w, "koordi-realtime --version prints the version.")
}

func runVersion(_ context.Context, env *environment, _ []string) error {
	fmt.Fprintf(env.stdout, "koordi-realtime %s\n", version)
	return nil
}
