"""Private LXD daemons for the test suite and for `make run` on a machine without LXD."""
