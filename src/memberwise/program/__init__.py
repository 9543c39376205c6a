"""The membership program: one YAML file (tags, segments, personas, score, tiers, paid plans,
the black card, benefits, points, coupons, predictions and recommendation settings), validated
by pydantic and checked against the profile field catalog.

``service.load_program(path)`` reads one; ``service.default_program()`` is used when none is
configured. This package's ``__init__`` imports nothing, so a domain's settings module can build
on :mod:`memberwise.program.base` without an import cycle.
"""
