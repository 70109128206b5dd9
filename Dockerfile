# coopbot with the tools it drives: the docker CLI (`docker stack deploy`), git (recipes),
# restic (backups) and ssh (ssh:// servers), all from Debian bookworm.
#
# The tests build this same file offline: tests/harness/image.py makes a stand-in for
# the base image below from Debian's packages (mmdebstrap) and imports it under this
# exact name, so elsewhere the real one is pulled.
FROM python:3.11-slim-bookworm

# Only the docker CLI of Debian's docker.io: the bot talks to the host's daemon through
# the mounted socket (or ssh://), so dockerd, containerd, runc and iptables would be
# ~100 MB of dead weight. The client is a Go binary that needs nothing but libc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git restic ca-certificates openssh-client \
 && cd /tmp && apt-get download docker.io \
 && dpkg-deb --fsys-tarfile docker.io_*.deb | tar -x -C / ./usr/bin/docker \
 && rm -f docker.io_*.deb \
 && docker --version && docker stack --help >/dev/null \
 && rm -rf /var/lib/apt/lists/*

# Recipes are git checkouts made by the host's admin (abra), mounted at /abra; git
# refuses repos owned by another uid ("dubious ownership") unless told they are safe.
# git 2.39 has no per-folder wildcard (that came with 2.46), and this container exists
# to work on exactly those checkouts, so all of them are declared safe.
RUN git config --system --add safe.directory '*'

WORKDIR /opt/coopbot
COPY pyproject.toml README.md LICENSE ./
COPY bot bot
COPY commands commands
RUN pip install --no-cache-dir . && rm -rf /root/.cache /opt/coopbot/build

# Non-root by default: `docker run` gives the socket's group (`--group-add <gid>`)
# visibly, since access to the docker socket is root-equivalent anyway. The recipe
# (recipe/compose.yml) runs it as root instead: it reads and restores the apps' volumes,
# whose files belong to the apps' own users, and writes the host admin's abra folder.
RUN useradd --system --uid 10001 --home-dir /data --no-create-home coopbot \
 && mkdir -p /data /abra && chown coopbot /data
USER coopbot
VOLUME ["/data"]
ENV COOPBOT_CONFIG=/data/config.yaml \
    COOPBOT_HEALTH_URL=http://127.0.0.1:9100/healthz \
    PYTHONUNBUFFERED=1
EXPOSE 9100

# /healthz answers 200 only while the bot syncs with its homeserver (config `web.listen`
# must serve it; change COOPBOT_HEALTH_URL with it). The image has no curl: python asks.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['COOPBOT_HEALTH_URL'], timeout=8)"]

ENTRYPOINT ["coopbot"]
CMD ["run"]
