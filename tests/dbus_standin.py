"""Stand-ins for NetworkManager and ModemManager on a private D-Bus: the two bus
names, answering the calls cscfs makes (NM's `Metered` property, MM's managed
objects with a modem's 3GPP registration state) from a JSON file the test
rewrites. Not a mock of our code: cscfs talks real D-Bus to it.

    python -m tests.dbus_standin BUS_ADDRESS STATE_FILE
"""

from __future__ import annotations

import json
import sys

from jeepney import MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
from jeepney.low_level import HeaderFields

from netprobe.cost import MM_3GPP, MM_BUS, MM_PATH, NM_BUS, NM_PATH


def main(address: str, state_file: str) -> None:
    conn = open_dbus_connection(bus=address)
    for name in (NM_BUS, MM_BUS):
        conn.send_and_get_reply(message_bus.RequestName(name))
    print("ready", flush=True)
    while True:
        msg = conn.receive()
        if msg.header.message_type != MessageType.method_call:
            continue
        with open(state_file) as f:
            state = json.load(f)
        fields = msg.header.fields
        path, member = fields.get(HeaderFields.path), fields.get(HeaderFields.member)
        if path == NM_PATH and member == "Get" and msg.body[1] == "Metered":
            reply = new_method_return(msg, "v", (("u", state["metered"]),))
        elif path == MM_PATH and member == "GetManagedObjects":
            modem = {MM_3GPP: {"RegistrationState": ("u", state["registration"])}}
            reply = new_method_return(msg, "a{oa{sa{sv}}}",
                                      ({f"{MM_PATH}/Modem/0": modem},))
        else:
            reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod")
        conn.send(reply)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
