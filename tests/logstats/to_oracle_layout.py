#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Prints logstats' --json report (standard input) in oracle.sh's text layout, nothing computed."""
import json
import sys


def main():
    r = json.load(sys.stdin)
    out = [f"requests\t{r['requests']}", f"bytes\t{r['bytes']}"]
    for name, s in r["status"].items():
        out.append(f"status\t{name}\t{s['requests']}\t{s['bytes']}")
    out.append(f"malformed\t{r['malformed']['lines']}")
    out += [f"example\t{e['file']}:{e['line']}" for e in r["malformed"]["examples"]]
    sizes = r["response_sizes"]
    out.append(f"sized\t{sizes['responses']}")
    for key in ("p50", "p90", "p99", "max"):
        out.append(f"{key}\t{'none' if sizes[key] is None else sizes[key]}")
    out += [f"path\t{p['requests']}\t{p['path']}" for p in r["top_paths"]]
    out.append(f"distinct_path\t{r['distinct_paths']}")
    out += [f"client\t{c['requests']}\t{c['client']}" for c in r["top_clients"]]
    out.append(f"distinct_client\t{r['distinct_clients']}")
    out += [f"hour\t{hour}\t{count}" for hour, count in r["requests_per_hour"].items()]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
