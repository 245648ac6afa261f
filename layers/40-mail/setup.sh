#!/bin/sh
# Runs in the tree after the packages and files of layer 40-mail: postfix's
# settings that do not depend on the env (mail-setup writes the others at
# boot).
set -eu

# The package's postinst named the build host in /etc/mailname and
# myhostname: every machine writes its own at boot.
rm -f /etc/mailname
postconf -e \
    "myhostname = localhost" \
    "mydestination = localhost" \
    "inet_interfaces = all" \
    "inet_protocols = all" \
    "mynetworks = 127.0.0.0/8 [::1]/128 172.16.0.0/12" \
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
    "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination" \
    "smtpd_tls_cert_file = /etc/ecs-appliance/tls/server.crt" \
    "smtpd_tls_key_file = /etc/ecs-appliance/tls/server.key" \
    "smtpd_tls_security_level = may" \
    "smtp_tls_security_level = may" \
    "smtp_tls_CApath = /etc/ssl/certs" \
    "smtpd_milters =" \
    "non_smtpd_milters ="
# SMTPS on 465: the same smtpd, TLS from the first byte.
postconf -M "smtps/inet=smtps inet n - y - - smtpd"
postconf -P "smtps/inet/smtpd_tls_wrappermode=yes"
# Debian's postinst may have built the alias database from the build
# host's view; rebuild it in the tree.
newaliases
