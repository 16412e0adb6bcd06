# koordi-realtime — see README.md.
GO        ?= go
BIN       := bin/koordi-realtime
PKGS      := ./...
NPM_DIR   := testdata

.PHONY: run test lint bench build clean node-deps demo-writes

## run: local PostgreSQL cluster under ./.koordi, demo data, gateway on :3000
run: build
	./$(BIN) dev

build:
	$(GO) build -o $(BIN) ./cmd/koordi-realtime

## node-deps: the JavaScript clients the tests drive (socket.io-client, …)
node-deps: $(NPM_DIR)/node_modules/.package-lock.json
$(NPM_DIR)/node_modules/.package-lock.json: $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json
	cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error

## test: every test, race detector on, real PostgreSQL and real clients
test: node-deps
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 12m $(PKGS)

## lint: formatting and vet
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

## bench: the short benchmark run (Go benchmarks of the hot paths)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2000x $(PKGS)

clean:
	rm -rf bin .koordi
