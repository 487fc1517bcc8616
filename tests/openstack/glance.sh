#!/usr/bin/env bash
# Runs a real Glance for the tests, behind the tests' Keystone, until its parent process exits.
#
#   tests/openstack/glance.sh VENV DIR PORT KEYSTONE_URL [stock|close|sqlite|noauth]
#
# VENV is what install.sh printed; DIR an empty working directory; KEYSTONE_URL Keystone's
# http://127.0.0.1:PORT/v3, with the user "glance" (password "glance-secret", roles admin and
# service in project "service") that keystone.sh's caller created. Glance listens on
# 127.0.0.1:PORT under uWSGI with the flavor keystone+cachemanagement, SQLite, the filesystem
# store and its own image cache. "stock" (the default) runs Glance and uWSGI as Glance's
# documentation does; "close" adds "Connection: close" to each answer, which Python clients
# talking to it directly need, and turns on [oslo_middleware] enable_proxy_headers_parsing;
# "sqlite" is "close" with the image cache's sqlite driver (cache.db and queue/ in the cache
# directory) instead of Glance's default centralized_db; "noauth" is "stock" without Keystone
# (the flavor cachemanagement: every caller is an admin; KEYSTONE_URL is ignored, pass "-"),
# as benches/compare.py runs it beside the example server.
# Prints "ready" once Glance answers.
set -euo pipefail

venv=$1 dir=$2 port=$3 keystone=$4 mode=${5:-stock}
parent=$PPID
mkdir -p "$dir/images" "$dir/staging" "$dir/tasks" "$dir/image-cache"
cp "$venv/etc/glance/glance-api-paste.ini" "$dir/"
cat >"$dir/glance-api.conf" <<CONF
[DEFAULT]
log_file = $dir/glance-api.log
image_cache_dir = $dir/image-cache
worker_self_reference_url = http://127.0.0.1:$port
enabled_backends = fs:file
[database]
connection = sqlite:///$dir/glance.db
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $dir/images
[os_glance_staging_store]
filesystem_store_datadir = $dir/staging
[os_glance_tasks_store]
filesystem_store_datadir = $dir/tasks
CONF

if [ "$mode" = noauth ]; then
    # No Keystone: the unauthenticated context has no roles; the legacy policy admits it to the
    # image API, and the cache's rules (admin only) are opened to it.
    cat >>"$dir/glance-api.conf" <<CONF
[paste_deploy]
flavor = cachemanagement
config_file = $dir/glance-api-paste.ini
[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
policy_file = $dir/policy.yaml
CONF
    printf '"%s": ""\n' cache_image cache_list cache_delete manage_image_cache \
        >"$dir/policy.yaml"
    mode=stock
else
    cat >>"$dir/glance-api.conf" <<CONF
[paste_deploy]
flavor = keystone+cachemanagement
config_file = $dir/glance-api-paste.ini
[keystone_authtoken]
www_authenticate_uri = $keystone
auth_url = $keystone
auth_type = password
username = glance
password = glance-secret
project_name = service
user_domain_name = Default
project_domain_name = Default
CONF
fi
if [ "$mode" = sqlite ]; then
    printf '[DEFAULT]\nimage_cache_driver = sqlite\n' >>"$dir/glance-api.conf"
    mode=close
fi
if [ "$mode" = close ]; then
    # What the operator guide asks for: Glance builds its URLs from X-Forwarded-Host/-Proto.
    printf '[oslo_middleware]\nenable_proxy_headers_parsing = true\n' >>"$dir/glance-api.conf"
fi

"$venv/bin/glance-manage" --config-file "$dir/glance-api.conf" db_sync >>"$dir/setup.log" 2>&1

extra=()
if [ "$mode" = close ]; then
    extra=(--add-header 'Connection: close')
fi
# One worker: SQLite does not take concurrent writers from two processes (500 "database is
# locked" on an upload while another request writes).
"$venv/bin/uwsgi" --http-socket "127.0.0.1:$port" --home "$venv" \
    --module 'glance.wsgi.api:application' --env "OS_GLANCE_CONFIG_DIR=$dir" \
    --processes 1 --threads 1 --master --die-on-term --need-app --lazy-apps \
    --buffer-size 65535 "${extra[@]}" --logto "$dir/uwsgi.log" &
uwsgi=$!
trap 'kill -TERM $uwsgi 2>/dev/null; wait $uwsgi 2>/dev/null; [ -n "${REMOVE_DIR_AT_EXIT:-}" ] && rm -rf "$dir"' EXIT
trap 'exit 0' TERM INT

for _ in $(seq 1 900); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    if [ "$code" = 300 ] || [ "$code" = 200 ]; then
        echo ready
        break
    fi
    kill -0 $uwsgi 2>/dev/null || { echo "uWSGI exited; see $dir/uwsgi.log" >&2; exit 1; }
    sleep 0.1
done

while kill -0 "$parent" 2>/dev/null && kill -0 $uwsgi 2>/dev/null; do
    sleep 1
done
