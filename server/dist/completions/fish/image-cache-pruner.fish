complete -c image-cache-pruner -l config-file -d 'A Glance configuration file (glance-api.conf, glance-cache.conf); repeatable, later files win. /etc/glance/glance-api.conf and /etc/glance/glance-cache.conf are read first when present' -r -F
complete -c image-cache-pruner -l config-dir -d 'A directory of *.conf files read after the --config-file files, sorted by name (oslo.config\'s --config-dir); repeatable' -r -F
complete -c image-cache-pruner -s H -l host -d 'The local API server, used when it holds the cache' -r
complete -c image-cache-pruner -s p -l port -d 'The local API server\'s port (default: bind_port from the configuration files, else 9292)' -r
complete -c image-cache-pruner -l os-auth-token -d 'The admin token for the API server. Without it, the identity in the configuration files logs in to Keystone: admin_user, admin_password, admin_tenant_name and auth_url in [DEFAULT], else keystoneauth\'s options in [keystone_authtoken]' -r
complete -c image-cache-pruner -s h -l help -d 'Print help'
complete -c image-cache-pruner -s V -l version -d 'Print version'
