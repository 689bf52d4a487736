# onionbalance in a container: a multi-stage build (Rust toolchain only in the first stage),
# run as an unprivileged user, with the configuration and the state as volumes.
#
#   docker build -t onionbalance .
#   docker run -d --name onionbalance \
#       -v /srv/onionbalance/etc:/etc/onionbalance:ro \
#       -v onionbalance-state:/var/lib/onionbalance \
#       onionbalance
#
# /etc/onionbalance holds config.yaml and the frontend key(s) (readable by uid 10001, the
# key files 0600); /var/lib/onionbalance keeps the revision counters and Arti's state and
# cache across restarts. Logs go to stderr (`docker logs`); add `--log-format json` to the
# command for a log shipper. SIGTERM stops the daemon within seconds.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && install -D -m 0755 target/release/onionbalance target/release/onionbalance-config \
        -t /out/usr/local/bin

FROM debian:bookworm-slim
# libssl3 (Arti's TLS, native-tls) and libsqlite3-0 (Arti's directory cache): what the
# binary links against (the Debian package's computed Depends). No system tor.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 libsqlite3-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --uid 10001 --home-dir /var/lib/onionbalance \
        --no-create-home --shell /usr/sbin/nologin onionbalance \
 && install -d -m 0750 -o onionbalance -g onionbalance /etc/onionbalance \
 && install -d -m 0700 -o onionbalance -g onionbalance /var/lib/onionbalance
COPY --from=build /out/ /
USER onionbalance:onionbalance
VOLUME ["/etc/onionbalance", "/var/lib/onionbalance"]
ENTRYPOINT ["onionbalance"]
CMD ["run", "-c", "/etc/onionbalance/config.yaml", "--data-dir", "/var/lib/onionbalance"]
