"""Summarises one `upgrade apply -o json` run for bench/upgrade/run.sh: the total, each host
step's wall and drain time, and the ready-replica samples (every 0.5 s) below 3."""
import json
import sys

report = json.load(open(sys.argv[1]))
samples = [l.strip() for l in open(sys.argv[2])]
wall = float(sys.argv[4]) - float(sys.argv[3])
print(f"total wall {wall:.1f} s (the roll itself {report['seconds']:.1f} s; the rest is the etcd backup and the readiness report)")
print()
print("| host | step | outcome | wall (s) | drain (s) | evicted |")
print("|---|---|---|---|---|---|")
for h in report["hosts"]:
    evicted = len((h.get("drain") or {}).get("evict", []))
    print(f"| {h['host']} | {h['stage']} | {h['outcome']} | {h['seconds']:.1f} | {h['drain_seconds']:.1f} | {evicted} |")
answered = [s for s in samples if s != ""]
below = [s for s in answered if int(s or 0) < 3]
print()
print(f"ready replicas: {len(answered)} samples answered ({len(samples) - len(answered)} while the API did not), "
      f"{len(below)} below 3 (about {len(below) * 0.5:.1f} s), minimum {min(int(s) for s in answered) if answered else 'n/a'}")
