"""A leader-election candidate as its own process, so a test can SIGSTOP/SIGCONT it for real.

Usage: python -m tests.kube.lease_candidate KUBECONFIG NAMESPACE LEASE IDENTITY
Prints one word per line on stdout: "leading", "stopped", "lost"; exits 3 after losing the lease.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from controller.kube.client import KubeClient
from controller.kube.leaderelection import LeaderElectionConfig, LeaderElector, LeadershipLost


def say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


async def main(kubeconfig: str, namespace: str, lease: str, identity: str) -> int:
    client = await KubeClient.from_kubeconfig(kubeconfig)
    config = LeaderElectionConfig(namespace, lease, identity, lease_duration=3.0, renew_deadline=2.0,
                                  retry_period=0.5)

    async def lead() -> None:
        say("leading")
        await asyncio.Event().wait()

    elector = LeaderElector(client, config, on_started_leading=lead,
                            on_stopped_leading=lambda: say("stopped"))
    try:
        await elector.run()
    except LeadershipLost:
        say("lost")
        return 3
    finally:
        await client.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
