"""The periodic jobs process. Each job is a step function `job(session, now) -> bool`."""
