"""The LXD endpoints the gateway fronts: routes to list, add (by trust token) and remove them."""
