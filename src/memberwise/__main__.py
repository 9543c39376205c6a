"""``python -m memberwise``: the same as the ``memberwise`` console script."""

from memberwise.entry import main

main()
