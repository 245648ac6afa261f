#!/bin/sh
# Runs in the tree after the packages and files of layer 50-metrics.
set -eu
# appliance-metrics.service needs this tree's PostgreSQL (15 on bookworm,
# 16 on noble), as appliance.service does.
ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
mkdir -p /etc/systemd/system/appliance-metrics.service.d
cat > /etc/systemd/system/appliance-metrics.service.d/postgresql.conf <<UNIT
# Written by layers/50-metrics/setup.sh: this tree's PostgreSQL is $ver.
[Unit]
Requires=postgresql@$ver-main.service
After=postgresql@$ver-main.service
UNIT
