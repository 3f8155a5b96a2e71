"""Is the link costly? NetworkManager's `Metered` and ModemManager's 3GPP roaming,
read over the system D-Bus (jeepney, pure Python). Where a service is absent the
answer is "unknown", which counts as not metered (said once in the log by the
caller, never an error loop).
"""

from __future__ import annotations

from dataclasses import dataclass

NM_BUS, NM_PATH, NM_IFACE = ("org.freedesktop.NetworkManager",
                             "/org/freedesktop/NetworkManager",
                             "org.freedesktop.NetworkManager")
MM_BUS, MM_PATH = "org.freedesktop.ModemManager1", "/org/freedesktop/ModemManager1"
MM_3GPP = "org.freedesktop.ModemManager1.Modem.Modem3gpp"
# NMMetered: 1 YES, 3 GUESS_YES are metered (0 unknown, 2 NO, 4 GUESS_NO).
METERED_VALUES = {1, 3}
# MMModem3gppRegistrationState: 5 ROAMING, 7 ROAMING_SMS_ONLY, 10 ROAMING_CSFB_NOT_PREFERRED.
ROAMING_STATES = {5, 7, 10}


@dataclass(frozen=True)
class Cost:
    metered: bool | None   # None: unknown (no NetworkManager)
    roaming: bool | None   # None: unknown (no ModemManager)
    usage: str | None = None  # netprobe.usage APPROACHING or OVER, None: fine or no plan

    @property
    def limited(self) -> bool:
        """Windows 8 semantics: background sync stops on a metered link that is
        roaming, or approaching or over its data limit."""
        return bool(self.metered and (self.roaming or self.usage))

    def describe(self) -> str:
        def word(v, yes, no):
            return "unknown" if v is None else (yes if v else no)

        text = (f"{word(self.metered, 'metered', 'not metered')}, "
                f"{word(self.roaming, 'roaming', 'not roaming')}")
        return f"{text}, {self.usage}" if self.usage else text


def read_cost(timeout: float = 2.0) -> Cost:
    """One reading from the system bus (DBUS_SYSTEM_BUS_ADDRESS when set); usage
    is the caller's to add (netprobe.usage)."""
    from jeepney.io.blocking import open_dbus_connection

    try:
        conn = open_dbus_connection(bus="SYSTEM")
    except (OSError, KeyError, ValueError):
        return Cost(None, None)
    try:
        return Cost(_metered(conn, timeout), _roaming(conn, timeout))
    finally:
        conn.close()


def _metered(conn, timeout: float) -> bool | None:
    from jeepney import DBusAddress, Properties

    try:
        reply = conn.send_and_get_reply(
            Properties(DBusAddress(NM_PATH, bus_name=NM_BUS, interface=NM_IFACE)).get("Metered"),
            timeout=timeout)
    except Exception:  # no such service, or it did not answer: unknown
        return None
    if reply.header.message_type.name != "method_return":
        return None
    return reply.body[0][1] in METERED_VALUES


def _roaming(conn, timeout: float) -> bool | None:
    from jeepney import DBusAddress, new_method_call

    call = new_method_call(DBusAddress(MM_PATH, bus_name=MM_BUS,
                                       interface="org.freedesktop.DBus.ObjectManager"),
                           "GetManagedObjects")
    try:
        reply = conn.send_and_get_reply(call, timeout=timeout)
    except Exception:
        return None
    if reply.header.message_type.name != "method_return":
        return None
    for interfaces in reply.body[0].values():
        state = interfaces.get(MM_3GPP, {}).get("RegistrationState")
        if state is not None and state[1] in ROAMING_STATES:
            return True
    return False
