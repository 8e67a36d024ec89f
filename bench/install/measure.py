#!/usr/bin/env python3
"""Runs `clusterkit install --phase P` for each phase given and prints one JSON line:
wall seconds, remote commands (the engine's count, summed over hosts), tasks changed, the
client's CPU seconds (clusterkit itself), the sandbox nodes' CPU seconds (every process of
every node: sshd, shells, systemctl, dpkg, containerd — they run on this machine's cores),
and the load average (other work on the machine competes for the same cores).

The nodes' CPU is the sum, over the live processes descended from each node's systemd-nspawn
(nodes/*/nspawn.pid next to cluster.yaml), of utime + stime + cutime + cstime: a process that
exited was reaped by a live ancestor, whose cutime/cstime then hold its time, so every CPU
second spent in a node is counted once (zombies not yet reaped aside).

Usage: measure.py CLUSTERKIT CLUSTER_YAML EVENTS_PREFIX LABEL... -- [PHASE...]
Without a PHASE, one full `install` (every phase, then the readiness report, which must say
ready) writing EVENTS_PREFIX.jsonl. Prints a markdown table row: the LABELs, then the figures
(see run.sh for the header).
"""
import glob
import json
import os
import resource
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")

def nodes_cpu_secs(sandbox_dir):
    roots = set()
    for pid_file in glob.glob(os.path.join(sandbox_dir, "nodes", "*", "nspawn.pid")):
        with open(pid_file) as f:
            roots.add(int(f.read().strip()))
    parent, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(entry)
        parent[pid] = int(fields[1])
        ticks[pid] = sum(int(x) for x in fields[11:15])
    total = 0
    for pid, t in ticks.items():
        p, hops = pid, 0
        while p > 1 and p not in roots and hops < 64:
            p, hops = parent.get(p, 0), hops + 1
        if p in roots:
            total += t
    return total / HZ

def main():
    ck, cfg, events, *rest = sys.argv[1:]
    labels, phases = rest[: rest.index("--")], rest[rest.index("--") + 1:]
    sandbox = os.path.dirname(os.path.abspath(cfg))
    wall0, nodes0 = time.monotonic(), nodes_cpu_secs(sandbox)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    commands = changed = 0
    per_host = {}
    runs = [["--phase", p, "--events", f"{events}-{p}.jsonl"] for p in phases]
    for args in runs or [["--events", f"{events}.jsonl"]]:
        out = subprocess.run([ck, "-f", cfg, "-o", "json", "install", *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            sys.exit(f"install {' '.join(args[:2])} failed ({out.returncode})")
        report = json.loads(out.stdout)
        if not phases and not report.get("readiness", {}).get("ok"):
            sys.exit(f"the readiness report is missing or not ok: {report.get('readiness')}")
        for host, h in report["hosts"].items():
            commands += h["commands"]
            changed += h["changed"]
            per_host[host] = per_host.get(host, 0) + h["commands"]
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - wall0
    figures = [
        f"{wall:.2f}",
        f"{commands} ({'/'.join(map(str, sorted(set(per_host.values()))))} per host)",
        str(changed),
        f"{ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime:.2f}",
        f"{nodes_cpu_secs(sandbox) - nodes0:.2f}",
        f"{os.getloadavg()[0]:.1f}",
    ]
    print("| " + " | ".join(labels + figures) + " |")

if __name__ == "__main__":
    main()
