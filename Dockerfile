# streamer daemon image: `streamer serve` on 0.0.0.0:8765 with the embedded Whisper base model
# converted at build time (no download when the container starts).
#
#   docker build -t streamer .                                          CPU (torch's CPU build)
#   docker build --build-arg VARIANT=cuda -t streamer:cuda .            CUDA (--config gpu; run with --gpus all)
#   docker run --rm -p 8765:8765 streamer
#
# Build arguments:
#   BASE_IMAGE   a Debian-based image with Python >= 3.11 (python3 -m venv must work); where Docker Hub
#                is unreachable, scripts/docker-base makes one from Debian packages.
#   VARIANT      cpu | cuda: which torch build, which config profile, and the C compiler Triton needs.
#   TORCH        the torch requirement (default: the version this project is tested with).
#   TORCH_INDEX  extra package index for torch; default: PyTorch's CPU index for cpu, PyPI's own
#                (CUDA) build for cuda; "none" for PyPI (and WHEELS) only.
#   WHEELS       optional pip --find-links location (e.g. a local wheel folder served over HTTP).
#   MODELS       embedded models converted into the image's cache (space-separated).
ARG BASE_IMAGE=python:3.11-slim

# The runtime requirements read out of pyproject.toml in a stage of their own: the install layer
# below is keyed on this list, so editing anything else in pyproject.toml (test extras, tool
# settings) or the code does not reinstall them.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['offline']))" > /requirements.txt

FROM ${BASE_IMAGE}

ARG VARIANT=cpu
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=
ARG WHEELS=
ARG MODELS=base

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/streamer/bin:$PATH \
    STREAMER_CACHE=/var/cache/streamer \
    HF_HOME=/var/cache/streamer/huggingface

# ffmpeg/libsndfile decode uploaded files; PortAudio is imported by the capture module. torch.compile
# (the CUDA profile) builds Triton's launchers with the system C compiler at run time. Debian's
# versions are what the base image's release pins.
# hadolint ignore=DL3008,SC2086
RUN set -eux; \
    case "$VARIANT" in cpu|cuda) ;; *) echo "VARIANT must be cpu or cuda" >&2; exit 1;; esac; \
    extra=; [ "$VARIANT" = cuda ] && extra="gcc libc6-dev"; \
    apt-get update; \
    apt-get install -y --no-install-recommends ffmpeg libsndfile1 libportaudio2 ca-certificates $extra; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --system --uid 10001 --user-group --create-home --home-dir /home/streamer streamer; \
    install -d -o streamer -g streamer /var/cache/streamer /etc/streamer; \
    python3 -m venv /opt/streamer

# torch first and alone: the largest layer, reused until TORCH or VARIANT change (TORCH pins it).
# hadolint ignore=DL3013
RUN set -eux; \
    index="$TORCH_INDEX"; \
    [ -z "$index" ] && [ "$VARIANT" = cpu ] && index=https://download.pytorch.org/whl/cpu; \
    [ "$index" = none ] && index=; \
    pip install ${index:+--extra-index-url "$index"} ${WHEELS:+--find-links "$WHEELS"} "$TORCH"; \
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# The other dependencies and the embedded weights.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN pip install ${WHEELS:+--find-links "$WHEELS"} -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY README.md pyproject.toml /tmp/streamer/
COPY streamer /tmp/streamer/streamer
COPY clients /tmp/streamer/clients
COPY configs /tmp/streamer/configs
COPY samples /tmp/streamer/samples
COPY deploy/docker/healthcheck.py /opt/streamer/healthcheck.py
RUN set -eux; \
    pip install --no-deps /tmp/streamer; \
    rm -rf /tmp/streamer; \
    profile=cpu; [ "$VARIANT" = cuda ] && profile=gpu; \
    cp "$(python -c 'from streamer.resources import config_dir; print(config_dir())')/$profile.toml" \
       /etc/streamer/streamer.toml; \
    streamer --version

# Convert the embedded models as the user that runs the daemon, so the cache is its own.
USER 10001:10001
RUN set -eux; \
    for m in $MODELS; do \
      python -c "import sys; from streamer.engine.models import embedded_folder; print(embedded_folder(sys.argv[1]))" "$m"; \
    done

# The profile's server.host is 127.0.0.1; in a container the daemon must listen on every interface.
ENV STREAMER_SERVER__HOST=0.0.0.0
WORKDIR /home/streamer
VOLUME ["/var/cache/streamer"]
EXPOSE 8765
# Loading the model (and, on CUDA, compiling) can take minutes: the start period covers it.
HEALTHCHECK --interval=15s --timeout=6s --start-period=300s --retries=3 \
    CMD ["python", "/opt/streamer/healthcheck.py"]
# SIGTERM (docker stop) drains: finishing sessions get server.drain_grace seconds (docker stop's
# default 10 s timeout is shorter than drain_grace + drain_notice: use `docker stop -t 30`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamer"]
CMD ["serve", "--config", "/etc/streamer/streamer.toml"]
