"""The web console for staff and the member center for members (server-rendered pages)."""
