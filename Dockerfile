# drug_nbdev's images: `--target api` (the REST API, the default) and `--target form` (the Voila form).
# Built here daemonless by deploy/image.sh (`make image`); elsewhere `docker build --target api -t drug-nbdev-api .`
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv module; deploy/image.sh passes a local
# debootstrap'd bookworm where no registry can be reached.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a venv with the serving requirements (no TensorFlow) and the [azure] extra, and a trained model ----
FROM ${BASE_IMAGE} AS build
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PIP_DEFAULT_TIMEOUT=180
WORKDIR /src
RUN python3 -m venv /opt/venv
# dependencies first: this layer is reused until settings.ini changes
COPY settings.ini deploy/requirements.py ./
RUN python3 requirements.py settings.ini > requirements.txt \
 && /opt/venv/bin/pip install --no-compile -r requirements.txt
COPY setup.py pyproject.toml README.md ./
COPY drug_nbdev ./drug_nbdev
RUN /opt/venv/bin/pip install --no-compile --no-deps . \
 && /opt/venv/bin/python -c "import drug_nbdev.api, sys; assert 'tensorflow' not in sys.modules"
# the model the image serves until a mounted registry or DRUG_NBDEV_MODELS says otherwise
COPY data/drug200.csv ./data/
COPY deploy/train_image_model.py ./
RUN DRUG_NBDEV_HOME=/app MPLCONFIGDIR=/tmp/mpl /opt/venv/bin/python train_image_model.py data/drug200.csv \
 && mkdir -p /app/reports && cp data/drug200.csv /app/data/   # for `drug-nbdev ingest` into an outside database

# ---- runtime: the venv, the project folder (model, database of drug200) and nothing else; not root ----
FROM ${BASE_IMAGE} AS runtime
RUN groupadd --system --gid 10001 drug \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home drug
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /app /app
ENV PATH=/opt/venv/bin:$PATH DRUG_NBDEV_HOME=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib HOME=/app
WORKDIR /app
USER 10001

# ---- the clinicians' form: Voila on 8866, one kernel per session ----
FROM runtime AS form
COPY --chown=10001:10001 voila.json nbs/15_form.ipynb /app/form/
WORKDIR /app/form
EXPOSE 8866
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8866/voila/static/voila.js', timeout=4)"]
CMD ["drug-nbdev", "form", "15_form.ipynb", "--host", "0.0.0.0", "--port", "8866"]

# ---- the REST API on 8000 (last, so a plain `docker build .` gives it) ----
FROM runtime AS api
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["drug-nbdev", "serve", "--host", "0.0.0.0", "--port", "8000"]
