#!/usr/bin/env bash
# Creates a throw-away SoftHSM token in DIR with its own SOFTHSM2_CONF (never the system token
# directory) and prints the environment to use it, for `eval`.
#   eval "$(scripts/softhsm-env.sh DIR [LABEL] [PIN])"
set -euo pipefail
dir=${1:?usage: softhsm-env.sh DIR [LABEL] [PIN]}
label=${2:-p11jwt-demo}
pin=${3:-1234}

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
export SOFTHSM2_CONF="$dir/softhsm2.conf"
# softhsm2-util pads labels with spaces: compare them trimmed, so that a second run (a new
# shell, the next CI job) finds the token instead of making another with the same label.
has_token() {
  softhsm2-util --show-slots 2>/dev/null | awk -v want="$label" '
    /^ *Label:/ { sub(/^ *Label: */, ""); sub(/ *$/, ""); if ($0 == want) found = 1 }
    END { exit !found }'
}
if ! has_token; then
  softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$pin$pin" >/dev/null
fi
echo "export SOFTHSM2_CONF='$dir/softhsm2.conf'"
echo "export P11JWT_TOKEN='$label'"
