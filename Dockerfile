FROM python:3.12-slim

# Logs reach `docker logs` as they happen; no .pyc files written into read-only layers.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git holds every ticket's workspace; coding agents run their terminal in tmux.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git tmux \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .

# Workers execute task commands, so nothing runs as root. /data and /data/store (the
# recorder's volume in compose.yml) are created here, owned by that user, because a fresh
# named volume mounted over them inherits this ownership.
RUN useradd --system --create-home --uid 10001 omoi \
    && mkdir -p /data/store \
    && chown -R omoi:omoi /data
USER omoi

# The image default; the default relative .omoi would land in /app, which omoi cannot write.
ENV OMOI_DATA_DIR=/data

CMD ["omoi", "agent", "worker"]
