# lxd-gateway container image (draft): Debian's Python, a virtual environment, a non-root user.
# Run with the host's LXD socket mounted:
#   docker run --network host -v /var/lib/lxd/unix.socket:/var/lib/lxd/unix.socket --group-add <socket gid> lxd-gateway
FROM debian:bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY extra-ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python3 -m venv /opt/lxd-gateway && /opt/lxd-gateway/bin/pip install --no-cache-dir .

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/lxd-gateway --create-home lxdgw
COPY --from=build /opt/lxd-gateway /opt/lxd-gateway
USER lxdgw
ENV LXDGW_BIND=0.0.0.0:8080 LXDGW_DATA_DIR=/var/lib/lxd-gateway
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/livez || exit 1
ENTRYPOINT ["/opt/lxd-gateway/bin/python", "-m", "app"]
