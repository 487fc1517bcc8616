#!/usr/bin/env bash
# Runs a real Keystone for the tests, in the foreground, until its parent process exits.
#
#   tests/openstack/keystone.sh VENV DIR PORT [TOKEN_EXPIRATION_SECONDS]
#
# VENV is what install.sh printed. DIR is an empty working directory (configuration, SQLite
# database, Fernet keys, log). Keystone listens on 127.0.0.1:PORT under uWSGI; the admin user is
# "admin" with password "admin-secret" in project "admin", and the catalog's identity endpoint is
# http://127.0.0.1:PORT/v3 in region RegionOne. Prints "ready" once Keystone answers.
set -euo pipefail

venv=$1 dir=$2 port=$3 expiration=${4:-3600}
parent=$PPID
mkdir -p "$dir/fernet-keys" "$dir/credential-keys"
cat >"$dir/keystone.conf" <<CONF
[DEFAULT]
log_file = $dir/keystone.log
[database]
connection = sqlite:///$dir/keystone.db
[token]
provider = fernet
expiration = $expiration
[fernet_tokens]
key_repository = $dir/fernet-keys
[fernet_receipts]
key_repository = $dir/fernet-keys
[credential]
key_repository = $dir/credential-keys
[identity]
password_hash_rounds = 4
# Each uWSGI worker would keep its own in-memory cache of validated tokens, so a revocation made
# through one worker would not be seen by the other at once.
[cache]
enabled = false
CONF

export OS_KEYSTONE_CONFIG_DIR=$dir
manage() { "$venv/bin/keystone-manage" --config-file "$dir/keystone.conf" "$@" >>"$dir/setup.log" 2>&1; }
manage db_sync
manage fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
manage credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
manage bootstrap --bootstrap-password admin-secret \
    --bootstrap-admin-url "http://127.0.0.1:$port/v3" \
    --bootstrap-internal-url "http://127.0.0.1:$port/v3" \
    --bootstrap-public-url "http://127.0.0.1:$port/v3" \
    --bootstrap-region-id RegionOne

# uWSGI's http-socket closes each connection without saying so: say it, or Python clients fail
# on a request sent over a connection they believe is still open.
"$venv/bin/uwsgi" --http-socket "127.0.0.1:$port" --home "$venv" \
    --module 'keystone.wsgi.api:application' --env "OS_KEYSTONE_CONFIG_DIR=$dir" \
    --processes 2 --threads 1 --master --die-on-term --need-app \
    --add-header 'Connection: close' --logto "$dir/uwsgi.log" &
uwsgi=$!
trap 'kill -TERM $uwsgi 2>/dev/null; wait $uwsgi 2>/dev/null; [ -n "${REMOVE_DIR_AT_EXIT:-}" ] && rm -rf "$dir"' EXIT
trap 'exit 0' TERM INT

for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/v3" >/dev/null 2>&1; then
        echo ready
        break
    fi
    kill -0 $uwsgi 2>/dev/null || { echo "uWSGI exited; see $dir/uwsgi.log" >&2; exit 1; }
    sleep 0.1
done

# Live as long as the test process that started us.
while kill -0 "$parent" 2>/dev/null && kill -0 $uwsgi 2>/dev/null; do
    sleep 1
done
