"""Readiness poller for bench/certs/run.sh: one thread per API server asks
https://ADDR:6443/readyz (anonymous, the certificate not verified: the CA changes mid-run, as
`curl -sk --max-time 1` would), and one thread asks `kubectl --kubeconfig ADMIN get --raw
/readyz` (the operator's endpoint, with whatever CA admin.conf holds at that moment), each
about every INTERVAL seconds, until STOPFILE exists.

Usage: poll.py OUTDIR INTERVAL STOPFILE KUBECTL ADMIN NAME=ADDR...
Writes OUTDIR/NAME.samples (and OUTDIR/kubectl.samples): one line per sample,
`<unix time at the request's start> <1 ready | 0 not> <detail>`."""
import http.client
import os
import ssl
import subprocess
import sys
import threading
import time

out_dir, interval, stop, kubectl, admin = sys.argv[1:6]
interval = float(interval)
targets = [a.split("=", 1) for a in sys.argv[6:]]

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def readyz(addr):
    c = http.client.HTTPSConnection(addr, 6443, timeout=1, context=ctx)
    try:
        c.request("GET", "/readyz")
        r = c.getresponse()
        r.read()
        return r.status == 200, str(r.status)
    except Exception as e:  # refused, reset, timeout, TLS: all "not ready"
        return False, type(e).__name__
    finally:
        c.close()


def via_kubectl():
    try:
        p = subprocess.run(
            [kubectl, "--kubeconfig", admin, "--request-timeout=1s", "get", "--raw", "/readyz"],
            capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False, "timeout"
    if p.returncode == 0 and p.stdout.strip() == "ok":
        return True, "ok"
    detail = (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
    return False, detail.replace("\n", " ")[:160]


def loop(name, probe):
    with open(os.path.join(out_dir, name + ".samples"), "w", buffering=1) as f:
        while not os.path.exists(stop):
            t = time.time()
            ok, detail = probe()
            f.write("%.3f %d %s\n" % (t, ok, detail))
            time.sleep(max(0.0, t + interval - time.time()))


threads = [threading.Thread(target=loop, args=(n, lambda a=a: readyz(a))) for n, a in targets]
threads.append(threading.Thread(target=loop, args=("kubectl", via_kubectl)))
for t in threads:
    t.start()
for t in threads:
    t.join()
