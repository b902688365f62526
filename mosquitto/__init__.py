"""Broker tooling: Mosquitto config from templates, accounts, password file and ACL.

This is the only Mosquitto-specific code of the project; the processes speak plain MQTT 5.
"""
