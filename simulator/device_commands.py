"""How a simulated screen runs a command, as a deployed one does: `accepted` at once, then
`execution_started`, then `completed` or `failed`; a reboot drops the connection and completes
after the reconnect; a shutdown stays down. A part of SimulatedDevice (simulator.device), kept
apart because it is one thing of its own: every method here works on the device's state."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from core.clock import iso_z
from simulator.options import (
    DRAIN_POLL_SECONDS,
    DRAIN_POLLS,
    HANDLED_COMMANDS_KEPT,
    CommandPlan,
    plan_command,
)
from simulator.payloads import (
    ACK_SUFFIXES,
    SIMULATED_FAILURE,
    Command,
    Refusal,
    parse_command,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

# Power states of the host.
POWER_ON = "on"
REBOOTING = "rebooting"
SHUT_DOWN = "shut_down"  # stays off for the rest of the run
# MQTT 5 DISCONNECT 0x04: the broker publishes the will, as when a host drops off the network.
DISCONNECT_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")


class CommandHandling:
    """The command steps of SimulatedDevice; the device holds all state."""


    def receive_command(self, payload: bytes) -> None:
        """Ack `accepted` (or refuse) at once; the later steps go to the fleet's scheduler.

        A command seen before (QoS 1 redelivery) runs only once: its last ack is sent again.
        An expired command is dropped without an ack, as the deployed clients do; the server
        then marks it `expired`.
        """
        parsed = parse_command(payload, self.uuid, self.profile.actions)
        if parsed is None:
            log.warning("device %s: command without a valid command_id, ignored", self.uuid)
            return
        command_id = parsed.command_id
        last_ack: dict[str, Any] | None = None
        expired = isinstance(parsed, Command) and parsed.expires_at <= self.clock()
        with self._lock:
            if self.power != POWER_ON:  # going down: the player reads no more commands
                return
            seen = command_id in self._commands
            if seen:
                self._commands.move_to_end(command_id)
                last_ack = self._commands[command_id]
            elif not expired:
                self._commands[command_id] = None
                while len(self._commands) > HANDLED_COMMANDS_KEPT:
                    self._commands.popitem(last=False)
        if seen:
            if last_ack is not None:
                self._send_ack(last_ack)
            log.info("device %s: command %s delivered again, not run twice", self.uuid, command_id)
            return
        if isinstance(parsed, Refusal):
            ack = self.profile.ack(
                command_id,
                "failed",
                error_code=parsed.error_code,
                error_message=parsed.error_message,
            )
            self._send_ack(ack)
            log.warning(
                "device %s: command %s refused: %s", self.uuid, command_id, parsed.error_message
            )
            return
        if expired:
            log.info(
                "device %s: command %s expired at %s, dropped",
                self.uuid,
                command_id,
                iso_z(parsed.expires_at),
            )
            return
        self._send_ack(self.profile.ack(command_id, "accepted"))
        with self._lock:
            plan = plan_command(parsed.action, self.options, self.command_rng)
            boot = self._boot
            self.commands_handled += 1
        step = functools.partial(self._start_command, parsed, plan, boot)
        self.timers.call_later(plan.start_after, step)

    def _send_ack(self, ack: dict[str, Any]) -> None:
        with self._lock:
            if ack["command_id"] in self._commands:
                self._commands[ack["command_id"]] = ack
        for suffix in ACK_SUFFIXES:
            self._publish(suffix, ack, qos=1)

    def _still_up(self, boot: int) -> bool:
        with self._lock:
            return self._boot == boot

    def _start_command(self, command: Command, plan: CommandPlan, boot: int) -> None:
        if not self._still_up(boot):  # the host went down meanwhile: the work died with it
            return
        self._send_ack(self.profile.ack(command.command_id, "execution_started"))
        step = functools.partial(self._finish_command, command, plan, boot)
        self.timers.call_later(plan.finish_after, step)

    def _finish_command(self, command: Command, plan: CommandPlan, boot: int) -> None:
        if not self._still_up(boot):
            return
        command_id, action = command.command_id, command.action
        if plan.fails:
            self._send_ack(
                self.profile.ack(
                    command_id,
                    "failed",
                    error_code=SIMULATED_FAILURE,
                    error_message=f"simulated failure of {action} "
                    f"(command failure rate {self.options.command_failure_rate:g})",
                )
            )
        elif action == "restart_app":
            with self._lock:  # a restarted player comes back healthy
                self.process_status, self._crash_left = "running", 0
                self.restart_count += 1
            self._send_ack(self.profile.ack(command_id, "completed"))
        elif action == "reboot_host":
            self._power_off(REBOOTING, complete_after_boot=command_id, back_after=plan.offline_for)
        else:  # shutdown_host: done; off until someone powers the screen on again
            self._send_ack(self.profile.ack(command_id, "completed"))
            self._power_off(SHUT_DOWN)
        log.info(
            "device %s: command %s %s %s",
            self.uuid,
            command_id,
            action,
            "failed" if plan.fails else "going down" if action == "reboot_host" else "completed",
        )

    def _power_off(
        self,
        power: str,
        *,
        complete_after_boot: str | None = None,
        back_after: float = 0.0,
        polls_left: int | None = None,
    ) -> None:
        """The host goes down: no goodbye, the broker publishes the will (`offline`).

        A reboot (`power` REBOOTING) powers on again `back_after` seconds later and then
        completes `complete_after_boot`.
        """
        polls_left = DRAIN_POLLS if polls_left is None else polls_left
        if polls_left > 0 and self._sending():
            retry = functools.partial(
                self._power_off,
                power,
                complete_after_boot=complete_after_boot,
                back_after=back_after,
                polls_left=polls_left - 1,
            )
            self.timers.call_later(DRAIN_POLL_SECONDS, retry)
            return
        with self._lock:
            if self.power != POWER_ON:  # already down (two power actions at once)
                return
            self.power = power
            self._boot += 1
            if complete_after_boot is not None:
                self._complete_after_boot.append(complete_after_boot)
            self._in_flight = []
        if self._link is not None:
            self._link.disconnect(reasoncode=DISCONNECT_WITH_WILL)
        else:  # never started: nothing would reconnect anyway
            self.client.disconnect(reasoncode=DISCONNECT_WITH_WILL)
        if power == REBOOTING:
            self.timers.call_later(back_after, self._power_on)

    def _power_on(self) -> None:
        with self._lock:
            if self.power != REBOOTING:
                return
            self.booted_at = self.clock()
            self._black_left = 0  # a reboot brings the output back
        if self._link is None:
            log.warning("device %s cannot reconnect: it was never started", self.uuid)
            return
        self._link.connect()  # on_connect completes the reboot
