"""The staff console (server-rendered pages, Jinja2 + htmx + Plotly, mounted at ``/console``) and
the member center members open through a signed link (``/member-center``)."""
