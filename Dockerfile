# coopbot with the tools it drives: the docker CLI (for `docker stack deploy`),
# git (recipes) and restic (backups), all from Debian bookworm.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends docker.io git restic ca-certificates openssh-client \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/coopbot
COPY pyproject.toml README.md ./
COPY bot bot
COPY commands commands
RUN pip install --no-cache-dir . && rm -rf /root/.cache

# Not root inside the image. Access to the docker socket is root-equivalent
# anyway, so it is granted at run time (`--group-add <socket gid>`), visibly.
RUN useradd --system --uid 10001 --home-dir /data --no-create-home coopbot \
 && mkdir -p /data && chown coopbot /data
USER coopbot
VOLUME ["/data"]
ENV COOPBOT_CONFIG=/data/config.yaml
EXPOSE 9100
ENTRYPOINT ["coopbot"]
CMD ["run"]
