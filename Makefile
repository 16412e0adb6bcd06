# koordi-realtime — see README.md.
GO        ?= go
BIN       := bin/koordi-realtime
PKGS      := ./...
NPM_DIR   := testdata

.PHONY: run run-cluster test lint fuzz bench build clean node-deps inspector-bundle demo-writes

## run: local PostgreSQL cluster under ./.koordi, demo data, gateway and inspector on :3000
run: build
	./$(BIN) dev

## demo-writes: the same, plus a realistic stream of writes every second
demo-writes: build
	./$(BIN) dev --simulate

## run-cluster: the same with three nodes on :3000-:3002 sharing a local
## nats-server; kill the leader to watch a failover
run-cluster: build
	./$(BIN) dev --nodes 3 --simulate

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build: inspector-bundle
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/koordi-realtime
	$(GO) build -o bin/nats-server github.com/nats-io/nats-server/v2

## inspector-bundle: socket.io-client's browser bundle, embedded by the
## inspector page (gateway/inspector). Copied from the npm package, never
## committed; without npm the binary still builds and the page says so.
BUNDLE_SRC := $(NPM_DIR)/node_modules/socket.io-client/dist/socket.io.min.js
BUNDLE_DST := gateway/inspector/static/vendor/socket.io.min.js
inspector-bundle:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "make: npm not found; building without socket.io-client's browser bundle (the inspector page will say so)"; \
	elif $(MAKE) --no-print-directory node-deps; then \
		cp $(BUNDLE_SRC) $(BUNDLE_DST); \
	else \
		echo "make: npm ci failed (no registry?); building without socket.io-client's browser bundle (the inspector page will say so)"; \
	fi

## node-deps: the JavaScript clients the tests drive (socket.io-client, …)
node-deps: $(NPM_DIR)/node_modules/.package-lock.json
$(NPM_DIR)/node_modules/.package-lock.json: $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error

## test: every test, race detector on, real PostgreSQL and real clients
test: node-deps inspector-bundle
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 12m $(PKGS)

## fuzz: every fuzz target of the module, found anew each time with
## `go test -list`, for FUZZTIME each (make fuzz FUZZTIME=10m), one after
## another; fails, naming them, if any found a crash (the crashing input is
## kept under the package's testdata/fuzz/, where go test replays it)
FUZZTIME ?= 30s
fuzz:
	@failed=""; \
	for pkg in $$($(GO) list $(PKGS)); do \
		list=$$($(GO) test -list '^Fuzz' $$pkg) || { echo "$$list"; echo "fuzz: cannot list $$pkg"; exit 1; }; \
		for target in $$(echo "$$list" | grep '^Fuzz'); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg || failed="$$failed $$pkg.$$target"; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed"; exit 1; fi

## lint: formatting and vet
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

## bench: the hot-path Go benchmarks, then a short run of every koordi-bench
## scenario against koordi-realtime, the raw baseline and the Node reference
## (about four minutes; full sizes and results: cmd/koordi-bench/RESULTS.md)
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2000x $(PKGS)
	cd testdata/bench && npm ci --no-audit --no-fund --loglevel=error
	$(GO) run ./cmd/koordi-bench --koordi-bin $(BIN) short

clean:
	rm -rf bin .koordi testdata/artifacts $(BUNDLE_DST)
