#!/bin/bash
# Startup script of the private-ec2 example: report to the coordinator once the container is up.
set -euo pipefail
until curl -fsS http://localhost/ >/dev/null; do sleep 2; done
echo "worker $(hostname) ready" | systemd-cat -t corral-example
