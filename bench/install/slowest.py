#!/usr/bin/env python3
"""Prints the N slowest tasks (default 10) of `install --events` logs as a markdown table.

Usage: slowest.py [-n N] EVENTS.jsonl...
Each row is one task (or handler) on one host: its phase's playbook, name, status, duration
and remote commands. Fact gathering is listed too (it holds the SSH connection set-up).
"""
import json
import sys

def main():
    args = sys.argv[1:]
    n = 10
    if args[:1] == ["-n"]:
        n, args = int(args[1]), args[2:]
    rows = []
    for path in args:
        with open(path) as f:
            for line in f:
                e = json.loads(line)
                if e.get("kind") in ("task", "handler", "facts"):
                    rows.append(e)
    rows.sort(key=lambda e: e["duration_ms"], reverse=True)
    print("| s | host | playbook | task | status | commands |")
    print("|---:|---|---|---|---|---:|")
    for e in rows[:n]:
        task = e["task"] + (" (handler)" if e["kind"] == "handler" else "")
        print(f"| {e['duration_ms'] / 1000:.2f} | {e['host']} | {e['playbook']} | {task} "
              f"| {e['status']} | {e['commands']} |")

if __name__ == "__main__":
    main()
