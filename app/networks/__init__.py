"""Networks: routes, the service that checks and fixes a profile's networking, and the pure decisions it rests on."""
