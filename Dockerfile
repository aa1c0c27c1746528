# mcpd's container image (docs/deploy.md): `docker build -t mcpd .`
#
# Two stages: the build stage compiles mcpd from this checkout with the locked
# dependencies; the image is distroless (glibc, CA certificates, no shell, no package
# manager), runs as a non-root user, writes nothing outside its mounted volumes (a
# read-only root file system works), and serves MCP over Streamable HTTP on port 8080.
# Mount the config directory (mcpd.yaml, policies.yaml, tools.d/) at /etc/mcpd.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The build context has no .git, so `mcpd --version` names the commit "unknown".
RUN cargo build --release --locked --bin mcpd \
 && install -D -m 0755 target/release/mcpd /out/mcpd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mcpd /usr/local/bin/mcpd
ENV MCPD_CONFIG=/etc/mcpd
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/mcpd"]
CMD ["serve", "--http", "0.0.0.0:8080"]
