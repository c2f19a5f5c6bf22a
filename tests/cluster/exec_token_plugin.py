"""A kubeconfig exec credential plugin for the auth tests: every run issues a new short-lived ServiceAccount
token (TokenRequest, 600 s: the API server's minimum) bound to a new Secret, and appends that Secret's name
and the token to $PLUGIN_LOG, so the test can count runs and revoke a token by deleting its Secret.

Environment (set in the kubeconfig's exec.env): PLUGIN_SERVER, PLUGIN_ADMIN_TOKEN_FILE, PLUGIN_NAMESPACE,
PLUGIN_SERVICE_ACCOUNT, PLUGIN_LOG, and optionally PLUGIN_EXPIRES_IN (seconds) to claim an earlier
expirationTimestamp than the token's real one.
"""

from __future__ import annotations

import datetime
import json
import os
import ssl
import sys
import urllib.request
import uuid
from typing import Any


def call(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with open(os.environ["PLUGIN_ADMIN_TOKEN_FILE"]) as fh:
        token = fh.read().strip()
    req = urllib.request.Request(
        os.environ["PLUGIN_SERVER"] + path, data=json.dumps(body).encode(), method=method
    )
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30, context=ssl._create_unverified_context()) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def main() -> None:
    info = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}")
    if info.get("spec", {}).get("interactive") is not False:
        sys.exit("expected a non-interactive KUBERNETES_EXEC_INFO")
    ns, sa = os.environ["PLUGIN_NAMESPACE"], os.environ["PLUGIN_SERVICE_ACCOUNT"]
    secret = call(
        "POST",
        f"/api/v1/namespaces/{ns}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"exec-{uuid.uuid4().hex[:10]}"}},
    )
    meta = secret["metadata"]
    bound = {"kind": "Secret", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]}
    status = call(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600, "boundObjectRef": bound},
        },
    )["status"]
    expires = status["expirationTimestamp"]
    if os.environ.get("PLUGIN_EXPIRES_IN"):
        ahead = datetime.timedelta(seconds=float(os.environ["PLUGIN_EXPIRES_IN"]))
        when = datetime.datetime.now(datetime.UTC) + ahead
        expires = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(os.environ["PLUGIN_LOG"], "a") as log:
        log.write(f"{meta['name']} {status['token']}\n")
    print(
        json.dumps(
            {
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": {"token": status["token"], "expirationTimestamp": expires},
            }
        )
    )


if __name__ == "__main__":
    main()
