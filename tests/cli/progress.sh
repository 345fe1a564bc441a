#!/usr/bin/env bash
# The progress line appears on a terminal only, and never with --quiet.
source "$(dirname "$0")/lib.sh"

oracle items 40 ms=20 >"$WORK/sleep.jsonl"
cm run --plugin sleep --manifest "$WORK/sleep.jsonl" --threads 2 -o "$WORK/o.jsonl"
if grep -q $'\e\[K' "$WORK/err"; then fail "progress drawn when stderr is not a terminal"; else pass "no progress line off a terminal"; fi

# script(1) gives the run a pseudo-terminal for standard error.
script -qec "'$COREMAP' run --plugin sleep --manifest '$WORK/sleep.jsonl' --threads 2 -o '$WORK/t.jsonl'" "$WORK/typescript" >/dev/null
expect_contains "$WORK/typescript" $'\e[K' "progress line drawn on a terminal"
expect_contains "$WORK/typescript" "%" "progress shows the fraction done"
script -qec "'$COREMAP' run --plugin sleep --manifest '$WORK/sleep.jsonl' --threads 2 -o '$WORK/t.jsonl' --quiet" "$WORK/quiet" >/dev/null
if grep -q $'\e\[K' "$WORK/quiet"; then fail "--quiet still drew progress"; else pass "--quiet draws nothing on a terminal"; fi
finish
