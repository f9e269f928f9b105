"""Images: routes, job kinds (find, copy, import, delete), the image search over configured sources, and the service
that copies them.
"""
