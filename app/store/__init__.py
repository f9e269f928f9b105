"""What the gateway keeps on disk: the job database (jobs, idempotency keys, audit), the tokens file, persisted
remotes, and the data directory they live in.
"""
