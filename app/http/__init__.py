"""The API kit every router uses: one error root and its handler (errors), auth and scopes (auth), the backend a
request acts on (deps), ETag/If-Match/merge-patch (etag), pagination, limits, the connection guard (listener),
request ids, metrics and the OpenAPI document.
"""
