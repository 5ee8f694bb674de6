# No entry: the tests enqueue the tick jobs they need themselves.
SCHEDULE = []
