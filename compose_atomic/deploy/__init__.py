"""Health-gated rolling replacement of x-atomic services (see docs/deploy.md).

Follow a deploy top down: :mod:`.up` (decide, then act under the lock) -> :mod:`.plan`
(what to do with each service) -> :mod:`.reconcile` (an interrupted deploy) ->
:mod:`.rollout` (one service's replacement) -> :mod:`.routing` and :mod:`.health`.
This package module stays empty so that loading the deploy's default plugins
(``compose-atomic --help``) does not load the deploy itself.
"""
