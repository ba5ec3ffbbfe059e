#!/usr/bin/env bash
# Debian packages the lab, tests, demo and benchmark use. Idempotent; skips the network when all
# are present.
set -euo pipefail
pkgs=(iproute2 iptables nftables conntrack nginx-light dnsmasq-base dnsutils curl tshark tcpdump
      iperf3 apache2-utils procps kmod iputils-ping)
missing=()
for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # nginx-light's package may start a system nginx in the root namespace; the lab runs its own
  # per pod and needs none there.
  if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
    [ -f /run/nginx.pid ] && kill "$(cat /run/nginx.pid)" 2>/dev/null || true
  fi
fi
exit 0
