#!/usr/bin/env bash
# The demo: the local cluster, the CRDs, the operator running as a local process against it, the
# sample MeshInstallation read back from the real API server, and the traffic gates reading a real
# Prometheus that scrapes the traffic simulator (kwok runs no proxies). Everything runs on 127.0.0.1
# and keeps running until `make demo-down`.
#
# usage: DEMO_DIR=… BIN=… hack/demo.sh up|down
set -euo pipefail
cmd=${1:-up}
root=$(cd "$(dirname "$0")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-$root/.demo}
BIN=${BIN:-$root/bin}
export MESHWRIGHT_BIN_DIR=$BIN
# Every command of the demo talks to the demo's cluster and to no other: whatever KUBECONFIG the
# user's shell names (a real cluster, or one that is gone) is replaced for this script and all it
# starts, and each client is also given the file by flag.
KUBECONFIG="$DEMO_DIR/kubeconfig"
export KUBECONFIG
kubectl() { "$BIN/kubectl" --kubeconfig "$DEMO_DIR/kubeconfig" "$@"; }
kubectl_meshwright() { "$BIN/kubectl-meshwright" --kubeconfig "$DEMO_DIR/kubeconfig" "$@"; }

# cluster_answers tells whether the demo's API server serves (a state file alone may be left
# from a machine that has since restarted).
cluster_answers() {
  [ -f "$DEMO_DIR/cluster.json" ] && kubectl get --raw /readyz --request-timeout=5s >/dev/null 2>&1
}

manager_running() {
  local pid
  pid=$(cat "$DEMO_DIR/manager.pid" 2>/dev/null) || return 1
  # The PID must still be our manager (PIDs are reused): its command line names the demo's kubeconfig.
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$DEMO_DIR/kubeconfig"
}

# stop_manager stops the demo's operator and waits until it has exited, so its listeners are
# closed when it returns.
stop_manager() {
  manager_running || return 0
  local pid
  pid=$(cat "$DEMO_DIR/manager.pid")
  kill "$pid"
  for _ in $(seq 50); do manager_running || break; sleep 0.2; done
  if manager_running; then kill -9 "$pid"; fi
  echo ">> operator stopped"
}

# stop_demo stops the operator, then istiod and the cluster's components: only the processes the
# demo started, by PID.
stop_demo() {
  stop_manager
  rm -f "$DEMO_DIR/manager.pid" "$DEMO_DIR/istiod.port"
  "$BIN/localcluster" down --dir "$DEMO_DIR" 2>/dev/null || true
}

case "$cmd" in
up)
  mkdir -p "$DEMO_DIR"
  if cluster_answers; then
    echo ">> local cluster already running in $DEMO_DIR"
  else
    if [ -f "$DEMO_DIR/cluster.json" ]; then
      echo ">> the local cluster in $DEMO_DIR does not answer: stopping what is left of it"
      stop_demo
    fi
    echo ">> starting the local cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok, cert-manager)"
    "$BIN/localcluster" up --dir "$DEMO_DIR" >/dev/null
  fi

  echo ">> installing the MeshInstallation CRD"
  kubectl apply --server-side -f "$root/config/crd/bases" >/dev/null
  kubectl wait --for=condition=Established crd/meshinstallations.meshwright.io --timeout=30s >/dev/null

  if manager_running; then
    echo ">> restarting the operator with the freshly built binary"
    stop_manager >/dev/null
  fi
  echo ">> starting the operator (log: $DEMO_DIR/logs/manager.log)"
  setsid "$BIN/manager" --kubeconfig "$DEMO_DIR/kubeconfig" \
      --metrics-bind-address=127.0.0.1:0 --metrics-secure=false --health-probe-bind-address=127.0.0.1:0 \
      >>"$DEMO_DIR/logs/manager.log" 2>&1 < /dev/null &
  echo $! > "$DEMO_DIR/manager.pid"

  echo ">> creating the teams' namespaces, each with a Deployment: payments, orders (team payments) and storefront, which the sample enrolls, and legacy, which it does not"
  for spec in payments:payments:web orders:payments:web storefront:storefront:web legacy::batch; do
    IFS=: read -r ns team app <<<"$spec"
    kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    [ -z "$team" ] || kubectl label namespace "$ns" team="$team" --overwrite >/dev/null
    kubectl -n "$ns" create deployment "$app" --image="registry.example/$app:1" --replicas=2 --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  done

  echo ">> applying config/samples/"
  kubectl apply -k "$root/config/samples" >/dev/null
  # kwok pods do not run, so istiod's Deployment serves nothing here: Istio's real istiod runs
  # as a local process instead, and the sample's webhooks point at it through the istiod
  # chart's own values. In a real cluster none of this is needed.
  echo ">> pointing the webhooks at a local istiod (pilot-discovery) and starting it"
  [ -s "$DEMO_DIR/istiod.port" ] || "$BIN/localcluster" free-port > "$DEMO_DIR/istiod.port"
  port=$(cat "$DEMO_DIR/istiod.port")
  kubectl patch mesh default --type merge -p "{\"spec\":{\"controlPlane\":{\"values\":$("$BIN/localcluster" istiod-values --port "$port")}}}" >/dev/null
  if ! grep -q '"istiod-' "$DEMO_DIR/cluster.json" 2>/dev/null; then
    "$BIN/localcluster" istiod --dir "$DEMO_DIR" --port "$port"
  fi
  # kwok runs no containers, so no Envoy reports traffic: the traffic simulator (test/trafficsim)
  # stands in for the proxies' telemetry, and a real Prometheus scrapes it. storefront (in the
  # mesh) calls payments; legacy (not in the mesh) calls orders in plaintext. The traffic gates
  # read that Prometheus: payments goes STRICT after its observe window; orders is held at
  # Observe, naming legacy/batch. In a real cluster the proxies report the traffic themselves.
  echo ">> starting the traffic simulator (storefront/web calls payments/web, legacy/batch calls orders/web) and a Prometheus scraping it"
  cat > "$DEMO_DIR/flows.json" <<'FLOWS'
[{"From": {"Namespace": "storefront", "Name": "web"}, "To": {"Namespace": "payments", "Name": "web"}, "Port": 8080, "Protocol": "HTTP", "PerSecond": 5},
 {"From": {"Namespace": "legacy", "Name": "batch"}, "To": {"Namespace": "orders", "Name": "web"}, "Port": 8080, "Protocol": "HTTP", "PerSecond": 2}]
FLOWS
  if ! grep -q '"traffic-simulator"' "$DEMO_DIR/cluster.json" 2>/dev/null; then
    "$BIN/localcluster" traffic --dir "$DEMO_DIR" --flows "$DEMO_DIR/flows.json" >/dev/null
  fi
  if ! grep -q '"prometheus"' "$DEMO_DIR/cluster.json" 2>/dev/null || [ ! -s "$DEMO_DIR/prometheus.url" ]; then
    "$BIN/localcluster" prometheus --dir "$DEMO_DIR" > "$DEMO_DIR/prometheus.url"
  fi
  kubectl patch mesh default --type merge -p "{\"spec\":{\"telemetry\":{\"prometheus\":{\"url\":\"$(cat "$DEMO_DIR/prometheus.url")\"}},\"rollout\":{\"observeTime\":\"20s\",\"bakeTime\":\"20s\"}}}" >/dev/null

  echo ">> waiting for the rollout: mesh CA, control plane, injection, policies, then the namespaces' ladder (payments and orders watch their traffic for 20s at Observe)"
  ready=true
  if ! kubectl wait namespace/payments --for=jsonpath='{.metadata.labels.meshwright\.io/level}'=MutualTLS --timeout=180s >/dev/null ||
     ! kubectl wait namespace/storefront --for=jsonpath='{.metadata.labels.meshwright\.io/level}'=Observe --timeout=30s >/dev/null ||
     ! kubectl wait mesh/default --for=jsonpath='{.status.namespaces.blocked[0].reason}'=PlaintextTraffic --timeout=120s >/dev/null; then
    ready=false
    echo "the sample did not get payments to MutualTLS and orders held by its plaintext caller in time; its status follows, then the operator's log" >&2
  fi

  echo
  echo "\$ kubectl get meshinstallations"
  kubectl get meshinstallations
  echo
  echo "\$ kubectl get mesh default -o custom-columns=…conditions"
  kubectl get mesh default -o go-template='{{printf "%-18s %-8s %-24s %s\n" "CONDITION" "STATUS" "REASON" "MESSAGE"}}{{range .status.conditions}}{{printf "%-18s %-8s %-24s %s\n" .type .status .reason .message}}{{end}}'
  echo
  echo "\$ kubectl get deployments,secrets -n istio-system"
  kubectl get deployments,secrets -n istio-system
  echo
  echo "\$ kubectl get namespaces -L meshwright.io/level,istio.io/rev"
  kubectl get namespaces -L meshwright.io/level,istio.io/rev
  echo
  echo "\$ kubectl get pods -n payments -o custom-columns=…containers   # injected by Istio's istiod"
  kubectl get pods -n payments -o custom-columns=NAME:.metadata.name,CONTAINERS:.spec.containers[*].name,READY:.status.conditions[?\(@.type==\"Ready\"\)].status
  echo
  echo "\$ kubectl get peerauthentications -A"
  kubectl get peerauthentications -A
  echo
  echo "\$ kubectl meshwright namespace payments   # its steps: Observe, then MutualTLS once its traffic showed no plaintext caller"
  kubectl_meshwright namespace payments || true
  echo
  echo "\$ kubectl meshwright namespace orders   # held at Observe: STRICT would refuse legacy/batch, which calls it in plaintext"
  kubectl_meshwright namespace orders || true
  echo
  echo "\$ kubectl meshwright status   # the kubectl plugin (make plugin)"
  kubectl_meshwright status
  echo
  if [ "$ready" = false ]; then
    echo ">> the last lines of $DEMO_DIR/logs/manager.log:" >&2
    tail -n 20 "$DEMO_DIR/logs/manager.log" >&2
    echo "the demo did not reach its end state; the cluster and the operator keep running for a look (make demo-down stops them)" >&2
    exit 1
  fi
  echo "orders stays at Observe while legacy calls it in plaintext. To let it go STRICT, enrol legacy"
  echo "(its pods get the proxy and send mTLS); orders follows after a 20-second window without plaintext:"
  echo "  kubectl label namespace legacy team=storefront"
  echo
  echo "The cluster and the operator keep running. To use them:"
  echo "  export KUBECONFIG=$DEMO_DIR/kubeconfig"
  echo "  export PATH=$BIN:\$PATH   # kubectl v1.37 built with the cluster"
  echo "Stop everything with: make demo-down"
  ;;
down)
  stop_demo
  ;;
*)
  echo "usage: $0 up|down" >&2; exit 2 ;;
esac
