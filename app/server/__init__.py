"""The LXD server: routes (config, HTTPS listener, certificate, proxies) and their services."""
