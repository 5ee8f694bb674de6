import baton_no_such_package  # noqa: F401  (a dependency missing from requirements.txt)

SCHEDULE = []
