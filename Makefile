# The two set-up commands: `make demo` and `make test`. Both install what they need.
CARGO ?= cargo

.PHONY: all build deps demo test lint bench fuzz clean

all: build

build:
	$(CARGO) build --release

deps:
	scripts/install-deps.sh

demo:
	scripts/demo.sh

# Tests run against real SoftHSM tokens made in temp dirs and real HTTP on 127.0.0.1.
test: deps lint
	$(CARGO) build --examples
	$(CARGO) test --lib --bins --tests

lint:
	scripts/lint.sh

bench: deps
	scripts/bench.sh

fuzz:
	scripts/fuzz.sh

clean:
	$(CARGO) clean
	rm -rf build
