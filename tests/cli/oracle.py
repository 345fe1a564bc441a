#!/usr/bin/env python3
"""The CLI tests' shared oracle: Python's own reading of manifests, records and summaries,
independent of coremap.

    python3 "$COREMAP_SOURCE_DIR/tests/cli/oracle.py" COMMAND ARGS...

Generators print what a test feeds coremap; checks exit 0 when the check holds and 1 with
what differs on standard error; queries print values for expect_eq. A record is one JSON
Lines object {"index": N, "ok": ..., "result" | "error": ..., ["sub": M]}.

Commands (--help prints this text):

  items N [--seed S] [KEY=VALUE ...] [--at K:R KEY=VALUE ...]
      N JSON objects, one a line. VALUE is JSON when it parses as JSON, else a string; %i is
      the item's index; %=EXPR is EXPR, Python over i (the index) and r (a random.Random(S),
      S default 1, drawn from in item order), e.g. 'us=%=r.choice([50, 500])' or
      's=%="x" * (i % 7)'. After --at K:R, the pairs apply to the items whose index % K == R;
      after --at K:R<N, to those below N among them.
  repeated TEXT COUNT [TEXT COUNT ...]
      Each TEXT COUNT times, in turn, with no newline added: a deep nesting, a long number,
      a long line.
  splice OUT COUNT EVERY ITEM...
      Writes OUT: the items {"n": 0} ... {"n": COUNT-1}, and after every EVERY-th of them
      (n % EVERY == EVERY - 1) the next ITEM (JSON, taken in turn, again from the first when
      all are used). Prints the indexes the ITEMs got in OUT, one a line.
  text-files DIR COUNT [SEED]
      Writes COUNT text files DIR/t000.txt ... (lines of words from a small vocabulary, some
      non-ASCII, some lines empty or repeated, file sizes from empty to ~40 KB, some without a
      last newline) and prints their paths, one a line. The same SEED gives the same files.
  random-files DIR COUNT [MAX_BYTES [SEED]]
      Writes COUNT files DIR/r0000.bin ... of random bytes, 0 to MAX_BYTES (default 20000)
      long, and prints their paths, one a line.
  random-bytes COUNT [SEED]
      COUNT random bytes on standard output (a garbage file).
  word-files DIR COUNT LINES WORDS VOCABULARY [SEED]
      Writes COUNT files DIR/f000.txt ... of LINES lines each (MIN-MAX, drawn per file) of
      WORDS words each (MIN-MAX, drawn per line) from VOCABULARY words w000, w001, ...,
      skewed to the first ones (the smaller of two draws), so counts differ and tie; every
      line ends in a newline. Prints their paths, one a line.
  values FILE EXPR
      "index<TAB>value" per record of FILE, value = EXPR (Python over the record r);
      "<missing>" when EXPR raises KeyError or TypeError. On a manifest's items (no "index"),
      the index is the line's, from 0.
  value FILE INDEX EXPR
      EXPR over the record r of FILE whose index is INDEX, printed with str() and no newline
      ("<missing>" as for values).
  query FILE EXPR
      EXPR (Python over d, the JSON document in FILE) printed with str().
  edited FILE STATEMENT
      The JSON document in FILE (d) after the Python STATEMENT, on one line, e.g.
      'd["env"] = {"X": "1"}' (a changed config).
  sqlite DB SQL
      Runs SQL on the SQLite database DB with Python's sqlite3 and commits (damaging or
      ageing a cache's entries behind coremap's back).
  canonical FILE
      The JSON document in FILE on one line, keys sorted.
  in-order FILE [N]
      FILE's records carry the indices 0..N-1 (N: any count), each once, in order.
  ascending FILE
      FILE's records carry increasing indices, each once (the records an interrupted
      ordered run kept).
  fails-at FILE K:R [N]
      in-order, and a record is ok exactly when its index % K != R.
  jsonl FILE
      Every line of FILE is one JSON value, strict UTF-8.
  normalised FILE [--drop result.KEY ...]
      FILE's records, one a line, keys sorted, without the given fields.
  texts FILE KEY [--by-index]
      The records' result[KEY] strings concatenated ("error: <error>" lines for failed
      records), in file order, or sorted by index with --by-index.
  xml FILE
      FILE is well-formed XML (an SVG, say).
  doc-block PAGE HEADING [LANGUAGE]
      The first ```sh (or ```LANGUAGE) block after the heading HEADING (e.g. "## Launching")
      of the Markdown PAGE, as written.
  shown-output SHOWN OUT...
      Every non-blank line of SHOWN (output a page shows) is a line of one of the OUT files;
      "..." in a shown line matches any text (timings).
  echo-check MANIFEST OUTPUT [INDEX:TEXT ...]
      OUTPUT is the echo (or fault) plugin's over the JSON Lines MANIFEST: one record per
      non-blank line, in order, ok with the line as json.loads reads it, except each INDEX,
      an error starting "MANIFEST:LINE:" and containing TEXT.
  lines-records LIST
      The records the lines plugin gives for the files named in LIST (one path a line): per
      line of each file, {"index", "sub", "ok", "result": {"path", "line", "text"}}, the last
      line without a newline included, a CR before the newline dropped.
  line-counts LIST OUTPUT
      A fanned-out OUTPUT holds, for item i, subs 0..n-1 where n is the newline count of the
      i-th file of LIST (wc -l).
  top-lines LIST TOP
      topkeys's summary (field "text") over the lines of LIST's files, counted by Python:
      the TOP most frequent, ties by the line's bytes; one line, keys sorted.
  top-field MANIFEST FIELD TOP SUMMARY
      SUMMARY's "topkeys" equals Python's Counter over MANIFEST's items' FIELD: items,
      distinct and the TOP most frequent, ties by key.
  top-sha256 LIST TOP SUMMARY STAGE
      SUMMARY's STAGE (topkeys over sha256sum's output "<hex>  -\n" per file) equals a
      Counter over hashlib's SHA-256 of the files LIST names: items and the TOP most
      frequent, ties by the key's bytes.
  spliced-check OUTPUT GOOD INDEX:TEXT...
      OUTPUT's records carry the indices 0..N-1 in order; the one at each INDEX failed with an
      error starting TEXT; the others, in turn, are ok with GOOD's results (a run over the
      manifest without the spliced items, oracle splice).
  bench-figures JSON SVG LINES SHA256
      bench.sh's run (spin 2000 us items, rows serial, 1, 2, two timed runs each): every
      derived figure of bench --json recomputed from its own timings (median, min, max,
      speedup, efficiency, Karp-Flatt, items/s, overhead, the Amdahl fit), the profile's
      percentiles, the manifest's LINES and SHA256, and the SVG's three polylines.
  bench-isolated JSON SVG ITEMS
      bench.sh's --isolate run (rows serial, 1, 1 iso, 2, 2 iso over ITEMS items, --retries 1,
      unordered): the rows' isolated flags, each isolated row's overhead per item from its
      in-process neighbour, no profile for isolated rows, the settings and the SVG's
      isolated series.
  amdahl-fit JSON CORES
      The Amdahl fit of bench --json over the rows with 1 < threads <= CORES only, and a row
      over CORES exists.
  bench-mpi JSON ITEMS
      mpi.sh's bench under mpirun -n 3 (rows serial, 2x1, 2x2): items, ranks, parallelism,
      median, speedup, efficiency, each rank's share and the balance recomputed.
  clf-layout SUMMARY
      The weblogs example's clf_stats summary in the layout of examples_weblogs.sh's awk
      oracle ("requests\tN", "status\tCODE\tN", "hour\tH\tBYTES", "path\tP\tN", ...): a
      change of format, no figure computed.
  clf-errors LIST OUTPUT
      Per error record of the weblogs run OUTPUT over the manifest LIST: "FILE:N" when it
      reads "<LIST>:<line of FILE>: stage 'clf_parse': log line N of FILE: <a known reason>",
      else "bad record: ...".
  page-commands ROOT PAGE COREMAP
      Every "$ command" line of PAGE's ```sh blocks (at least 10) runs with bash from ROOT,
      build/bin/coremap replaced by COREMAP; where the page shows output after it, stdout is
      that output ("ms" figures aside), else the command exits 0.
"""

import collections
import json
import sys


def fail(message):
    sys.stderr.write("oracle: %s\n" % message)
    sys.exit(1)


def read_records(path):
    with open(path, "rb") as f:
        return [json.loads(line.decode("utf-8", errors="strict")) for line in f]


def split_rule(text):
    k, r = text.split(":", 1)
    return int(k), int(r)


INDEX = object()  # the item's index, "%i" on the command line


def parse_value(text):
    if text == "%i":
        return INDEX
    if text.startswith("%="):
        return Computed(text[2:])
    try:
        return json.loads(text)
    except ValueError:
        return text


class Computed:
    """A %=EXPR value: EXPR over i and r, evaluated per item."""

    def __init__(self, expr):
        self.code = compile(expr, "%=" + expr, "eval")


def cmd_items(args):
    import random
    count = int(args[0])
    args = list(args[1:])
    seed = 1
    if args[:1] == ["--seed"]:
        seed = int(args[1])
        del args[:2]
    rng = random.Random(seed)
    base, rules = [], []
    for arg in args:
        if arg == "--at":
            rules.append([None, []])
            continue
        if rules and rules[-1][0] is None:
            rule, _, below = arg.partition("<")
            rules[-1][0] = split_rule(rule) + (int(below) if below else count,)
            continue
        key, value = arg.split("=", 1)
        (rules[-1][1] if rules else base).append((key, parse_value(value)))
    def resolve(value, i):
        if value is INDEX:
            return i
        if isinstance(value, Computed):
            return eval(value.code, {"i": i, "r": rng})
        return value

    out = sys.stdout
    for i in range(count):
        item = {}
        for key, value in base:
            item[key] = resolve(value, i)
        for (k, r, below), pairs in rules:
            if i % k == r and i < below:
                for key, value in pairs:
                    item[key] = resolve(value, i)
        out.write(json.dumps(item) + "\n")


def cmd_repeated(args):
    if len(args) % 2:
        fail("usage: repeated TEXT COUNT [TEXT COUNT ...]")
    for text, count in zip(args[::2], args[1::2]):
        sys.stdout.write(text * int(count))


def cmd_splice(args):
    path, count, every, extra = args[0], int(args[1]), int(args[2]), [json.loads(a) for a in args[3:]]
    lines, spliced = [], []
    for n in range(count):
        lines.append(json.dumps({"n": n}))
        if n % every == every - 1:
            spliced.append(len(lines))
            lines.append(json.dumps(extra[(len(spliced) - 1) % len(extra)]))
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    print("\n".join(map(str, spliced)))


def cmd_spliced_check(args):
    records = read_records(args[0])
    good = read_records(args[1])
    bad = dict(split_spec(a) for a in args[2:])
    check_in_order(records, len(good) + len(bad))
    rest = iter(good)
    for r in records:
        if r["index"] in bad:
            if r["ok"] or not r["error"].startswith(bad[r["index"]]):
                fail("record %d: expected an error starting %r, got %.300r" % (r["index"], bad[r["index"]], r))
        else:
            want = next(rest)
            if not r["ok"] or r["result"] != want["result"]:
                fail("record %d: expected the result %.200r, got %.300r" % (r["index"], want.get("result"), r))


def split_spec(text):
    index, message = text.split(":", 1)
    return int(index), message


def cmd_values(args):
    path, expr = args
    with open(path, "rb") as f:
        for number, line in enumerate(f):
            r = json.loads(line)
            try:
                v = eval(expr, {"json": json, "r": r})
            except (KeyError, TypeError):
                v = "<missing>"
            print("%d\t%s" % (r["index"] if "index" in r else number, v))


def cmd_value(args):
    path, index, expr = args
    for r in read_records(path):
        if r["index"] == int(index):
            try:
                sys.stdout.write(str(eval(expr, {"json": json, "r": r})))
            except (KeyError, TypeError):
                sys.stdout.write("<missing>")


def cmd_query(args):
    path, expr = args
    with open(path) as f:
        d = json.load(f)
    print(eval(expr, {"json": json, "d": d}))


def cmd_edited(args):
    with open(args[0]) as f:
        d = json.load(f)
    exec(args[1], {"json": json, "d": d})
    print(json.dumps(d))


def cmd_sqlite(args):
    import sqlite3
    db = sqlite3.connect(args[0])
    db.execute(args[1])
    db.commit()
    db.close()


def cmd_canonical(args):
    with open(args[0]) as f:
        print(json.dumps(json.load(f), sort_keys=True))


def check_in_order(records, count):
    got = [r["index"] for r in records]
    want = list(range(len(got) if count is None else count))
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = [i for i, n in collections.Counter(got).items() if n > 1 or i not in set(want)]
        fail("indices are not 0..%d once each, in order: %d records, missing %s, repeated or foreign %s, first %s"
             % (len(want) - 1, len(got), missing[:10], sorted(extra)[:10], got[:10]))


def cmd_in_order(args):
    check_in_order(read_records(args[0]), int(args[1]) if len(args) > 1 else None)


def cmd_ascending(args):
    seen = [r["index"] for r in read_records(args[0])]
    if any(b <= a for a, b in zip(seen, seen[1:])):
        fail("indices not increasing: %s" % [(a, b) for a, b in zip(seen, seen[1:]) if b <= a][:10])


def cmd_fails_at(args):
    records = read_records(args[0])
    k, r = split_rule(args[1])
    check_in_order(records, int(args[2]) if len(args) > 2 else None)
    for rec in records:
        if rec["ok"] != (rec["index"] % k != r):
            fail("record %d: ok is %s, expected %s: %.300r" % (rec["index"], rec["ok"], rec["index"] % k != r, rec))


def cmd_jsonl(args):
    with open(args[0], "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                json.loads(line.decode("utf-8", errors="strict"))
            except ValueError as e:
                fail("%s:%d: %s" % (args[0], number, e))


def cmd_xml(args):
    import xml.etree.ElementTree as ElementTree
    try:
        ElementTree.parse(args[0])
    except ElementTree.ParseError as e:
        fail("%s: %s" % (args[0], e))


def cmd_doc_block(args):
    import re
    with open(args[0]) as f:
        text = f.read()
    parts = re.split(r"^%s *$" % re.escape(args[1]), text, maxsplit=1, flags=re.M)
    if len(parts) < 2:
        fail("%s: no heading %r" % (args[0], args[1]))
    language = args[2] if len(args) > 2 else "sh"
    block = re.search(r"^```%s\n(.*?)^```" % re.escape(language), parts[1], re.S | re.M)
    if not block:
        fail("%s: no %s block after %r" % (args[0], language, args[1]))
    sys.stdout.write(block.group(1))


def cmd_shown_output(args):
    import re
    with open(args[0]) as f:
        shown = f.read().splitlines()
    got = []
    for path in args[1:]:
        with open(path) as f:
            got += f.read().splitlines()
    missing = [w for w in shown
               if w.strip() and not any(re.fullmatch(re.escape(w).replace(r"\.\.\.", ".*"), g) for g in got)]
    if missing:
        fail("shown lines not printed: %r" % missing[:5])


def cmd_normalised(args):
    drop = [a.split(".") for a in args[2::2]] if len(args) > 1 else []
    if any(a != "--drop" for a in args[1::2]):
        fail("usage: normalised FILE [--drop result.KEY ...]")
    for r in read_records(args[0]):
        for path in drop:
            node = r
            for key in path[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(path[-1], None)
        print(json.dumps(r, sort_keys=True))


def cmd_texts(args):
    records = read_records(args[0])
    if "--by-index" in args[2:]:
        records.sort(key=lambda r: r["index"])
    for r in records:
        sys.stdout.write(r["result"][args[1]] if r["ok"] else "error: %s\n" % r["error"])


def cmd_echo_check(args):
    manifest, output = args[0], args[1]
    bad = {}
    for spec in args[2:]:
        index, text = spec.split(":", 1)
        bad[int(index)] = text
    items = []  # (line number, bytes)
    with open(manifest, "rb") as f:
        for number, line in enumerate(f.read().split(b"\n"), 1):
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip(b" \t\r\n"):
                items.append((number, line))
    problems = []
    records = read_records(output)
    if [r["index"] for r in records] != list(range(len(items))):
        problems.append("indexes %s, expected 0..%d" % ([r["index"] for r in records][:20], len(items) - 1))
    for r in records[: len(items)]:
        number, line = items[r["index"]]
        if r["index"] in bad:
            where = "%s:%d:" % (manifest, number)
            if r["ok"] or not r["error"].startswith(where) or bad[r["index"]] not in r["error"]:
                problems.append("item %d: expected an error starting %r containing %r, got %.300r"
                                % (r["index"], where, bad[r["index"]], r))
        elif not r["ok"] or r["result"] != json.loads(line):
            problems.append("item %d (line %d): expected ok with %.100r, got %.300r" % (r["index"], number, line, r))
    print("; ".join(problems) if problems else "ok")


def list_paths(path):
    with open(path) as f:
        return f.read().split("\n")[:-1]


def file_lines(path):
    with open(path, "rb") as f:
        lines = f.read().decode().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [l[:-1] if l.endswith("\r") else l for l in lines]


def cmd_lines_records(args):
    for i, path in enumerate(list_paths(args[0])):
        for n, text in enumerate(file_lines(path), 1):
            print(json.dumps({"index": i, "sub": n - 1, "ok": True, "result": {"path": path, "line": n, "text": text}}))


def cmd_line_counts(args):
    subs = {}
    for r in read_records(args[1]):
        subs.setdefault(r["index"], []).append(r["sub"])
    for i, path in enumerate(list_paths(args[0])):
        with open(path, "rb") as f:
            n = f.read().count(b"\n")
        if subs.get(i) != list(range(n)):
            fail("item %d (%s, %d lines): subs %s" % (i, path, n, subs.get(i)))


def top(counts, count, key):
    return sorted(counts.items(), key=lambda kv: (-kv[1], key(kv[0])))[:count]


def cmd_top_lines(args):
    counts = collections.Counter()
    for path in list_paths(args[0]):
        counts.update(file_lines(path))
    best = top(counts, int(args[1]), lambda k: k.encode())
    print(json.dumps({"count": {"distinct": len(counts), "field": "text", "items": sum(counts.values()),
                                "top": [{"count": c, "key": k} for k, c in best]}}, sort_keys=True))


def cmd_top_sha256(args):
    import hashlib
    paths, count, summary, stage = list_paths(args[0]), int(args[1]), args[2], args[3]
    with open(summary) as f:
        s = json.load(f)[stage]
    counts = collections.Counter()
    for path in paths:
        with open(path, "rb") as f:
            counts[hashlib.sha256(f.read()).hexdigest() + "  -\n"] += 1
    want = top(counts, count, lambda k: k.encode())
    if s["items"] != len(paths):
        fail("items %s, the list names %d files" % (s["items"], len(paths)))
    if [(t["key"], t["count"]) for t in s["top"]] != want:
        fail("top %s; Counter: %s" % (s["top"], want))


def cmd_top_field(args):
    manifest, field, count, summary = args[0], args[1], int(args[2]), args[3]
    with open(summary) as f:
        s = json.load(f)["topkeys"]
    with open(manifest) as f:
        c = collections.Counter(json.loads(l)[field] for l in f)
    want = top(c, count, lambda k: k)
    if s["items"] != sum(c.values()) or s["distinct"] != len(c):
        fail("items %s, distinct %s; Counter: %d, %d" % (s["items"], s["distinct"], sum(c.values()), len(c)))
    if [(t["key"], t["count"]) for t in s["top"]] != want:
        fail("top %s; Counter: %s" % (s["top"], want))


WORDS = ["the", "a", "of", "to", "and", "in", "license", "software", "copy", "free", "work",
         "program", "source", "code", "terms", "any", "you", "may", "not", "this", "café",
         "naïve", "über", "日本", "x", "GPL", "Version", "3", "2007", "—", "(c)", "\tindented"]


def cmd_text_files(args):
    import os
    import random
    directory, count = args[0], int(args[1])
    rng = random.Random(int(args[2]) if len(args) > 2 else 1)
    for f in range(count):
        lines = []
        for _ in range(rng.choice([0, 1, 5, 40, 300, 900])):
            roll = rng.random()
            if roll < 0.1:
                lines.append("")
            elif roll < 0.3 and lines:
                lines.append(rng.choice(lines))
            else:
                lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 9))))
        text = "\n".join(lines) + ("\n" if lines and rng.random() < 0.8 else "")
        path = os.path.join(directory, "t%03d.txt" % f)
        with open(path, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        print(path)


def cmd_random_files(args):
    import os
    import random
    directory, count = args[0], int(args[1])
    most = int(args[2]) if len(args) > 2 else 20000
    rng = random.Random(int(args[3]) if len(args) > 3 else 1)
    for f in range(count):
        path = os.path.join(directory, "r%04d.bin" % f)
        with open(path, "wb") as out:
            out.write(rng.randbytes(rng.randrange(most + 1)))
        print(path)


def cmd_random_bytes(args):
    import random
    rng = random.Random(int(args[1]) if len(args) > 1 else 1)
    sys.stdout.buffer.write(rng.randbytes(int(args[0])))


def span(text):
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def cmd_word_files(args):
    import os
    import random
    directory, count, lines, words, vocabulary = args[0], int(args[1]), span(args[2]), span(args[3]), int(args[4])
    rng = random.Random(int(args[5]) if len(args) > 5 else 1)
    names = ["w%03d" % i for i in range(vocabulary)]
    for f in range(count):
        path = os.path.join(directory, "f%03d.txt" % f)
        with open(path, "w") as out:
            for _ in range(rng.randint(*lines)):
                out.write(" ".join(names[min(rng.randrange(vocabulary), rng.randrange(vocabulary))]
                                   for _ in range(rng.randint(*words))) + "\n")
        print(path)


def cmd_bench_figures(args):
    import xml.etree.ElementTree as ET
    with open(args[0]) as f:
        data = json.load(f)
    lines, digest = int(args[2]), args[3]
    problems = []
    def close(a, b, what):
        if abs(a - b) > 1e-9 * max(1.0, abs(b)):
            problems.append("%s: %r, expected %r" % (what, a, b))
    runs = data["runs"]
    labels = [r["label"] for r in runs]
    if labels != ["serial", "1", "2"]:
        problems.append("rows %r, expected serial, 1, 2 (sorted, deduplicated)" % labels)
    serial = runs[0]["median_seconds"]
    for r in runs:
        walls = sorted(r["wall_seconds"])
        if len(walls) != 2:
            problems.append("%s: %d timed runs, expected 2" % (r["label"], len(walls)))
        close(r["median_seconds"], (walls[0] + walls[1]) / 2, r["label"] + " median")
        close(r["min_seconds"], walls[0], r["label"] + " min")
        close(r["max_seconds"], walls[-1], r["label"] + " max")
        p = r["threads"]
        s = serial / r["median_seconds"]
        close(r["speedup"], s, r["label"] + " speedup")
        close(r["efficiency"], s / p, r["label"] + " efficiency")
        close(r["items_per_second"], lines / r["median_seconds"], r["label"] + " items/s")
        if p > 1:
            close(r["karp_flatt"], (1 / s - 1 / p) / (1 - 1 / p), r["label"] + " Karp-Flatt")
        elif r["karp_flatt"] is not None:
            problems.append("%s: Karp-Flatt given for p = 1" % r["label"])
        if r["items"] != lines or r["failed"] != 0:
            problems.append("%s: %d items, %d failed" % (r["label"], r["items"], r["failed"]))
        prof = r["profile"]
        st = prof["stages"]
        if len(st) != 1 or st[0]["name"] != "spin" or st[0]["calls"] != lines:
            problems.append("%s: stages %r" % (r["label"], st))
            continue
        st = st[0]
        if not st["p50_ns"] <= st["p95_ns"] <= st["p99_ns"] <= st["max_ns"]:
            problems.append("%s: percentiles out of order %r" % (r["label"], st))
        if st["p50_ns"] < 0.8 * 2000e3 or st["p50_ns"] > 100 * 2000e3:
            problems.append("%s: p50 %d ns is not near the 2000 us spin" % (r["label"], st["p50_ns"]))
        if st["busy_seconds"] < lines * 0.8 * 2000e-6:
            problems.append("%s: busy %.4f s below %d spins" % (r["label"], st["busy_seconds"], lines))
        capacity = prof["wall_seconds"] * p
        close(prof["framework_overhead"], 1 - st["busy_seconds"] / capacity, r["label"] + " overhead")
    m = data["manifest"]
    if m["items"] != lines: problems.append("manifest items %d, wc -l %d" % (m["items"], lines))
    if m["sha256"] != digest: problems.append("manifest sha256 %s, sha256sum %s" % (m["sha256"], digest))
    for key in ("cpu_model", "cores", "memory_bytes"):
        if key not in data["machine"]: problems.append("machine lacks " + key)
    for key in ("version", "git_revision", "tbb", "compiler"):
        if not data["coremap"].get(key): problems.append("coremap lacks " + key)
    if [p["name"] for p in data["plugins"]] != ["spin"] or not data["plugins"][0]["path"].endswith("spin.so"):
        problems.append("plugins %r" % data["plugins"])
    # The fit: least squares of 1/S - 1/p = f (1 - 1/p) over rows with p > 1 (here one row).
    xs = [(1 - 1 / r["threads"], 1 / r["speedup"] - 1 / r["threads"]) for r in runs[1:] if r["threads"] > 1]
    close(data["amdahl"]["fitted"], sum(x * y for x, y in xs) / sum(x * x for x, y in xs), "Amdahl f")
    svg = ET.parse(args[1]).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    ids = sorted(e.get("id") for e in svg.iter(ns + "polyline"))
    if ids != ["amdahl", "ideal", "measured"]:
        problems.append("svg polylines %r" % ids)
    measured = [e for e in svg.iter(ns + "polyline") if e.get("id") == "measured"][0]
    if len(measured.get("points").split()) != 2:
        problems.append("measured polyline has %r" % measured.get("points"))
    if problems:
        fail("; ".join(problems))


def cmd_bench_isolated(args):
    import xml.etree.ElementTree as ET
    with open(args[0]) as f:
        data = json.load(f)
    items = int(args[2])
    runs, problems = data["runs"], []
    labels = [r["label"] for r in runs]
    if labels != ["serial", "1", "1 iso", "2", "2 iso"]:
        problems.append("rows %r" % labels)
    for i, r in enumerate(runs):
        if r["isolated"] != r["label"].endswith(" iso"):
            problems.append("%s: isolated %r" % (r["label"], r["isolated"]))
        if r["isolated"]:
            before = runs[i - 1]
            want = (r["median_seconds"] - before["median_seconds"]) * 1e6 / r["items"]
            if before["threads"] != r["threads"] or abs(r["isolation_us_per_item"] - want) > 1e-6 * max(1, abs(want)):
                problems.append("%s: isolation_us_per_item %r, expected %r" % (r["label"], r["isolation_us_per_item"], want))
            if r["profile"] is not None:
                problems.append("%s: an isolated row has a profile" % r["label"])
        elif r["isolation_us_per_item"] is not None:
            problems.append("%s: an in-process row has an isolation overhead" % r["label"])
        if r["items"] != items or r["failed"] != 0:
            problems.append("%s: %d items, %d failed" % (r["label"], r["items"], r["failed"]))
    s = data["settings"]
    if (s["isolate"], s["retries"], s["ordered"]) != (True, 1, False):
        problems.append("settings %r" % s)
    ids = {e.get("id") for e in ET.parse(args[1]).getroot().iter()}
    if "isolated" not in ids or "measured" not in ids:
        problems.append("svg ids %r" % sorted(i for i in ids if i))
    if problems:
        fail("; ".join(problems))


def cmd_amdahl_fit(args):
    with open(args[0]) as f:
        data = json.load(f)
    cores = int(args[1])
    if data["machine"]["cores"] != cores:
        fail("machine cores %r, nproc %d" % (data["machine"]["cores"], cores))
    rows = [r for r in data["runs"] if r["threads"] > 1 and r["threads"] <= cores and r["label"] != "serial"]
    xs = [(1 - 1 / r["threads"], 1 / r["speedup"] - 1 / r["threads"]) for r in rows]
    want = sum(x * y for x, y in xs) / sum(x * x for x, y in xs) if xs else None
    got = data["amdahl"]["fitted"]
    if (want is None) != (got is None) or (want is not None and abs(got - want) > 1e-9 * max(1, abs(want))):
        fail("fitted %r, want %r over rows %r" % (got, want, [r["threads"] for r in rows]))
    elif not any(r["threads"] > cores for r in data["runs"]):
        fail("no row over the core count")



def cmd_bench_mpi(args):
    import statistics
    with open(args[0]) as f:
        d = json.load(f)
    items = int(args[1])
    assert d["mpi"]["ranks"] == 3 and d["mpi"]["processing_ranks"] == 2, d["mpi"]
    runs = {r["label"]: r for r in d["runs"]}
    assert list(runs) == ["serial", "2x1", "2x2"], list(runs)
    serial = runs["serial"]
    assert serial["items"] == items and serial["rank_shares"] == [], serial
    for label, p in (("2x1", 2), ("2x2", 4)):
        r = runs[label]
        assert r["items"] == items and r["ranks"] == 2 and r["parallelism"] == p, r
        assert abs(r["median_seconds"] - statistics.median(r["wall_seconds"])) < 1e-9
        assert abs(r["speedup"] - serial["median_seconds"] / r["median_seconds"]) < 1e-9
        assert abs(r["efficiency"] - r["speedup"] / p) < 1e-9
        assert len(r["rank_shares"]) == 2, r["rank_shares"]
        ratios = []
        for shares in r["rank_shares"]:
            assert [s["rank"] for s in shares] == [1, 2]
            assert sum(s["items"] for s in shares) == items, shares
            busy = [s["busy_seconds"] for s in shares]
            ratios.append(max(busy) / min(busy))
        assert abs(r["balance"] - statistics.median(ratios)) < 1e-9, (r["balance"], ratios)
        # The measured run's calls, merged over the ranks, are one per item.
        assert r["profile"]["stages"][0]["calls"] == items, r["profile"]


def cmd_clf_layout(args):
    with open(args[0]) as f:
        s = json.load(f)["clf_stats"]
    print("requests\t%d\nbytes\t%d" % (s["requests"], s["bytes"]))
    for code, n in sorted(s["status"].items()):
        print("status\t%s\t%d" % (code, n))
    for hour, b in sorted(s["bytes_per_hour"].items()):
        print("hour\t%s\t%d" % (hour, b))
    print("distinct_paths\t%d" % s["distinct_paths"])
    for p in s["top_paths"]:
        print("path\t%s\t%d" % (p["path"], p["count"]))


def cmd_clf_errors(args):
    import re
    manifest = args[0]
    line_of = {p: n for n, p in enumerate(list_paths(manifest), 1)}
    reasons = ("no host|no ident|no authuser|bad timestamp|bad request \\(no quoted request\\)|bad status|"
               "bad size|bad referer/user-agent")
    with open(args[1]) as f:
        for raw in f:
            r = json.loads(raw)
            m = re.fullmatch(r"(.*):(\d+): stage 'clf_parse': log line (\d+) of (.*): (%s)" % reasons, r.get("error", ""))
            if r["ok"] or not m or m.group(1) != manifest or int(m.group(2)) != line_of.get(m.group(4)):
                print("bad record: %.300s" % raw.strip())
                continue
            print("%s:%s" % (m.group(4), m.group(3)))


def cmd_page_commands(args):
    import re
    import subprocess
    root, page, coremap = args
    with open(page) as f:
        blocks = re.findall(r"^```sh\n(.*?)^```$", f.read(), re.S | re.M)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append([line[2:], []])
            else:
                commands[-1][1].append(line)
    if len(commands) < 10:
        fail("%s: found only %d commands" % (page, len(commands)))
    norm = lambda text: re.sub(r'"ms":[0-9.]+', '"ms":N', text)
    bad = 0
    for command, shown in commands:
        run = subprocess.run(["bash", "-c", command.replace("build/bin/coremap", coremap)], cwd=root,
                             capture_output=True, text=True)
        ok = norm(run.stdout) == norm("\n".join(shown) + "\n") if shown else run.returncode == 0
        if not ok:
            bad += 1
            sys.stderr.write("command differs: %s\n--- got (exit %d):\n%s%s\n" % (command, run.returncode, run.stdout, run.stderr))
    if bad:
        fail("%d of %d commands of %s differ" % (bad, len(commands), page))


COMMANDS = {
    "items": cmd_items,
    "repeated": cmd_repeated,
    "splice": cmd_splice,
    "spliced-check": cmd_spliced_check,
    "random-bytes": cmd_random_bytes,
    "word-files": cmd_word_files,
    "edited": cmd_edited,
    "sqlite": cmd_sqlite,
    "top-sha256": cmd_top_sha256,
    "bench-isolated": cmd_bench_isolated,
    "clf-layout": cmd_clf_layout,
    "clf-errors": cmd_clf_errors,
    "page-commands": cmd_page_commands,
    "text-files": cmd_text_files,
    "random-files": cmd_random_files,
    "values": cmd_values,
    "value": cmd_value,
    "query": cmd_query,
    "canonical": cmd_canonical,
    "in-order": cmd_in_order,
    "ascending": cmd_ascending,
    "fails-at": cmd_fails_at,
    "jsonl": cmd_jsonl,
    "normalised": cmd_normalised,
    "xml": cmd_xml,
    "doc-block": cmd_doc_block,
    "shown-output": cmd_shown_output,
    "texts": cmd_texts,
    "echo-check": cmd_echo_check,
    "lines-records": cmd_lines_records,
    "line-counts": cmd_line_counts,
    "top-lines": cmd_top_lines,
    "top-field": cmd_top_field,
    "bench-figures": cmd_bench_figures,
    "amdahl-fit": cmd_amdahl_fit,
    "bench-mpi": cmd_bench_mpi,
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        if len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help"):
            sys.stdout.write(__doc__)
            sys.exit(0)
        sys.stderr.write(__doc__)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
