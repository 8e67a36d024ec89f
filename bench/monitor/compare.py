#!/usr/bin/env python3
"""Scrape cost side by side: each target gets one keep-alive connection (plain HTTP, or HTTPS
verified against a CA with a client certificate), and the targets are scraped in alternating
rounds (ROUNDS of SCRAPES/ROUNDS each, warm-up excluded) so drift in the machine's load hits
them alike. Prints p50/p90/p99/max per target as JSON, and the machine's load averages before
and after.

Usage: compare.py SCRAPES ROUNDS NAME=URL[,CA,CERT,KEY] ...
"""
import http.client, json, os, ssl, sys, time
from urllib.parse import urlsplit

scrapes, rounds = int(sys.argv[1]), int(sys.argv[2])
targets = []
for spec in sys.argv[3:]:
    name, _, rest = spec.partition("=")
    parts = rest.split(",")
    url = urlsplit(parts[0])
    if url.scheme == "https":
        ctx = ssl.create_default_context(cafile=parts[1])
        ctx.load_cert_chain(parts[2], parts[3])
        conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=10)
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    targets.append({"name": name, "conn": conn, "path": url.path or "/", "lat": [], "bytes": 0})

def scrape(t, keep):
    t0 = time.perf_counter()
    t["conn"].request("GET", t["path"])
    r = t["conn"].getresponse()
    body = r.read()
    dt = (time.perf_counter() - t0) * 1000.0
    if r.status != 200:
        sys.exit(f"{t['name']}: status {r.status}")
    t["bytes"] = len(body)
    if keep:
        t["lat"].append(dt)

load_before = os.getloadavg()
for t in targets:  # warm-up: the TLS handshake and first scrapes are not counted
    for _ in range(20):
        scrape(t, False)
per_round = max(1, scrapes // rounds)
for _ in range(rounds):
    for t in targets:
        for _ in range(per_round):
            scrape(t, True)
load_after = os.getloadavg()

def pct(lat, p):
    return lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))]

out = {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
       "load_after": [round(x, 2) for x in load_after], "targets": {}}
for t in targets:
    lat = sorted(t["lat"])
    out["targets"][t["name"]] = {
        "scrapes": len(lat), "bytes": t["bytes"],
        "p50_ms": round(pct(lat, 50), 3), "p90_ms": round(pct(lat, 90), 3),
        "p99_ms": round(pct(lat, 99), 3), "max_ms": round(lat[-1], 3),
    }
print(json.dumps(out, indent=1))
