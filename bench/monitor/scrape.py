#!/usr/bin/env python3
"""Scrape an exporter N times over one keep-alive connection; print latency percentiles,
response size, series count and the exporter's RSS (current and peak) as JSON, plus where the
resident memory is (from /proc/PID/smaps: per file and permission, anonymous memory as "anon")."""
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

def smaps():
    """Resident MiB per mapping kind: "<file basename> <perms>" for file mappings (a private
    writable file mapping's relocated pages count here, though the kernel calls them anonymous),
    "anon" for heap, stacks and other anonymous memory."""
    out, key = {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:
                path = parts[5] if len(parts) > 5 else ""
                key = f"{path.rsplit('/', 1)[-1]} {parts[1]}" if path.startswith("/") else "anon"
            elif parts[0] == "Rss:":
                out[key] = out.get(key, 0) + int(parts[1]) / 1024.0
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.05}

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
    "max_ms": round(lat[-1], 3), **{k: round(v, 1) for k, v in rss().items()}, "smaps": smaps(),
}))
