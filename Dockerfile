# batchjob-bot: multi-stage, slim, non-root; no secrets baked in (configure via environment).
FROM python:3.11-slim AS build
WORKDIR /src
# A C compiler for the native extensions (batchjob/input/_rowscan.c, _extent.c); the run stage
# gets only the built wheel.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY batchjob ./batchjob
COPY conversation ./conversation
COPY bot ./bot
COPY locales ./locales
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    BOT_MEDIA_DIR=/var/lib/batchjob-bot/media \
    BOT_LISTEN_HOST=0.0.0.0 BOT_LISTEN_PORT=8080
COPY --from=build /wheels /wheels
# The catalogs are compiled once here: the bot's user cannot write the package.
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && python -c "import locales; [locales.t(lang, 'start.unexpected') for lang in locales.LANGUAGES]" \
 && useradd --system --uid 10001 --home /var/lib/batchjob-bot --create-home bot \
 && mkdir -p /var/lib/batchjob-bot/media && chown -R bot /var/lib/batchjob-bot && chmod 700 /var/lib/batchjob-bot/media
USER bot
WORKDIR /var/lib/batchjob-bot
EXPOSE 8080
# In webhook mode the bot serves /healthz (Redis and BatchJob reachable); in polling mode
# nothing listens, so the check only runs when BOT_WEBHOOK_URL is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os,sys,urllib.request; sys.exit(0) if not os.environ.get('BOT_WEBHOOK_URL') else urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BOT_LISTEN_PORT','8080'), timeout=4)"
ENTRYPOINT ["batchjob-bot"]
