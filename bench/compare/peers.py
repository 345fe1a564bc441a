#!/usr/bin/env python3
"""The Python side of bench/compare/peers.sh: multiprocessing.Pool.map jobs, and the converters
that put every tool's output in one layout so the script can check they agree.

  peers.py sha256 LIST PROCESSES            Pool.map of hashlib.sha256 over the files in LIST;
                                            prints `sha256sum`'s layout: "<hex>  <path>"
  peers.py wordcount LIST PROCESSES         Pool.map of a wc-alike; prints "<lines> <words> <bytes> <path>"
  peers.py echo MANIFEST PROCESSES [CHUNK]  Pool.map of the identity over MANIFEST's lines (default
                                            chunksize when CHUNK is absent); prints them back
  peers.py records LIST sha256|wordcount    coremap's JSON Lines records (stdin) in the layouts above
"""
import hashlib
import json
import multiprocessing
import sys

# `LC_ALL=C wc -w` (coreutils 9.1) and coremap's wordcount: the six isspace() bytes end a word,
# printable ASCII starts or continues one, and every other byte does neither. Deleting those
# other bytes and splitting on ASCII whitespace (what bytes.split() does) counts the same.
SPACE = b" \t\n\v\f\r"
NEITHER = bytes(c for c in range(256) if c not in SPACE and not 0x21 <= c <= 0x7E)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def wordcount(path):
    with open(path, "rb") as f:
        data = f.read()
    return data.count(b"\n"), len(data.translate(None, NEITHER).split()), len(data)


def identity(x):
    return x


def read_list(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read().splitlines()


def main():
    what = sys.argv[1]
    out = sys.stdout
    if what == "records":
        paths = read_list(sys.argv[2])
        for line in sys.stdin:
            record = json.loads(line)
            r = record["result"]
            path = paths[record["index"]]
            if sys.argv[3] == "sha256":
                out.write(f"{r['sha256']}  {path}\n")
            else:
                out.write(f"{r['lines']} {r['words']} {r['bytes']} {path}\n")
        return
    processes = int(sys.argv[3])
    if what == "echo":
        with open(sys.argv[2]) as f:
            items = f.read().splitlines()
        chunksize = int(sys.argv[4]) if len(sys.argv) > 4 else None
        with multiprocessing.Pool(processes) as pool:
            results = pool.map(identity, items, chunksize)
        out.write("\n".join(results) + "\n")
        return
    paths = read_list(sys.argv[2])
    with multiprocessing.Pool(processes) as pool:
        if what == "sha256":
            for path, digest in zip(paths, pool.map(sha256, paths)):
                out.write(f"{digest}  {path}\n")
        else:
            for path, (lines, words, size) in zip(paths, pool.map(wordcount, paths)):
                out.write(f"{lines} {words} {size} {path}\n")


if __name__ == "__main__":
    main()
