# syntax=docker/dockerfile:1
# One image for every role of the fleet: `shopfleet worker <role>`, `shopfleet edge`, `shopfleet
# migrate`, `shopfleet topology apply`, … (docs/kubernetes.md).
#
#   docker build -t shopfleet:0.1.0 .
#
# Build stage: Swift 6.3 on Debian 12 builds the three release executables with the Swift standard
# library linked statically, so the runtime stage needs only the C libraries they link.
FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends librabbitmq-dev libpq-dev libhiredis-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The manifest first, so the dependencies are resolved in a layer of their own.
COPY Package.swift ./
RUN swift package resolve
COPY Sources Sources
COPY Tests Tests
RUN for product in shopfleet shopfleet-worker shopfleet-worker-ext; do \
      swift build -c release --static-swift-stdlib --product "$product" || exit 1; \
    done \
 && mkdir -p /out \
 && cp .build/release/shopfleet .build/release/shopfleet-worker .build/release/shopfleet-worker-ext /out/

# Runtime stage: Debian 12 with only what the executables link (scripts/image_check.sh proves the
# list: every library `ldd` names comes from one of these packages, and the executables run with
# the library path limited to their files) and CA certificates (the gateway, SMTP over STARTTLS).
FROM debian:12-slim
ARG RUNTIME_PACKAGES="libc6 libgcc-s1 libstdc++6 zlib1g librabbitmq4 libpq5 libhiredis0.14 ca-certificates"
RUN apt-get update \
 && apt-get install -y --no-install-recommends $RUNTIME_PACKAGES \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 shopfleet && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin shopfleet
COPY --from=build /out/ /usr/local/bin/
COPY topology/ /usr/share/shopfleet/topology/
COPY openapi.yaml /usr/share/shopfleet/openapi.yaml
COPY web/ /usr/share/shopfleet/web/
ENV SHOPFLEET_TOPOLOGY_FILE=/usr/share/shopfleet/topology/shopfleet.yaml \
    SHOPFLEET_OPENAPI_FILE=/usr/share/shopfleet/openapi.yaml \
    SHOPFLEET_WEB_ROOT=/usr/share/shopfleet/web \
    SHOPFLEET_BIND_ADDRESS=0.0.0.0 \
    SHOPFLEET_ENV_FILE=/dev/null
# Non-root; nothing at run time needs a shell (the entrypoint is the executable itself).
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["shopfleet"]
CMD ["--help"]
