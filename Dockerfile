# syntax=docker/dockerfile:1
# Build: the official Swift 6 image plus the -dev packages of the C libraries we link.
FROM swift:6.1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-libmysqlclient-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
COPY Schema ./Schema
COPY Benchmarks ./Benchmarks
COPY openapi.yaml ./
RUN swift build -c release --product stovepipe --static-swift-stdlib \
    && install -D "$(swift build -c release --show-bin-path)/stovepipe" /out/stovepipe

# Run: slim Debian with only the runtime libraries, as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 libssl3 git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/stovepipe --create-home stovepipe
COPY --from=build /out/stovepipe /usr/local/bin/stovepipe
USER 10001:10001
WORKDIR /var/lib/stovepipe
ENV STOVEPIPE_LOG_FORMAT=json
EXPOSE 8080
# With TLS on (STOVEPIPE_TLS_CERT/STOVEPIPE_TLS_KEY) override this check with --url https://127.0.0.1:8080/healthz --insecure
# (a certificate for the public name cannot match 127.0.0.1, and http:// to a TLS port gets a 400); see the README.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/stovepipe", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/stovepipe"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
