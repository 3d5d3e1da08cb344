"""Past one machine: the same x-atomic project as a Docker Swarm stack (see docs/swarm.md).

``render`` turns the resolved compose project into a stack file with safe update
settings and a Caddy service in front; ``deploy`` hands it to ``docker stack deploy``
and waits for Swarm's rolling update to settle. Swarm does the rolling, the health
gate and the rollback; compose-atomic only sets it up right and reports the outcome.
"""
