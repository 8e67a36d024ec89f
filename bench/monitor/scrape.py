#!/usr/bin/env python3
"""Scrape an exporter N times over one keep-alive connection; print latency percentiles,
response size, series count and the exporter's RSS (current and peak) as JSON."""
import http.client, json, sys, time

host, port, pid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def rss():
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0]) / (1 if k == "Threads" else 1024.0)  # MiB
    return out

conn = http.client.HTTPConnection(host, port, timeout=10)
lat, size, series = [], 0, 0
for i in range(n + 50):
    t0 = time.perf_counter()
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    body = r.read()
    dt = time.perf_counter() - t0
    if r.status != 200:
        sys.exit(f"status {r.status}")
    if i >= 50:  # warm-up excluded
        lat.append(dt * 1000.0)
    size = len(body)
    series = sum(1 for l in body.split(b"\n") if l and not l.startswith(b"#"))
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))]
print(json.dumps({
    "scrapes": len(lat), "series": series, "bytes": size,
    "p50_ms": round(pct(50), 3), "p90_ms": round(pct(90), 3), "p99_ms": round(pct(99), 3),
    "max_ms": round(lat[-1], 3), **{k: round(v, 1) for k, v in rss().items()},
}))
