"""LXD's event stream, per remote and project, with secrets redacted: routes."""
