# Shared by the bench/backup scripts (sourced, not run): a free loopback port, the processes a
# script started (ended by PID on exit), a throwaway TLS PKI, one etcd member with TLS, a local
# s3s-fs, the loader, and a command run under /usr/bin/time -v with its own peak RSS sampled.
# Limits: single-member etcd on 127.0.0.1 only; the PKI lives two days.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
stop_pids() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

# pki/: a CA, a server certificate for 127.0.0.1 and a client certificate (kept between runs).
bench_pki() {
  [ -f pki/client.crt ] && return 0
  mkdir -p pki && pushd pki >/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > server.ext
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  for n in server client; do
    openssl req -newkey rsa:2048 -nodes -subj /CN=$n -keyout $n.key -out $n.csr 2>/dev/null
    openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile $n.ext -out $n.crt 2>/dev/null
  done
  popd >/dev/null
}

# One etcd member with client TLS, data in ./etcd, until it answers. Sets EP, CTL (etcdctl
# with the client certificate) and ETCD_PID.
start_etcd() {
  local cp pp
  cp=$(free_port); pp=$(free_port)
  EP=https://127.0.0.1:$cp
  etcd --name bench --data-dir "$PWD/etcd" --listen-client-urls $EP --advertise-client-urls $EP \
    --listen-peer-urls http://127.0.0.1:$pp --initial-advertise-peer-urls http://127.0.0.1:$pp \
    --initial-cluster bench=http://127.0.0.1:$pp --cert-file pki/server.crt --key-file pki/server.key \
    --trusted-ca-file pki/ca.crt --client-cert-auth --quota-backend-bytes 8589934592 \
    --max-request-bytes 2097152 >etcd.log 2>&1 &
  ETCD_PID=$!
  PIDS+=($ETCD_PID)
  CTL=(etcdctl --endpoints=$EP --cacert=pki/ca.crt --cert=pki/client.crt --key=pki/client.key)
  export ETCDCTL_API=3
  for _ in $(seq 100); do "${CTL[@]}" endpoint health >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "etcd did not answer (etcd.log)" >&2; return 1
}

# s3s-fs serving ./s3 (bucket "bench") until it answers. Sets SP, S3S_PID and the AWS_*
# variables the S3 clients read.
start_s3s() {
  SP=$(free_port)
  mkdir -p s3/bench
  export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret0123456789 AWS_REGION=us-east-1
  export AWS_ENDPOINT_URL=http://127.0.0.1:$SP AWS_EC2_METADATA_DISABLED=true
  "$S3S" --host 127.0.0.1 --port $SP --access-key $AWS_ACCESS_KEY_ID --secret-key $AWS_SECRET_ACCESS_KEY s3 >s3s.log 2>&1 &
  S3S_PID=$!
  PIDS+=($S3S_PID)
  for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$SP/ && return 0; sleep 0.1; done
  echo "s3s-fs did not answer (s3s.log)" >&2; return 1
}

# Unless etcd's database already holds about $1 MiB (BENCH_DIR kept from an earlier run): $1
# values of 1 MiB of base64 text (compresses to ~75%, like mixed data) under bench/, with CTL;
# four writers.
fill_etcd() {
  local db t0
  db=$("${CTL[@]}" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
  [ "$db" -lt $(($1 * 1024 * 1024 * 9 / 10)) ] || return 0
  t0=$(date +%s)
  echo "loading ~$1 MiB into etcd…" >&2
  seq 0 $(($1 - 1)) | xargs -P 4 -I{} sh -c \
    'head -c 786432 /dev/urandom | base64 -w0 | "$@" put bench/key-{} >/dev/null' _ "${CTL[@]}"
  echo "loaded $1 values in $(( $(date +%s) - t0 )) s" >&2
}

# OUT ERR command…: runs `/usr/bin/time -v command >OUT 2>ERR`, sampling the command's own peak
# RSS (VmHWM; /usr/bin/time's figure is the largest of it and its children) every 0.2 s into
# HWM (KiB). Returns the command's exit status.
run_sampled() {
  local out=$1 err=$2; shift 2
  /usr/bin/time -v "$@" >"$out" 2>"$err" &
  local tpid=$! child="" v
  HWM=0
  while kill -0 $tpid 2>/dev/null; do
    [ -n "$child" ] || child=$(pgrep -P $tpid | head -1 || true)
    if [ -n "$child" ]; then
      v=$(awk '/VmHWM/{print $2}' /proc/$child/status 2>/dev/null || true)
      [ -n "$v" ] && [ "$v" -gt "$HWM" ] && HWM=$v
    fi
    sleep 0.2
  done
  wait $tpid
}
