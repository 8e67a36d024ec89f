#!/bin/sh
# {{ host.network.script }} — managed by clusterkit (cluster {{ cluster.name }}, node {{ host.name }}).
# Changes made here are overwritten on the next `clusterkit install`; change cluster.yaml.
#
# host-gw pod network: this node's pods live on {{ host.network.slice }} behind bridge
# {{ host.network.bridge }}; every other node's slice is reached through that node's address.
# Idempotent: prints one "CHANGED: ..." line per change and nothing when all is in place.
# With --check it changes nothing and prints what it would change.
set -eu
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1
# Routes clusterkit manages carry this protocol number, so stale ones can be found and removed
# without touching anyone else's routes.
PROTO={{ host.network.route_proto }}
POD_CIDR={{ host.network.pod_cidr }}
SLICE={{ host.network.slice }}
COMMENT=clusterkit-pod-network

changed() { echo "CHANGED: $*"; }
act() { if [ "$CHECK" = 0 ]; then "$@"; fi; }

# Wanted routes: "<other node's slice> <other node's address>".
WANT_ROUTES='{% for r in host.network.routes %}
{{ r.dst }} {{ r.via }}{% endfor %}
'

while read -r dst via; do
  [ -n "$dst" ] || continue
  if [ -z "$(ip -4 route show exact "$dst" via "$via" proto "$PROTO")" ]; then
    changed "route $dst via $via"
    act ip -4 route replace "$dst" via "$via" proto "$PROTO"
  fi
done <<ROUTES
$WANT_ROUTES
ROUTES

# Routes of nodes that are gone (or whose slice moved).
ip -4 route show proto "$PROTO" | while read -r dst _rest; do
  case "$WANT_ROUTES" in
    *"
$dst "*) ;;
    *) changed "remove route $dst"; act ip -4 route del "$dst" proto "$PROTO" ;;
  esac
done

# iptables rules: masquerade what leaves the pod network from this node's slice, and let
# pod traffic through FORWARD even where its policy is DROP.
ensure_rule() { # table chain rule...
  table=$1; chain=$2; shift 2
  if ! iptables -w -t "$table" -C "$chain" "$@" 2>/dev/null; then
    changed "iptables -t $table -A $chain $*"
    act iptables -w -t "$table" -A "$chain" "$@"
  fi
}
ensure_rule nat POSTROUTING -s "$SLICE" ! -d "$POD_CIDR" -m comment --comment "$COMMENT" -j MASQUERADE
ensure_rule filter FORWARD -s "$POD_CIDR" -m comment --comment "$COMMENT" -j ACCEPT
ensure_rule filter FORWARD -d "$POD_CIDR" -m comment --comment "$COMMENT" -j ACCEPT

# Rules of ours for another slice or pod CIDR (cluster.yaml changed): removed.
for table_chain in nat:POSTROUTING filter:FORWARD; do
  table=${table_chain%%:*}; chain=${table_chain#*:}
  iptables -w -t "$table" -S "$chain" | grep -e "--comment $COMMENT " | while read -r rule; do
    case "$rule" in
      "-A POSTROUTING -s $SLICE ! -d $POD_CIDR "*) ;;
      "-A FORWARD -s $POD_CIDR "*|"-A FORWARD -d $POD_CIDR "*) ;;
      *)
        changed "iptables -t $table $rule (stale)"
        # shellcheck disable=SC2086 # the rule is iptables words
        act iptables -w -t "$table" -D ${rule#-A }
        ;;
    esac
  done
done
