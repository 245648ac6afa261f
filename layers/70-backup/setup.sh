#!/bin/sh
# Layer 70-backup: the profile's parent is root's alone; the timer is never
# enabled in the tree (appliance-backup-setup.service starts it when the env
# configures backups).
set -eu
install -d -o root -g root -m 0700 /root/.duply
command -v duply >/dev/null || { echo "setup.sh: duply is missing" >&2; exit 1; }
command -v duplicity >/dev/null || { echo "setup.sh: duplicity is missing" >&2; exit 1; }
if [ "$(systemctl is-enabled appliance-backup.timer 2>/dev/null || true)" = enabled ]; then
    echo "setup.sh: appliance-backup.timer is enabled" >&2
    exit 1
fi
