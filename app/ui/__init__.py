"""The web console (`/ui`): its page, its sign-in sessions, and its own static assets."""
