#!/bin/sh
# Runs in the tree after the packages and files of layer 30-appliance.
set -eu

# The app user and the appliance's config directories (the agent writes
# /app/.ssh and the flag files at first boot).
if ! getent passwd app >/dev/null; then
    useradd --system --user-group --home-dir /app --no-create-home \
        --shell /bin/bash --comment "ECS appliance" app
fi
install -d -o app -g app -m 0755 /app /app/etc /app/etc/tags /app/etc/flags /app/etc/hooks

# PostgreSQL: the package made a cluster in /var/lib/postgresql. Drop it: its
# system identifier is random (the image would not be reproducible) and the
# cluster belongs on /data, where the first boot creates it
# (prepare-postgresql). createcluster.conf (from files/) keeps package
# upgrades from making a new one.
for conf in /etc/postgresql/*/*/postgresql.conf; do
    [ -f "$conf" ] || continue
    dir=${conf%/postgresql.conf}
    name=${dir##*/}
    ver=${dir%/*}
    ver=${ver##*/}
    pg_dropcluster "$ver" "$name"
done

# appliance.service needs this distribution's PostgreSQL (15 on bookworm,
# 16 on noble): name the instance here, once.
ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
[ -x "/usr/lib/postgresql/$ver/bin/initdb" ] || { echo "setup.sh: no initdb for PostgreSQL $ver" >&2; exit 1; }
mkdir -p /etc/systemd/system/appliance.service.d
cat > /etc/systemd/system/appliance.service.d/postgresql.conf <<UNIT
# Written by layers/30-appliance/setup.sh: this tree's PostgreSQL is $ver.
[Unit]
Requires=postgresql@$ver-main.service
After=postgresql@$ver-main.service
UNIT

# nginx: only the status page.
rm -f /etc/nginx/sites-enabled/default
ln -sfn ../sites-available/ecs-appliance /etc/nginx/sites-enabled/ecs-appliance
