#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine, only when missing:
# SoftHSM (the token), OpenSC's pkcs11-tool (to provision keys as operators do), openssl,
# PyJWT (an independent verifier of our signatures) and Authlib (an independent authorization
# server).
set -euo pipefail

need_apt=()
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need_apt+=(opensc)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need_apt[*]}; run as root or install them yourself" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import jwt, cryptography' >/dev/null 2>&1; then
  echo "install-deps: pip install pyjwt cryptography" >&2
  python3 -m pip install -q --disable-pip-version-check pyjwt cryptography >&2
fi

# Authlib and Flask: an independently written authorization server for the interoperability
# tests (tests/interop/authlib_server.py).
if ! python3 -c 'import authlib.oauth2.rfc7523, flask, joserfc' >/dev/null 2>&1; then
  echo "install-deps: pip install authlib flask" >&2
  python3 -m pip install -q --disable-pip-version-check 'authlib>=1.9,<2' flask >&2
fi
