"""``compose-atomic init``: propose x-atomic annotations for compose files a user already has.

``detect`` recognises web apps, PostgreSQL and an existing proxy and decides what to
propose (pure functions over the parsed files); ``edit`` inserts the annotations into
the files' text without re-emitting anything that was there; ``plugin`` is the command.
"""
