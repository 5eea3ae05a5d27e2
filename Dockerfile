FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
# payorch runs as an unprivileged user (uid and gid 10001, numeric so that a
# runtime's "run as non-root" check can verify it). It writes only under its working
# directory, /var/lib/payorch: the default SQLite database payorch.db (with its -wal,
# -shm and lock files beside it) and the key sealing its stored secrets
# (payorch.db.secrets-key, made at the first start), a demo key file, a retrospective
# directory given as a relative path; keys/ takes a volume holding a key file
# (docker-compose.yml). Mount a volume there to keep them; a bind mount must be
# writable by uid 10001. The installed code in /app and site-packages stays root's, read-only.
RUN groupadd --system --gid 10001 payorch \
 && useradd --system --no-log-init --uid 10001 --gid 10001 \
      --home-dir /var/lib/payorch --shell /usr/sbin/nologin payorch \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/payorch \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/payorch/keys
WORKDIR /var/lib/payorch
# In a container the loopback defaults (127.0.0.1) would be unreachable from outside.
ENV PAYORCH_LISTEN=0.0.0.0:50051 \
    PAYORCH_HTTP_HOST=0.0.0.0 \
    PAYORCH_HTTP_PORT=9464
USER 10001:10001
EXPOSE 50051 9464
CMD ["payorch", "serve"]
