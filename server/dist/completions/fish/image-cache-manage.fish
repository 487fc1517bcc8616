complete -c image-cache-manage -s H -l host -d 'Address of the API host; give it several times to act on every node. Default: the image endpoint of the Keystone catalog when logging in with Keystone (--os-auth-url, --os-cloud), else localhost' -r
complete -c image-cache-manage -s p -l port -d 'Port the API host listens on (default: bind_port from the configuration files, else 9292)' -r
complete -c image-cache-manage -l config-file -d 'A Glance configuration file whose bind_port is the default port; repeatable, later files win. /etc/glance/glance-api.conf and /etc/glance/glance-cache.conf are read first when present' -r -F
complete -c image-cache-manage -l config-dir -d 'A directory of *.conf files read after the --config-file files, sorted by name (oslo.config\'s --config-dir); repeatable' -r -F
complete -c image-cache-manage -l os-cloud -d 'A cloud of clouds.yaml (./clouds.yaml, ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml)' -r
complete -c image-cache-manage -s N -l os-auth-url -d 'Keystone\'s URL' -r
complete -c image-cache-manage -l os-auth-type -d 'password, v3applicationcredential or token (default: from the options given)' -r
complete -c image-cache-manage -s I -l os-username -d 'The user\'s name' -r
complete -c image-cache-manage -l os-user-id -d 'The user\'s id' -r
complete -c image-cache-manage -s K -l os-password -d 'The user\'s password' -r
complete -c image-cache-manage -s T -l os-project-name -d 'The project\'s name' -r
complete -c image-cache-manage -l os-project-id -d 'The project\'s id' -r
complete -c image-cache-manage -l os-user-domain-name -d 'The user\'s domain, by name' -r
complete -c image-cache-manage -l os-user-domain-id -d 'The user\'s domain, by id' -r
complete -c image-cache-manage -l os-project-domain-name -d 'The project\'s domain, by name' -r
complete -c image-cache-manage -l os-project-domain-id -d 'The project\'s domain, by id' -r
complete -c image-cache-manage -l os-application-credential-id -d 'An application credential\'s id' -r
complete -c image-cache-manage -l os-application-credential-secret -d 'An application credential\'s secret' -r
complete -c image-cache-manage -s A -l os-auth-token -d 'A token: used as given (with --os-auth-url, checked with Keystone and its catalog used)' -r
complete -c image-cache-manage -s R -l os-region-name -d 'The region whose image endpoint to use' -r
complete -c image-cache-manage -l os-interface -d 'public, internal or admin: which image endpoint of the catalog to use' -r
complete -c image-cache-manage -l os-cacert -d 'A PEM file of CA certificates to trust besides the system\'s' -r -F
complete -c image-cache-manage -s S -l os_auth_strategy -d 'glance-cache-manage\'s `-S`: `keystone` (the default) or `noauth` (the token as given, or none, without Keystone)' -r
complete -c image-cache-manage -l nodes -d 'With queue-image: queue the image on K nodes of the fleet, chosen by rendezvous hashing of its id (the same image lands on the same K nodes from any client); with peer_token set on the nodes, they fill from each other, reading the image API once' -r
complete -c image-cache-manage -l wait-timeout -d 'How long --wait waits, in seconds' -r
complete -c image-cache-manage -s f -l force -d 'Do not ask for confirmation'
complete -c image-cache-manage -s v -l verbose -d 'Print more verbose output'
complete -c image-cache-manage -s d -l debug -d 'Print debugging output: every request and its answer, on standard error'
complete -c image-cache-manage -s k -l insecure -d 'Do not verify HTTPS certificates (tests and emergencies only)'
complete -c image-cache-manage -l json -d 'Print JSON instead of tables'
complete -c image-cache-manage -l all-nodes -d 'Run the command on every node of the fleet (image_cache_driver = centralized_db): the nodes are read from the central database when a --config-file names [database] connection, else asked of the node given with --host'
complete -c image-cache-manage -l wait -d 'With queue-image: wait until the image is cached on every node, showing its progress'
complete -c image-cache-manage -s h -l help -d 'Print help'
complete -c image-cache-manage -s V -l version -d 'Print version'
