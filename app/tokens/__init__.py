"""Who may do what: the token routes, the policy allow-list (policy) and its guard at the HTTP edge (guard), secret
redaction for readers, and the audit trail.
"""
