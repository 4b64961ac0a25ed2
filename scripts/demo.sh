#!/usr/bin/env bash
# The demo needs the daemon (proxy/, cmd/xdproxy) and the AF_XDP data plane
# (bpf/, xsk/), which are not built yet; see README "Status".
echo "demo: the xdproxy daemon is not built yet (the engine in stack/ is; see README, Status)." >&2
exit 1
