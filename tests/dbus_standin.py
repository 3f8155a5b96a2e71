"""Stand-ins for NetworkManager and ModemManager on a private D-Bus: the two bus
names, answering the calls cscfs makes (NM's `Metered` property, MM's managed
objects with a modem's 3GPP registration state) from a JSON file the test
rewrites. And a notification server (org.freedesktop.Notifications) that
answers as one does (ids, `replaces_id` honoured) and records every call as a
JSON line; `--silent` owns the name and never answers. Not a mock of our code:
cscfs talks real D-Bus to them.

    python -m tests.dbus_standin BUS_ADDRESS STATE_FILE
    python -m tests.dbus_standin --notifications [--silent] BUS_ADDRESS RECORD_FILE
"""

from __future__ import annotations

import json
import sys

from jeepney import MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
from jeepney.low_level import HeaderFields

from netprobe.cost import MM_3GPP, MM_BUS, MM_PATH, NM_BUS, NM_PATH

NOTIFY_BUS, NOTIFY_PATH = "org.freedesktop.Notifications", "/org/freedesktop/Notifications"


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


def notifications(address: str, record_file: str, silent: bool = False) -> None:
    conn = open_dbus_connection(bus=address)
    conn.send_and_get_reply(message_bus.RequestName(NOTIFY_BUS))
    print("ready", flush=True)
    shown: set[int] = set()
    while True:
        msg = conn.receive()
        if msg.header.message_type != MessageType.method_call or silent:
            continue
        fields = msg.header.fields
        path, member = fields.get(HeaderFields.path), fields.get(HeaderFields.member)
        if path != NOTIFY_PATH:
            reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownObject")
        elif member == "GetCapabilities":
            reply = new_method_return(msg, "as", (["body", "persistence"],))
        elif member == "GetServerInformation":
            reply = new_method_return(msg, "ssss", ("standin", "cscfs tests", "0", "1.2"))
        elif member == "Notify":
            app, replaces, icon, summary, body, actions, hints, expire = msg.body
            # As the spec says: a known replaces_id keeps its id, otherwise a new one.
            nid = replaces if replaces in shown else len(shown) + 1
            shown.add(nid)
            with open(record_file, "a") as f:
                f.write(json.dumps({
                    "app_name": app, "replaces_id": replaces, "app_icon": icon,
                    "summary": summary, "body": body, "actions": actions,
                    "hints": {k: v[1] for k, v in hints.items()}, "expire_timeout": expire,
                    "id": nid}) + "\n")
            reply = new_method_return(msg, "u", (nid,))
        elif member == "CloseNotification":
            reply = new_method_return(msg)
        else:
            reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod")
        conn.send(reply)


if __name__ == "__main__":
    if sys.argv[1] == "--notifications":
        silent = sys.argv[2] == "--silent"
        notifications(*sys.argv[2 + silent:4 + silent], silent=silent)
    else:
        main(sys.argv[1], sys.argv[2])
