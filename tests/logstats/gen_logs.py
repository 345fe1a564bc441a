#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes a reproducible directory of web server access logs for testing logstats.

Common and Combined Log Format, mixed; several time zones; hours that cross midnight and a
month end; sizes "-" sometimes; about 1.5 % malformed lines (truncated, garbage, bad status,
bad timestamp, bad size, unclosed quote); a few blank lines, CRLF line ends and escaped quotes;
one last line without a newline. The same seed and options always give the same bytes.

Layout of OUTDIR (the default options give about 16 MB):
  big-0.log ...          plain Combined, --big-mib MiB each (--big-files of them)
  app/common.log         plain Common
  app/mixed/mixed.log    plain, Common and Combined line by line, several time zones, no final newline
  edge.log               plain Combined, lots of ties, escaped quotes, CRLF lines, blank lines
  empty.log              0 bytes
  rotated/access.1.log.gz, rotated/access.2.log.gz   gzip (made with `gzip -n`); with --plain
                         they stay uncompressed as rotated/access.1.log, rotated/access.2.log
                         (same lines), for readers of plain files only

Usage: gen_logs.py OUTDIR [--seed N] [--big-files N] [--big-mib M] [--small-lines N] [--gz-lines N] [--plain]
"""
import argparse
import datetime
import os
import random
import subprocess
import sys

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
ZONES = ["-0700", "+0000", "+0200", "+0530", "-0430", "+1000", "-1100", "+1245"]
METHODS = ["GET"] * 16 + ["POST"] * 4 + ["HEAD", "PUT", "DELETE", "OPTIONS"]
PROTOCOLS = ["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0"]
STATUSES = [(200, 700), (304, 60), (301, 20), (302, 40), (206, 10), (404, 80), (403, 10),
            (400, 8), (401, 6), (500, 12), (502, 4), (503, 6), (101, 2), (100, 1), (204, 5)]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/7.88.1",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "Wget/1.21.3",
    'python-requests/2.31.0 \\"quoted\\"',  # an escaped quote, as Apache writes it
    "-",
]


class Pools:
    """Clients, paths and their skewed (Zipf-like) choice weights."""

    def __init__(self, rng, clients, paths):
        self.clients = []
        for i in range(clients):
            if i % 17 == 5:
                self.clients.append("2001:db8:%x::%x" % (rng.randrange(65536), rng.randrange(65536)))
            elif i % 23 == 7:
                self.clients.append("host-%d.example.net" % rng.randrange(10**6))
            else:
                self.clients.append("%d.%d.%d.%d" % (rng.randrange(1, 224), rng.randrange(256),
                                                     rng.randrange(256), rng.randrange(1, 255)))
        sections = ["", "/static", "/api/v1", "/api/v2", "/blog", "/images", "/docs", "/shop/item"]
        leaves = ["index.html", "style.css", "app.js", "logo.png", "users", "orders", "search",
                  "favicon.ico", "robots.txt", "feed.xml", "login", "about"]
        self.paths = ["/"]
        while len(self.paths) < paths:
            p = "%s/%s" % (rng.choice(sections), rng.choice(leaves))
            if rng.random() < 0.6:
                p = "%s/%s/%d" % (rng.choice(sections), rng.choice(leaves), rng.randrange(10000))
            self.paths.append(p)
        self.client_weights = cumulative([1.0 / (r + 1) ** 1.05 for r in range(len(self.clients))])
        self.path_weights = cumulative([1.0 / (r + 1) ** 1.2 for r in range(len(self.paths))])
        self.status_values = [s for s, _ in STATUSES]
        self.status_weights = cumulative([w for _, w in STATUSES])


def cumulative(weights):
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


class Clock:
    """Timestamps that advance by random steps, written in one of a few zones."""

    def __init__(self, rng, start, zone, step_ms):
        self.rng, self.t, self.zone, self.step_ms = rng, start, zone, step_ms

    def next(self, zone=None):
        self.t += datetime.timedelta(milliseconds=self.rng.randrange(self.step_ms))
        t = self.t
        return "[%02d/%s/%04d:%02d:%02d:%02d %s]" % (t.day, MONTHS[t.month - 1], t.year, t.hour, t.minute,
                                                    t.second, zone or self.zone)


def request(rng, pools):
    path = rng.choices(pools.paths, cum_weights=pools.path_weights)[0]
    r = rng.random()
    if r < 0.15:
        path += "?q=%d&page=%d" % (rng.randrange(1000), rng.randrange(9))
    elif r < 0.16:
        path += "?next=/a%20b"
    return "%s %s %s" % (rng.choice(METHODS), path, rng.choice(PROTOCOLS))


def size_of(rng, status):
    if status in (304, 204, 100, 101) or rng.random() < 0.04:
        return "-" if rng.random() < 0.8 else "0"
    return str(int(rng.lognormvariate(8.0, 1.6)))


def good_line(rng, pools, clock, combined, zone=None):
    host = rng.choices(pools.clients, cum_weights=pools.client_weights)[0]
    status = rng.choices(pools.status_values, cum_weights=pools.status_weights)[0]
    user = "-" if rng.random() < 0.9 else rng.choice(["frank", "alice", "bob-smith"])
    req = request(rng, pools)
    if rng.random() < 0.003:
        req, status = "-", 408
    line = '%s - %s %s "%s" %d %s' % (host, user, clock.next(zone), req, status, size_of(rng, status))
    if combined:
        referer = "-" if rng.random() < 0.5 else "https://www.example.com%s" % rng.choice(pools.paths[:50])
        line += ' "%s" "%s"' % (referer, rng.choice(AGENTS))
    return line


GARBAGE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_/.:[]\"'=?&%+"


def bad_line(rng, pools, clock, combined):
    kind = rng.randrange(7)
    line = good_line(rng, pools, clock, combined)
    if kind == 0:  # truncated anywhere
        return line[:rng.randrange(1, len(line))]
    if kind == 1:  # garbage
        return "".join(rng.choice(GARBAGE) for _ in range(rng.randrange(5, 90)))
    if kind == 2:  # bad status
        head, _, tail = line.partition('" ')
        status, _, rest = tail.partition(" ")
        return '%s" %s %s' % (head, rng.choice(["2000", "099", "600", "abc", "20", "9xx", "000"]), rest)
    if kind == 3:  # bad timestamp: day 32, hour 24, unknown month, or no zone
        i = line.index("[")
        ts = line[i:i + 28]
        broken = rng.choice([ts.replace(ts[1:3], "32", 1), ts[:13] + "24" + ts[15:],
                             ts[:4] + "Foo" + ts[7:], ts[:21] + "]"])
        return line[:i] + broken + line[i + 28:]
    if kind == 4:  # bad size
        head, _, tail = line.partition('" ')
        fields = tail.split(" ", 2)
        fields[1] = rng.choice(["12a", "1.5", "--", "x", "1234567890123456789"])
        return head + '" ' + " ".join(fields)
    if kind == 5:  # request quote never closed
        return line[:line.index('"') + 8]
    # a log line with its host missing
    return line[line.index(" ") + 1:] if rng.random() < 0.5 else " " + line


def write_log(path, rng, pools, clock, lines, combined, bad_rate=0.015, extras=False, final_newline=True,
              zones=None):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    out = []
    for n in range(lines):
        c = combined if combined is not None else rng.random() < 0.5
        if rng.random() < bad_rate:
            line = bad_line(rng, pools, clock, c)
        else:
            zone = rng.choice(zones) if zones and rng.random() < 0.3 else None
            line = good_line(rng, pools, clock, c, zone)
        if extras:
            r = rng.random()
            if r < 0.004:
                out.append("")  # a blank line: skipped, but it still counts for line numbers
            elif r < 0.008:
                line += "\r"  # CRLF line end
            elif r < 0.010:
                line = line.replace(" HTTP/", '\\"x HTTP/', 1)  # escaped quote inside the request
        out.append(line)
    text = "\n".join(out) + ("\n" if final_newline else "")
    with open(path, "w", encoding="ascii", newline="") as f:
        f.write(text)


def write_big(path, rng, pools, clock, mib, combined):
    target = int(mib * 1024 * 1024)
    written = 0
    with open(path, "w", encoding="ascii", newline="") as f:
        while written < target:
            block = []
            for _ in range(2000):
                if rng.random() < 0.015:
                    block.append(bad_line(rng, pools, clock, combined))
                else:
                    block.append(good_line(rng, pools, clock, combined))
            text = "\n".join(block) + "\n"
            f.write(text)
            written += len(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--big-files", type=int, default=1)
    parser.add_argument("--big-mib", type=float, default=11)
    parser.add_argument("--small-lines", type=int, default=4000)
    parser.add_argument("--gz-lines", type=int, default=8000)
    parser.add_argument("--plain", action="store_true", help="do not gzip the rotated logs")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    pools = Pools(rng, clients=3000, paths=1500)
    out = args.outdir
    os.makedirs(out, exist_ok=True)
    start = datetime.datetime(2023, 10, 30, 21, 0, 0)  # crosses midnight and the end of October

    for i in range(args.big_files):
        clock = Clock(rng, start + datetime.timedelta(hours=7 * i), ZONES[i % len(ZONES)], 300)
        write_big(os.path.join(out, "big-%d.log" % i), rng, pools, clock, args.big_mib, combined=True)
    write_log(os.path.join(out, "app", "common.log"), rng, pools, Clock(rng, start, "-0700", 20000),
              args.small_lines, combined=False)
    write_log(os.path.join(out, "app", "mixed", "mixed.log"), rng, pools, Clock(rng, start, "+0530", 40000),
              args.small_lines, combined=None, zones=ZONES, final_newline=False)
    write_log(os.path.join(out, "edge.log"), rng, Pools(rng, clients=12, paths=8),
              Clock(rng, datetime.datetime(2024, 2, 28, 22, 0, 0), "+0000", 5000),
              args.small_lines, combined=True, bad_rate=0.02, extras=True, zones=["-1100", "+1245"])
    open(os.path.join(out, "empty.log"), "w").close()
    for i, combined in enumerate([True, False], start=1):
        plain = os.path.join(out, "rotated", "access.%d.log" % i)
        write_log(plain, rng, pools, Clock(rng, start - datetime.timedelta(days=i), ZONES[i], 15000),
                  args.gz_lines, combined=combined)
        if not args.plain:
            subprocess.run(["gzip", "-n", "-f", plain], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
