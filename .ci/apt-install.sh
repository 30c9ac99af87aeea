#!/usr/bin/env bash
# Installs Debian packages quietly, without recommends, and without starting their services: a
# policy-rc.d keeps the packages' init scripts from starting a server (tests start what they need
# themselves, on loopback). Used by the install-*.sh scripts of the peers that are servers.
# Usage: .ci/apt-install.sh PACKAGE...
set -euo pipefail
apt-get update -qq >/dev/null
made_policy=false
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  made_policy=true
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi
