"""The staff console: server-rendered pages (Jinja2 + htmx + Plotly) mounted at ``/console``."""
