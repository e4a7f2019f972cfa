#!/usr/bin/env bash
# Installs and starts what the card tests need: pcscd, the vsmartcard virtual reader (vpcd) on loopback,
# pyscard (built from source: swig, libpcsclite-dev, gcc), xmlsec1 and xmllint for independent checks.
# Idempotent; runs as root on a fresh Debian bookworm with no stdin. Call it from .ci/run before `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pcscd vsmartcard-vpcd swig libpcsclite-dev gcc xmlsec1 libxml2-utils iptables)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

make .venv/.installed </dev/null
.venv/bin/pip install --quiet -e '.[dev,card]' </dev/null

# vpcd listens on every interface (its DEVICENAME /dev/null:port server mode; the host:port client mode
# crashed pcscd 1.9.9 whenever no card answered). The virtual card dials 127.0.0.1, so anything arriving on
# another interface is dropped.
if ! grep -q '^DEVICENAME */dev/null:0x8C7B' /etc/reader.conf.d/vpcd; then
    sed -i 's|^DEVICENAME.*|DEVICENAME   /dev/null:0x8C7B|' /etc/reader.conf.d/vpcd
    # A running pcscd keeps the reader configuration it started with: restart the one this script started.
    if [ -f var/pcscd.pid ] && kill "$(cat var/pcscd.pid)" 2>/dev/null; then
        sleep 0.5
    fi
fi
rule=(INPUT -p tcp --dport 35963:35964 ! -i lo -j DROP)
iptables -C "${rule[@]}" 2>/dev/null || iptables -A "${rule[@]}"

# Not --auto-exit: it quits while a card is inserted. Not systemd: CI machines may not run it.
if ! pgrep -x pcscd >/dev/null; then
    mkdir -p var
    nohup pcscd --foreground >var/pcscd.log 2>&1 </dev/null &
    echo $! >var/pcscd.pid
fi
for _ in $(seq 50); do
    [ -S /run/pcscd/pcscd.comm ] && break
    sleep 0.1
done
[ -S /run/pcscd/pcscd.comm ] || { echo "pcscd did not start; see var/pcscd.log" >&2; exit 1; }
echo "pcscd running, vpcd slots on 35963-35964 (loopback only), pyscard $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("pyscard"))')"
