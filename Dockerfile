# One image with every costpipe binary; docker-compose picks the command per service.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins

FROM debian:bookworm-slim
# curl: docker-compose.yml's health checks ask each service's /healthz or /readyz.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libcurl4 curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/costpipe-aggregator /src/target/release/costpipe-billing \
     /src/target/release/costpipe-loadgen /src/target/release/costpipe-controls \
     /src/target/release/costpipe-ingest-http /src/target/release/costpipe-deadletters \
     /src/target/release/costpipe-reprice /src/target/release/costpipe-gateway-example \
     /src/target/release/costpipe-stub-provider /usr/local/bin/
USER 65534
