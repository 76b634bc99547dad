# Shopfleet: two commands on a fresh Debian 12 machine.
#   make run    start the local servers (RabbitMQ with management, PostgreSQL, Redis), then the
#               whole fleet (`shopfleet dev`): migrations, topology, a demo catalog, the payments
#               sandbox, an SMTP sink and every worker, until Ctrl-C
#   make test   install what is missing, start the test servers, build, run every test, check the
#               Helm chart and the container image's runtime libraries
SHELL := /bin/bash
SWIFT ?= swift

.PHONY: run test build down test-down status bench

run:
	@scripts/servers.sh up dev
	$(SWIFT) build --product shopfleet
	$(SWIFT) build --product shopfleet-worker
	$(SWIFT) build --product shopfleet-worker-ext
	@scripts/servers.sh status dev
	@eval "$$(scripts/servers.sh env dev)" && exec .build/debug/shopfleet dev

build:
	$(SWIFT) build

test:
	@scripts/servers.sh up test
	$(SWIFT) build --build-tests
	@eval "$$(scripts/servers.sh env test)" && $(SWIFT) test --skip-build --no-parallel
	@.shopfleet/tools-venv/bin/python charts/shopfleet/tests/check_chart.py
	@scripts/image_check.sh

# Benchmarks run the release build against the test servers.
bench:
	@scripts/servers.sh up test
	$(SWIFT) build -c release --product shopfleet
	$(SWIFT) build -c release --product shopfleet-worker
	$(SWIFT) build -c release --product shopfleet-worker-ext
	@eval "$$(scripts/servers.sh env test)" && .build/release/shopfleet bench clients
	@eval "$$(scripts/servers.sh env test)" && .build/release/shopfleet bench worker

status:
	@scripts/servers.sh status dev

down:
	@scripts/servers.sh down dev

test-down:
	@scripts/servers.sh down test
