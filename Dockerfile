# Root filesystem of the managed plugin (see plugin/config.json and the README's
# "Managed plugin" section; nothing builds it automatically yet).
FROM python:3.11-slim-bookworm
# iptables: the FORWARD shim past Docker's DROP policy; nftables: pynet's own rules.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pynet ./pynet
COPY driver ./driver
COPY ipam_driver ./ipam_driver
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
ENTRYPOINT ["pynet", "serve"]
