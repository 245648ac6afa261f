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
# The client CA (appliance.ssl.client_certs_mandatory) lives on /data;
# tls-setup makes it there when it is needed.
ln -sfn /data/ecs-ca /app/ecs-ca

# PostgreSQL: the package made the cluster 15/main (16 on noble) in
# /var/lib/postgresql. The image keeps its configuration
# (/etc/postgresql/V/main) but not its data: a cluster made here would give
# every appliance from this image one system identifier and one
# authentication nonce, and make this layer differ between two cold builds.
# The first boot makes the machine's own with initdb on /data/postgresql
# (prepare-postgresql). createcluster.conf (from files/) keeps package
# upgrades from making another cluster.
ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1 ||
    { echo "setup.sh: the postgresql package made no cluster" >&2; exit 1; }
rm -rf /var/lib/postgresql/*/main

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

# No private key in the image: ssl-cert (pulled in by postgresql-common) made
# a snakeoil key and certificate at install time, which every appliance
# built from this tree would share. appliance-snakeoil.service makes the
# machine's own pair at first boot.
rm -f /etc/ssl/private/ssl-cert-snakeoil.key /etc/ssl/certs/ssl-cert-snakeoil.pem
find /etc/ssl/certs -maxdepth 1 -lname ssl-cert-snakeoil.pem -delete

# No SSH host keys in the image: openssh-server made them at install time,
# and every appliance from this tree would share them.
# appliance-ssh-hostkeys.service makes the machine's own at first boot.
rm -f /etc/ssh/ssh_host_*

# nginx: only the status page.
rm -f /etc/nginx/sites-enabled/default
ln -sfn ../sites-available/ecs-appliance /etc/nginx/sites-enabled/ecs-appliance
