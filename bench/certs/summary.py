"""Summarises one `certs rotate-ca --ca all -v -o json` run for bench/certs/run.sh.

Usage: summary.py OUT START END RC READY_AFTER NAME=ADDR...
OUT holds rotate.json (stdout), rotate.log (stderr, `-v`), the poller's *.samples (poll.py),
nodes.txt (`name Ready-status` after the rotation) and post.json (`exec -o json` of run.sh's
per-node check, absent without the load balancer).

Prints: the total and per-stage wall time (a stage ends at its `stage done` log line; the
preparation at the last `new CA generated`), each stage's hosts and restarts; per API server
(and through admin.conf) the not-ready windows: a window runs from its first failed sample to
the next answered one, so it is exact to one sample interval (0.25 s, more while a request
waits out its 1 s timeout); any moment when no API server answered ready; the Nodes and each
node's load balancer after the rotation."""
import json
import os
import re
import sys
from datetime import datetime

out, start, end, rc, ready_after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
apis = [a.split("=", 1)[0] for a in sys.argv[6:]]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_json(name, default):
    try:
        return json.load(open(os.path.join(out, name)))
    except (OSError, ValueError):
        return default


# --- the rotation's stages, timed by the log -------------------------------------------------
log = [ANSI.sub("", l.rstrip("\n")) for l in open(os.path.join(out, "rotate.log"), errors="replace")]


def ts(line):
    m = re.match(r"\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line)
    if not m:
        return None
    return datetime.fromisoformat(m.group(1) + "+00:00").timestamp()


marks = [("prepare", start)]
for line in log:
    t = ts(line)
    if t is None:
        continue
    if "new CA generated" in line:
        marks = [m for m in marks if m[0] != "prepare-done"] + [("prepare-done", t)]
    m = re.search(r'stage done.*stage="?([a-z-]+)', line)
    if m:
        marks.append((m.group(1), t))
bounds = []  # (stage, from, to)
prev = start
for label, t in marks[1:]:
    bounds.append(("prepare" if label == "prepare-done" else label, prev, t))
    prev = t
failed_stage = None  # filled below from the report


def stage_at(t):
    for label, a, b in bounds:
        if a <= t < b:
            return label
    return "before" if t < start else "after"


report = load_json("rotate.json", {"stages": []})
by_stage = {s["stage"]: s for s in report.get("stages", [])}
failed_stage = next((s["stage"] for s in report.get("stages", []) if s.get("status") == "failed"), None)
bounds.append(("rest (exit)" if rc == 0 else failed_stage or "until the failure", prev, end))
print(f"rotation wall {end - start:.1f} s, exit {rc}")
print()
print("| stage | wall (s) | status | hosts ok | restarts | re-issued |")
print("|---|---|---|---|---|---|")
for label, a, b in bounds:
    s = by_stage.get(label, {})
    hosts = s.get("hosts", [])
    ok = sum(1 for h in hosts if h.get("status") == "ok")
    restarts = sum(len(h.get("restarted", [])) for h in hosts)
    print(f"| {label} | {b - a:.1f} | {s.get('status', '-')} | {f'{ok}/{len(hosts)}' if hosts else '-'} | "
          f"{restarts if hosts else '-'} | {len(s.get('renewed', [])) if s else '-'} |")
failed = [(s["stage"], h["host"], h.get("error")) for s in report.get("stages", []) for h in s.get("hosts", []) if h.get("status") == "failed"]
if rc != 0 or failed:
    print()
    print("**the rotation failed**:")
    for stage, host, err in failed:
        print(f"- stage {stage}, host {host}: {err}")
    print()
    print("stderr (tail):")
    print()
    print("```")
    print("\n".join([l for l in log if not re.search(r" (INFO|DEBUG) ", l)][-15:]))
    print("```")

# --- readiness windows ------------------------------------------------------------------------


def samples(name):
    rows = []
    for line in open(os.path.join(out, name + ".samples")):
        parts = line.rstrip("\n").split(" ", 2)
        rows.append((float(parts[0]), parts[1] == "1", parts[2] if len(parts) > 2 else ""))
    return rows


def kind(detail):
    """A failed sample's reason, short: refused, timeout, TLS, or the HTTP status."""
    d = detail.lower()
    for word, k in [("refused", "refused"), ("timeout", "timeout"), ("deadline", "timeout"),
                    ("x509", "TLS"), ("certificate", "TLS"), ("ssl", "TLS"),
                    ("internalerror", "500"), ("forbidden", "403"), ("unauthorized", "401")]:
        if word in d:
            return k
    return detail[:40]


def windows(rows):
    """(first failed sample, next ready sample or None, samples, details) per window."""
    w, cur = [], None
    for t, ok, detail in rows:
        if not ok and cur is None:
            cur = [t, None, 0, set()]
        if not ok:
            cur[2] += 1
            cur[3].add(kind(detail))
        if ok and cur is not None:
            cur[1] = t
            w.append(cur)
            cur = None
    if cur is not None:
        w.append(cur)
    return w


print()
print("| API server | samples | not ready | windows | longest (s) | all windows: start after the rotation's start (s) + length (s), stage |")
print("|---|---|---|---|---|---|")
series = {}
for name in apis + ["kubectl"]:
    rows = samples(name)
    if name != "kubectl":
        series[name] = rows
    w = windows(rows)
    length = lambda x: (x[1] if x[1] is not None else rows[-1][0]) - x[0]
    longest = max((length(x) for x in w), default=0.0)
    listing = "; ".join(
        f"{x[0] - start:+.1f} +{length(x):.1f}{'' if x[1] is not None else ' (still not ready)'} {stage_at(x[0])} [{', '.join(sorted(x[3])).replace('|', '/')}]"
        for x in w) or "-"
    label = name if name != "kubectl" else "admin.conf endpoint (kubectl get --raw /readyz)"
    print(f"| {label} | {len(rows)} | {sum(1 for r in rows if not r[1])} | {len(w)} | {longest:.1f} | {listing} |")

# Moments with no API server ready: each server's state is its latest sample's.
events = sorted((t, n, ok) for n, rows in series.items() for t, ok, _ in rows)
state, none_ready, since = {}, [], None
for t, n, ok in events:
    state[n] = ok
    if len(state) < len(series):
        continue
    down = not any(state.values())
    if down and since is None:
        since = t
    if not down and since is not None:
        none_ready.append((since, t))
        since = None
if since is not None:
    none_ready.append((since, events[-1][0]))
print()
if not none_ready:
    print(f"no API server ready: never (at every sample at least one of {len(series)} answered /readyz 200)")
else:
    longest = max(b - a for a, b in none_ready)
    print(f"no API server ready: {len(none_ready)} time(s), longest {longest:.1f} s, in total {sum(b - a for a, b in none_ready):.1f} s: "
          + "; ".join(f"{a - start:+.1f} +{b - a:.1f} {stage_at(a)}" for a, b in none_ready))

# --- after the rotation -----------------------------------------------------------------------
nodes = [l.split() for l in open(os.path.join(out, "nodes.txt")) if l.strip()]
print()
print(f"Nodes Ready after the rotation: {sum(1 for l in nodes if l[-1:] == ['True'])}/{len(nodes)}"
      + (f" ({ready_after} s after it ended)" if ready_after >= 0 else " (NOT all Ready within 60 s)")
      + (": " + ", ".join(" ".join(l) for l in nodes) if ready_after != 0 else ""))
post = load_json("post.json", None)
if post is not None:
    print()
    print("| node | haproxy | /readyz via 127.0.0.1:16443 (6 tries) | backends DOWN/UP during the rotation (s after its start) | reloads | no backend left: times, longest (s) |")
    print("|---|---|---|---|---|---|")
    for h in post:
        lines = (h.get("stdout") or "").splitlines()
        codes = [l.split()[1] for l in lines if l.startswith("lb ")]
        active = next((l.split()[1] for l in lines if l.startswith("haproxy ")), h.get("error") or "?")
        changes, reloads, empty, since = [], 0, [], None
        for l in lines:
            m = re.match(r"(\d+\.\d+) ", l)
            t = float(m.group(1)) if m else None
            rel = f" {t - start:+.1f}" if t is not None else ""
            c = re.search(r"Server kube-apiserver/(\S+) is (UP|DOWN)", l)
            if c:
                changes.append(f"{c.group(1)} {c.group(2)}{rel}")
                if c.group(2) == "UP" and since is not None and t is not None:
                    empty.append(t - since)
                    since = None
            if "no server available" in l and t is not None:
                since = t
            if "Reloaded haproxy" in l:
                reloads += 1
        if since is not None:
            empty.append(float("nan"))
        gaps = f"{len(empty)}, {max(empty):.1f}" if empty else "0"
        print(f"| {h['host']} | {active} | {' '.join(codes) or '-'} | {', '.join(changes) or 'none'} | {reloads} | {gaps} |")
