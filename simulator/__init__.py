"""Simulated infoscreen clients that speak MQTT contract v1.

- `simulator.device`: one device's payloads (pure) and its MQTT identity.
- `simulator.profiles`: the client generations a device can speak (reference, infoscreen-2025)
  and how a fleet mixes them; `simulator.tv`: the deployed clients' TV power schedule.
- `simulator.fleet`: many devices driven by one scheduler thread (`run_fleet`).
- `simulator.loadgen`: raw-socket MQTT 5 load generator for the benchmarks (`run_load`).
- `simulator.cli`: the `infoscreen simulate` command.

Nothing is imported here: the load generator's worker processes import only what they use.
"""
