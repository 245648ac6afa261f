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
# The exporters of layer 50-metrics answer on docker's bridge address too,
# for a monitoring container of the application (net.ipv4.ip_nonlocal_bind
# lets them bind before docker made the bridge; appliance-bridge-guard
# keeps the address from other interfaces). An exporter that takes one
# address only (bookworm's nginx exporter, 0.11) is proxied by nginx
# instead (/etc/nginx/conf.d/ecs-appliance-bridge-exporters.conf).
bridge=172.17.0.1
proxied=""
for e in node:9100 nginx:9113 postgres:9187; do
    name=${e%%:*} port=${e#*:}
    def=/etc/default/prometheus-$name-exporter
    [ -f "$def" ] || continue
    if "/usr/bin/prometheus-$name-exporter" --help 2>&1 | grep -q -- '--web.listen-address=.* \.\.\.'; then
        sed -i "s|--web.listen-address=127.0.0.1:$port\\([ \"]\\)|--web.listen-address=127.0.0.1:$port --web.listen-address=$bridge:$port\\1|" "$def"
        grep -qF -- "--web.listen-address=$bridge:$port" "$def" ||
            { echo "setup.sh: $def: no 127.0.0.1:$port listen address to extend" >&2; exit 1; }
    else
        proxied="$proxied $port"
    fi
done
if [ -n "$proxied" ]; then
    {
        echo "# Written by layers/65-application/setup.sh: exporters that listen on one"
        echo "# address only (127.0.0.1), offered on docker's bridge address by nginx."
        for port in $proxied; do
            printf 'server {\n    listen %s:%s;\n    access_log off;\n    location / { proxy_pass http://127.0.0.1:%s; }\n}\n' "$bridge" "$port" "$port"
        done
    } > /etc/nginx/conf.d/ecs-appliance-bridge-exporters.conf
fi
