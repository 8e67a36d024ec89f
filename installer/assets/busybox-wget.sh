#!/bin/sh
# wget of the clusterkit busybox image. Debian 12's busybox is built without wget's timeout
# option (CONFIG_FEATURE_WGET_TIMEOUT) and crashes with a segmentation fault when given -T:
# take -T N / -TN / --timeout=N / --timeout N here and run busybox's wget under `timeout`.
# This file is what `kubectl exec POD -- wget …` runs; busybox's own sh runs its built-in
# applet instead (there, write `timeout N wget …`).
secs=
n=$#
while [ "$n" -gt 0 ]; do
  a=$1
  shift
  n=$((n - 1))
  case $a in
    -T|--timeout)
      secs=$1
      shift
      n=$((n - 1))
      ;;
    -T*) secs=${a#-T} ;;
    --timeout=*) secs=${a#--timeout=} ;;
    *) set -- "$@" "$a" ;;
  esac
done
if [ -n "$secs" ]; then
  exec /bin/busybox timeout "$secs" /bin/busybox wget "$@"
fi
exec /bin/busybox wget "$@"
