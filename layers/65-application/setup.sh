#!/bin/sh
# Layer 65-application: docker and containerd start when the application
# does (/usr/lib/ecs-appliance/application start), not at every boot: a
# machine without an application pays nothing for them.
set -eu
systemctl disable docker.service docker.socket containerd.service 2>/dev/null || true
for u in docker.service docker.socket containerd.service; do
    if systemctl is-enabled --quiet "$u" 2>/dev/null; then
        echo "setup.sh: $u is still enabled" >&2
        exit 1
    fi
done
# The checkout and the compose file's directory: root's (git refuses a
# repository another user owns; the application script checks both).
install -d -o root -g root -m 0755 /app/etc/ecs
install -d -o root -g root -m 0700 /etc/ecs-appliance/application
