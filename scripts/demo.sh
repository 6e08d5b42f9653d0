#!/usr/bin/env bash
# The main job on an embedded default: a throw-away SoftHSM token under build/demo, a key
# generated inside it, a local stand-in for a Qlik Cloud tenant on 127.0.0.1 with that key's
# JWK registered, an access token minted with `p11jwt token`, and /api/v1/users/me called with
# `p11jwt get`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "demo: building the release binaries (a few minutes on a fresh machine)" >&2
cargo build --quiet --release --bin p11jwt --example standin
bin=target/release/p11jwt
standin=target/release/examples/standin

demo=build/demo
rm -rf "$demo"
mkdir -p "$demo"
eval "$(scripts/softhsm-env.sh "$demo/softhsm" p11jwt-demo 1234)"

# The PIN comes from a file only the user can read, as on a hardened host.
umask 077
printf '1234\n' > "$demo/pin"
export P11JWT_PIN_FILE="$demo/pin"
export P11JWT_KEY=demo-signer
export P11JWT_CLIENT_ID=demo-client
# The access token cache stays with the demo, not in the user's own cache directory.
export XDG_CACHE_HOME="$PWD/$demo/cache"  # absolute: a relative one is ignored

step() { printf '\n== %s\n' "$*" >&2; }

step "1. generate an RSA key pair inside the token (non-extractable)"
"$bin" keygen --bits 2048 > "$demo/jwk.json"
cat "$demo/jwk.json" >&2

step "2. register its public JWK with the (stand-in) OAuth client"
"$bin" jwk --jwks > "$demo/jwks.json"
"$standin" --client-id "$P11JWT_CLIENT_ID" --jwks "$demo/jwks.json" \
  --port-file "$demo/url" >/dev/null 2>"$demo/standin.log" &
standin_pid=$!
trap 'kill "$standin_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$demo/url" ] && break; sleep 0.05; done
url=$(cat "$demo/url")
echo "stand-in tenant at $url" >&2
export P11JWT_TOKEN_ENDPOINT="$url/oauth/token"

step "3. mint an assertion and exchange it for an access token"
access_token=$("$bin" -v token --scope user_default)
echo "access token: ${access_token:0:8}... (${#access_token} characters)" >&2

step "4. call GET /api/v1/users/me with the cached access token (the token is not opened)"
"$bin" -v get "$url/api/v1/users/me" --scope user_default
echo
