#!/usr/bin/env bash
# coremap against the tools people already use to run a job over many files, on files already on
# every Debian machine: the first FILES (default 3000) non-empty files under /usr/share/doc and
# /usr/share/common-licenses that are not .gz, in sorted order, copied into a scratch directory.
#   SHA-256 of every file: coremap sha256; xargs sha256sum (serial); xargs -P$(nproc) -n 64
#     sha256sum; GNU parallel, one sha256sum per file and with -X (as many files per sha256sum
#     as fit); Python multiprocessing.Pool.map with hashlib.
#   Word counts: coremap wordcount; LC_ALL=C wc through xargs -P$(nproc) -n 64; Pool.map.
#   No-op overhead per item: 1,000,000 one-line items through coremap echo and through
#     Pool.map of the identity (default chunksize and CHUNK); 2,000 `true` jobs through GNU
#     parallel and through xargs -P -n 1 (a process per item, for scale).
# Every tool's digests and counts are checked to agree, file by file, before any time is taken;
# then the tools of each job run in turn, ROUNDS rounds (default 5), and the script prints
# medians and ratios to coremap.
# Needs GNU parallel (Debian package `parallel`, in scripts/install-deps.sh; installed here when
# missing and run as root) and python3.
# Usage: bench/compare/peers.sh [build/bin/coremap] [ROUNDS]   (env: FILES=3000 CHUNK=10000)
default_rounds=5
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
export LC_ALL=C
# GNU parallel is installed when missing (as root, from Debian's archive), else asked for.
if ! command -v parallel >/dev/null && [ "$(id -u)" -eq 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends parallel >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends parallel >&2; }
fi
command -v parallel >/dev/null || { echo "GNU parallel not found: apt-get install parallel (as root)" >&2; exit 2; }
files=${FILES:-3000}
chunk=${CHUNK:-10000}
threads=$(nproc)
peers=("python3" "$here/peers.py")
load_start=$(load)

# The data set, copied so that its paths (and their order) are the same wherever it is run.
find /usr/share/doc /usr/share/common-licenses -type f -size +0 ! -name '*.gz' -print0 2>/dev/null >"$work/all.list0" || true
sort -z -o "$work/all.list0" "$work/all.list0"
head -z -n "$files" "$work/all.list0" >"$work/source.list0"
mkdir "$work/data"
tar -C / --null -T <(sed -z 's|^/||' "$work/source.list0") -cf - | tar -C "$work/data" -xf -
find "$work/data" -type f | sort >"$work/files.txt"
tr '\n' '\0' <"$work/files.txt" >"$work/files.list0"
n=$(wc -l <"$work/files.txt")
bytes=$(xargs -0 cat <"$work/files.list0" | wc -c)

sha_coremap() { "$coremap" run --plugin sha256 --manifest "$work/files.txt" --quiet; }
sha_serial() { xargs -0 sha256sum <"$work/files.list0"; }
sha_xargs() { xargs -0 -P "$threads" -n 64 sha256sum <"$work/files.list0"; }
sha_parallel() { parallel -0 -j "$threads" sha256sum <"$work/files.list0"; }
sha_parallel_x() { parallel -0 -X -j "$threads" sha256sum <"$work/files.list0"; }
sha_pool() { "${peers[@]}" sha256 "$work/files.txt" "$threads"; }
wc_coremap() { "$coremap" run --plugin wordcount --manifest "$work/files.txt" --quiet; }
wc_xargs() { xargs -0 -P "$threads" -n 64 wc -l -w -c <"$work/files.list0"; }
wc_pool() { "${peers[@]}" wordcount "$work/files.txt" "$threads"; }
noop_coremap() { "$coremap" run --plugin echo --manifest "$work/noop.jsonl" --quiet; }
noop_pool() { "${peers[@]}" echo "$work/noop.jsonl" "$threads"; }
noop_pool_chunk() { "${peers[@]}" echo "$work/noop.jsonl" "$threads" "$chunk"; }
noop_parallel() { seq 2000 | parallel -j "$threads" true; }
noop_xargs() { seq 2000 | xargs -P "$threads" -n 1 true; }
seq 0 999999 | sed 's/.*/{"i":&}/' >"$work/noop.jsonl"

# agree REFERENCE NAME...: each NAME's output, sorted, must equal REFERENCE's; wc's "total"
# lines (one per wc process) are dropped and its columns put in the layout peers.py prints.
agree() {
  local ref=$1 name
  shift
  for name in "$ref" "$@"; do
    [ "$name" = "$ref" ] && [ -e "$work/$ref.out" ] && continue
    "$name" | case $name in
      sha_coremap) "${peers[@]}" records "$work/files.txt" sha256 ;;
      wc_coremap) "${peers[@]}" records "$work/files.txt" wordcount ;;
      wc_xargs) awk '{l = $1; w = $2; c = $3; sub(/^ *[0-9]+ +[0-9]+ +[0-9]+ /, ""); if ($0 != "total") print l, w, c, $0}' ;;
      *) cat ;;
    esac | sort >"$work/$name.out"
    [ "$(wc -l <"$work/$name.out")" -eq "$n" ] || { echo "$name: $(wc -l <"$work/$name.out") results for $n files; no figures" >&2; exit 1; }
    cmp -s "$work/$ref.out" "$work/$name.out" ||
      { echo "$name disagrees with $ref; no figures" >&2; diff "$work/$ref.out" "$work/$name.out" | head >&2; exit 1; }
  done
}
# This pass also puts every file in the page cache for all tools.
sha_tools=(sha_coremap sha_serial sha_xargs sha_parallel sha_parallel_x sha_pool)
wc_tools=(wc_coremap wc_xargs wc_pool)
agree sha_serial "${sha_tools[@]}"
agree wc_xargs "${wc_tools[@]}"
# coremap's records, {"index":N,"ok":true,"result":ITEM}, must hold every item, in order.
if ! noop_coremap | sed 's/^{"index":[0-9]*,"ok":true,"result":\(.*\)}$/\1/' | cmp -s - "$work/noop.jsonl" ||
  ! noop_pool | cmp -s - "$work/noop.jsonl"; then
  echo "a no-op run changed its items; no figures" >&2
  exit 1
fi

declare -A med
noop_tools=(noop_coremap noop_pool noop_pool_chunk noop_parallel noop_xargs)
alternate "${sha_tools[@]}" "${wc_tools[@]}" "${noop_tools[@]}"

declare -A label=(
  [sha_coremap]="coremap run --plugin sha256 ($threads thr)"
  [sha_serial]="xargs sha256sum (serial)"
  [sha_xargs]="xargs -P$threads -n 64 sha256sum"
  [sha_parallel]="parallel -j$threads sha256sum (one per file)"
  [sha_parallel_x]="parallel -X -j$threads sha256sum"
  [sha_pool]="Python Pool($threads).map, hashlib"
  [wc_coremap]="coremap run --plugin wordcount ($threads thr)"
  [wc_xargs]="xargs -P$threads -n 64 wc -l -w -c"
  [wc_pool]="Python Pool($threads).map, bytes.split"
  [noop_coremap]="coremap run --plugin echo"
  [noop_pool]="Python Pool($threads).map, default chunksize"
  [noop_pool_chunk]="Python Pool($threads).map, chunksize $chunk"
  [noop_parallel]="parallel -j$threads true"
  [noop_xargs]="xargs -P$threads -n 1 true"
)
table() {
  local base=${med[$1]} t
  printf '%-46s %10s %12s\n' "tool" "median s" "vs coremap"
  for t in "$@"; do printf '%-46s %10.3f %12.2f\n' "${label[$t]}" "${med[$t]}" "$(calc "${med[$t]} / $base")"; done
}
machine
echo "python: $(python3 --version 2>&1 | cut -d' ' -f2), GNU parallel $(parallel --version | head -n 1 | awk '{print $3}'), $(sha256sum --version | head -n 1)"
echo "load average (1, 5, 15 min) at start and end: $load_start; $(load) (other processes share the cores)"
echo "data: $n files, $bytes bytes; $rounds rounds, alternating; digests and counts agree across all tools"
echo
echo "SHA-256 of every file"
table "${sha_tools[@]}"
echo
echo "word counts of every file"
table "${wc_tools[@]}"
echo
echo "no-op overhead per item: 1,000,000 items {\"i\":N} (coremap reads, parses, echoes and writes each as a record; Pool.map pickles each line to a worker and back), 2,000 jobs for the process-per-item tools"
printf '%-46s %10s %12s %12s\n' "tool" "median s" "us per item" "vs coremap"
per_item() { case $1 in noop_parallel | noop_xargs) calc "${med[$1]} * 1e6 / 2000" ;; *) calc "${med[$1]} * 1e6 / 1000000" ;; esac; }
base=$(per_item noop_coremap)
for t in "${noop_tools[@]}"; do
  printf '%-46s %10.3f %12.3f %12.1f\n' "${label[$t]}" "${med[$t]}" "$(per_item "$t")" "$(calc "$(per_item "$t") / $base")"
done
