"""Shared domain of the infoscreen backend: config, clock, database, models, MQTT contract.

Nothing here imports Flask request objects or paho: the listener, the scheduler and the
server call these functions with plain values.
"""
