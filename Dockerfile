# lxd-gateway container image: Debian's Python in a virtual environment, run as a non-root user that belongs to
# the group owning the LXD socket (build arg LXD_GID, `stat -c %g /var/lib/lxd/unix.socket` on the host).
#   docker build --build-arg LXD_GID=$(stat -c %g /var/lib/lxd/unix.socket) -t lxd-gateway .
#   docker run --network host -v /var/lib/lxd/unix.socket:/var/lib/lxd/unix.socket lxd-gateway
# Extra CA certificates (*.crt in extra-ca/) are trusted during the build, for builds behind a TLS-inspecting proxy.
FROM debian:bookworm-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY extra-ca/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python3 -m venv /opt/lxd-gateway && /opt/lxd-gateway/bin/pip install .

FROM debian:bookworm-slim
ARG LXD_GID=997
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && (getent group "${LXD_GID}" || groupadd --system --gid "${LXD_GID}" lxd) \
    && useradd --system --uid 10001 --gid "${LXD_GID}" --home-dir /var/lib/lxd-gateway --create-home lxdgw
COPY --from=build /opt/lxd-gateway /opt/lxd-gateway
USER 10001
WORKDIR /var/lib/lxd-gateway
ENV LXDGW_BIND=0.0.0.0:8080 LXDGW_DATA_DIR=/var/lib/lxd-gateway LXD_SOCKET=/var/lib/lxd/unix.socket
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD ["curl", "-fsS", "http://127.0.0.1:8080/livez"]
ENTRYPOINT ["/opt/lxd-gateway/bin/python", "-m", "app"]
CMD ["serve"]
