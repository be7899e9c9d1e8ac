"""``[core] hostname_callable`` for several workers on one test machine: the name of the node each
worker stands for (DINGBOT_E2E_NODE_HOSTNAME in its environment), as each pod or VM of a real
deployment has its own. Loaded as ``node_hostname.hostname`` (this folder is on PYTHONPATH)."""

import os
import socket


def hostname() -> str:
    return os.environ.get("DINGBOT_E2E_NODE_HOSTNAME") or socket.getfqdn()
