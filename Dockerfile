# The antenna-jobs image: one image, the command picks the role (api, worker, db migrate, ...).
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN mkdir core workflows activities worker api cli bridge antenna_db job_control \
    && for p in core workflows activities worker api cli bridge antenna_db job_control; do touch "$p/__init__.py"; done \
    && pip install . \
    && pip uninstall -y antenna-jobs
COPY core core
COPY storage storage
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY api api
COPY cli cli
COPY bridge bridge
COPY antenna_db antenna_db
COPY job_control job_control
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --no-create-home antenna

USER antenna
# Containers bind all interfaces; the defaults are for a developer's loopback-only machine.
ENV ANTENNA_JOBS_API_HOST=0.0.0.0
EXPOSE 8000 9100
ENTRYPOINT ["antenna-jobs"]
CMD ["api"]
