#!/usr/bin/env bash
# make bench: the tables of docs/benchmarks.md, measured in one run so that the ratios are
# comparable (absolute times on shared machines move from run to run).
#   RUNS=30 (hyperfine runs per command), INPROC_SECONDS=2, CONC_EACH=10
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}
INPROC_SECONDS=${INPROC_SECONDS:-2}
CONC_EACH=${CONC_EACH:-10}

command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

cargo build --quiet --release --bin p11jwt --example floor --example inprocess \
  --example standin --example trivial
bin=$PWD/target/release/p11jwt
ex=$PWD/target/release/examples

out=build/bench
rm -rf "$out"
mkdir -p "$out"
eval "$(scripts/softhsm-env.sh "$out/softhsm" bench 1234)"
export P11JWT_PIN=1234 P11JWT_CLIENT_ID=bench-client
module=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
  /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so; do
  [ -z "$module" ] && [ -e "$m" ] && module=$m
done
export P11JWT_MODULE=$module

keys=(rsa2048:RS256:2048:rsa rsa4096:RS256:4096:rsa p256:ES256:0:ec p384:ES384:0:ec)
for spec in "${keys[@]}"; do
  IFS=: read -r label alg bits _ <<<"$spec"
  if [ "$bits" != 0 ]; then
    "$bin" keygen --key "$label" --alg "$alg" --bits "$bits" >/dev/null 2>&1
  else
    "$bin" keygen --key "$label" --alg "$alg" >/dev/null 2>&1
  fi
done

report=$out/results.md
: > "$report"
say() { printf '%s\n' "$*" | tee -a "$report"; }

median_ms() { # hyperfine json, command index -> "median min max" in ms
  python3 - "$1" "$2" <<'PY'
import json, sys, statistics
r = json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]
t = [x * 1000 for x in r["times"]]
print(f"{statistics.median(t):.2f} {min(t):.2f} {max(t):.2f}")
PY
}

peak_kb() { # command... -> median peak RSS in KiB over 10 runs
  local samples=()
  for _ in $(seq 10); do
    samples+=("$(/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1)")
  done
  printf '%s\n' "${samples[@]}" | sort -n | sed -n 5p
}

say "## 1-2. Cold process: floor vs p11jwt assert"
say ""
say "Median, min and max of $RUNS runs each (hyperfine, 3 warm-up runs); peak RSS is the"
say "median of 10 runs of /usr/bin/time -f %M."
say ""
say "| key | floor ms (min-max) | p11jwt assert ms (min-max) | ratio | floor KiB | assert KiB | ratio |"
say "| --- | --- | --- | --- | --- | --- | --- |"
for spec in "${keys[@]}"; do
  IFS=: read -r label alg bits kind <<<"$spec"
  floor=("$ex/floor" "$module" bench "$label" "$kind")
  assert=("$bin" assert --key "$label" --audience https://bench.example/oauth/token)
  hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$out/cold-$label.json" \
    "${floor[*]}" "${assert[*]}" >/dev/null
  read -r fm fmin fmax <<<"$(median_ms "$out/cold-$label.json" 0)"
  read -r am amin amax <<<"$(median_ms "$out/cold-$label.json" 1)"
  fk=$(peak_kb "${floor[@]}")
  ak=$(peak_kb "${assert[@]}")
  say "| $label | $fm ($fmin-$fmax) | $am ($amin-$amax) | $(python3 -c "print(f'{$am/$fm:.2f}')") | $fk | $ak | $(python3 -c "print(f'{$ak/$fk:.2f}')") |"
done

# The stand-in tenant for the token benchmarks.
"$bin" jwk --jwks > "$out/jwks.json"
"$ex/standin" --client-id bench-client --jwks "$out/jwks.json" --port-file "$out/url" \
  --access-token-lifetime 3600 >/dev/null 2>"$out/standin.log" &
standin=$!
trap 'kill $standin 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$out/url" ] && break; sleep 0.05; done
export P11JWT_TOKEN_ENDPOINT="$(cat "$out/url")/oauth/token"
export XDG_CACHE_HOME=$PWD/$out/cache

say ""
say "## 2-3. p11jwt token against the local stand-in; cache hit"
say ""
no_cache=""
"$bin" token --help | grep -q -- '--no-cache' && no_cache="--no-cache"
cold=("$bin" token --key rsa2048 $no_cache)
hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$out/token.json" \
  "${cold[*]}" "$ex/trivial" >/dev/null
read -r tm tmin tmax <<<"$(median_ms "$out/token.json" 0)"
read -r zm zmin zmax <<<"$(median_ms "$out/token.json" 1)"
say "| command | median ms (min-max) | peak KiB |"
say "| --- | --- | --- |"
say "| p11jwt token (RSA-2048, no cache) | $tm ($tmin-$tmax) | $(peak_kb "${cold[@]}") |"
say "| trivial Rust binary | $zm ($zmin-$zmax) | $(peak_kb "$ex/trivial") |"
if [ -n "$no_cache" ]; then
  "$bin" token --key rsa2048 >/dev/null
  # The module path points nowhere: a cache hit must not need it.
  hit=("$bin" token --key rsa2048 --module /nonexistent/module.so)
  "${hit[@]}" >/dev/null
  hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$out/hit.json" \
    "${hit[*]}" >/dev/null
  read -r hm hmin hmax <<<"$(median_ms "$out/hit.json" 0)"
  say "| p11jwt token, cache hit (module path points nowhere) | $hm ($hmin-$hmax) | $(peak_kb "${hit[@]}") |"
  say ""
  say "Cache hit / trivial binary: $(python3 -c "print(f'{$hm/$zm:.2f}')")x"
else
  say ""
  say "(this build has no access-token cache: cache-hit row skipped)"
fi

say ""
say "## 4. In-process: one logged-in session, one key, ${INPROC_SECONDS} s per figure"
say ""
say "| key | alg | mechanism | raw C_Sign/s | assertions/s, every signature checked | ratio | assertions/s, default checks (EC: first only) | ratio |"
say "| --- | --- | --- | --- | --- | --- | --- | --- |"
for spec in "${keys[@]}"; do
  IFS=: read -r label _ _ _ <<<"$spec"
  line=$(P11JWT_TOKEN=bench "$ex/inprocess" "$label" "$INPROC_SECONDS")
  python3 - "$line" <<'PY' | tee -a "$report"
import json, sys
r = json.loads(sys.argv[1])
raw, a, o = r["raw_sign_per_s"], r["assertions_per_s"], r["assertions_per_s_checked_once"]
print(f"| {r['key']} | {r['alg']} | {r['mechanism']} | {raw:.0f} | {a:.0f} | {a/raw:.2f} | {o:.0f} | {o/raw:.2f} |")
PY
done

say ""
say "## 5. Concurrent processes on one token (RSA-2048, $CONC_EACH assertions per process)"
say ""
say "| processes | assertions | failed | distinct jti | valid signatures | wall s | assertions/s |"
say "| --- | --- | --- | --- | --- | --- | --- |"
"$bin" jwk --key rsa2048 > "$out/rsa2048.jwk"
for n in 1 2 8 32; do
  dir=$out/conc-$n
  mkdir -p "$dir"
  start=$(date +%s.%N)
  pids=()
  for p in $(seq "$n"); do
    (
      for i in $(seq "$CONC_EACH"); do
        if "$bin" -v assert --key rsa2048 --audience https://bench.example/oauth/token \
          > "$dir/$p-$i.jws" 2> "$dir/$p-$i.err"; then :; else echo fail > "$dir/$p-$i.failed"; fi
      done
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  python3 - "$dir" "$out/rsa2048.jwk" "$n" "$CONC_EACH" "$start" "$end" <<'PY' | tee -a "$report"
import glob, json, os, sys, jwt
d, jwkf, n, each, start, end = sys.argv[1:]
key = jwt.PyJWK.from_dict(json.load(open(jwkf)))
total = int(n) * int(each)
failed = len(glob.glob(os.path.join(d, "*.failed")))
jtis, valid = set(), 0
for f in glob.glob(os.path.join(d, "*.jws")):
    t = open(f).read().strip()
    if not t:
        continue
    try:
        c = jwt.decode(t, key.key, algorithms=["RS256"], audience="https://bench.example/oauth/token")
        valid += 1
        jtis.add(c["jti"])
    except Exception:
        pass
wall = float(end) - float(start)
print(f"| {n} | {total} | {failed} | {len(jtis)} | {valid} | {wall:.2f} | {total / wall:.0f} |")
PY
done
retries=$(cat "$out"/conc-*/*.err 2>/dev/null | grep -c 'failed transiently' || true)
say ""
say "Open-sequence retries logged across all concurrent runs: $retries"
"$bin" keys >/dev/null && say "After the concurrent runs the token still lists its keys (not corrupted)."
echo >&2
echo "bench: results in $report" >&2
