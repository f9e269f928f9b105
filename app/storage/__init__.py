"""Storage pools and custom volumes: routes and the storage service."""
