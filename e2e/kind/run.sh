#!/usr/bin/env bash
# `make e2e`: the e2e suite against a kind cluster running the real image.
#   1. kind create cluster (dual-stack, e2e/kind/kind-config.yaml)
#   2. docker build the controller image, kind load it into the nodes
#   3. kubectl apply -k manifests/, deploy Jaeger all-in-one, point the controller's OTLP exporter at it
#   4. smoke test of the in-cluster Deployment: sample pools + Services get IPs, a reconcile trace arrives
#   5. scale the Deployment to 0 and run the same suite as `make e2e-local` with KUBECONFIG pointing at kind
#      (the suite starts its own controller processes, which must not race an in-cluster leader)
#   6. tear everything down (unless STABLELB_KEEP_CLUSTER=1)
# Needs docker, kind and kubectl on PATH. Knobs: STABLELB_KIND_CLUSTER, STABLELB_IMAGE, STABLELB_KIND_NODE_IMAGE,
# STABLELB_JAEGER_IMAGE, STABLELB_KEEP_CLUSTER, PYTHON, PYTEST_ARGS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${STABLELB_KIND_CLUSTER:-stablelb-e2e}
IMAGE=${STABLELB_IMAGE:-stablelb-controller:dev}
NODE_IMAGE=${STABLELB_KIND_NODE_IMAGE:-}
JAEGER_IMAGE=${STABLELB_JAEGER_IMAGE:-jaegertracing/jaeger:2.13.0}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
PYTEST_ARGS=${PYTEST_ARGS:-}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stablelb-kind.XXXXXX")
KUBECONFIG_FILE="$WORK/kubeconfig"
PORT_FORWARD_PID=""

say() { printf '[stablelb e2e] %s\n' "$*" >&2; }

for tool in docker kind kubectl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "$tool is required for 'make e2e' (see docs/local-control-plane.md); 'make e2e-local' needs none of them"
    exit 3
  fi
done
if ! docker info >/dev/null 2>&1; then
  say "docker is installed but no Docker engine answers; 'make e2e-local' runs the suite without one"
  exit 3
fi

cleanup() {
  local rc=$?
  if [[ -n "$PORT_FORWARD_PID" ]]; then kill "$PORT_FORWARD_PID" 2>/dev/null || true; fi
  if [[ $rc -ne 0 ]]; then
    say "failed (exit $rc); controller logs:"
    kubectl --kubeconfig "$KUBECONFIG_FILE" -n kube-system logs -l app.kubernetes.io/name=stablelb-controller \
      --tail=100 --prefix 2>/dev/null || true
  fi
  if [[ "${STABLELB_KEEP_CLUSTER:-0}" == "1" ]]; then
    say "keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER); kubeconfig: $KUBECONFIG_FILE"
  else
    say "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

say "creating kind cluster $CLUSTER"
create_args=(create cluster --name "$CLUSTER" --config "$ROOT/e2e/kind/kind-config.yaml" --wait 180s
  --kubeconfig "$KUBECONFIG_FILE")
if [[ -n "$NODE_IMAGE" ]]; then create_args+=(--image "$NODE_IMAGE"); fi
kind "${create_args[@]}"
export KUBECONFIG="$KUBECONFIG_FILE"

say "building $IMAGE"
docker build -t "$IMAGE" "$ROOT"
say "loading $IMAGE into the kind nodes"
kind load docker-image "$IMAGE" --name "$CLUSTER"

say "applying manifests/"
kubectl apply -k "$ROOT/manifests/"
kubectl wait --for=condition=Established crd/ippools.stablelb.io --timeout=60s
if [[ "$IMAGE" != "stablelb-controller:dev" ]]; then
  kubectl -n kube-system set image deployment/stablelb-controller controller="$IMAGE"
fi

say "deploying Jaeger ($JAEGER_IMAGE)"
sed "s|JAEGER_IMAGE|$JAEGER_IMAGE|" "$ROOT/e2e/kind/jaeger.yaml" | kubectl apply -f -
kubectl -n stablelb-observability rollout status deployment/jaeger --timeout=180s
kubectl -n kube-system set env deployment/stablelb-controller \
  OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger.stablelb-observability.svc:4318 \
  OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_SERVICE_NAME=stablelb-controller
kubectl -n kube-system rollout status deployment/stablelb-controller --timeout=180s

# Jaeger's query API and OTLP/HTTP receiver on this machine's loopback only (the suite's own controller
# processes send their spans there).
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
QUERY_PORT=$(free_port)
OTLP_PORT=$(free_port)
kubectl -n stablelb-observability port-forward --address 127.0.0.1 svc/jaeger \
  "$QUERY_PORT:16686" "$OTLP_PORT:4318" >"$WORK/port-forward.log" 2>&1 &
PORT_FORWARD_PID=$!
export STABLELB_JAEGER_QUERY_URL="http://127.0.0.1:$QUERY_PORT"
export STABLELB_JAEGER_OTLP_URL="http://127.0.0.1:$OTLP_PORT"
for _ in $(seq 1 30); do
  if curl -fsS "$STABLELB_JAEGER_QUERY_URL/api/services" >/dev/null 2>&1; then break; fi
  sleep 1
done

say "smoke test: sample pools and Services through the in-cluster controller"
kubectl apply -f "$ROOT/manifests/samples/"
for svc in web web-dual dns dns-tcp; do
  kubectl -n default wait --for=jsonpath='{.status.loadBalancer.ingress[0].ip}' "service/$svc" --timeout=120s
done
kubectl -n default get services -o wide
for _ in $(seq 1 30); do
  if curl -fsS "$STABLELB_JAEGER_QUERY_URL/api/services" | grep -q stablelb-controller; then break; fi
  sleep 2
done
curl -fsS "$STABLELB_JAEGER_QUERY_URL/api/services" | grep -q stablelb-controller \
  || { say "no trace from stablelb-controller reached Jaeger"; exit 1; }
kubectl delete -f "$ROOT/manifests/samples/" --wait=false

say "running the e2e suite against kind"
kubectl -n kube-system scale deployment/stablelb-controller --replicas=0
kubectl -n kube-system wait --for=delete pod -l app.kubernetes.io/name=stablelb-controller --timeout=120s \
  || true  # nothing to wait for when the pods are already gone
cd "$ROOT"
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of words on purpose
STABLELB_E2E_EXTERNAL=1 "$PYTHON" -m pytest e2e $PYTEST_ARGS
say "e2e against kind passed"
