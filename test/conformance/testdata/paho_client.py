"""MQTT 5 subscriber driven by Eclipse Paho for Python (Debian's
python3-paho-mqtt), for the conformance tests: a client library independent
of the Go ones and of mochi-mqtt.

Usage: paho_client.py HOST PORT CLIENT_ID FILTER QOS NO_LOCAL RETAIN_HANDLING

With MQTT_USERNAME set in the environment it connects with that username
and MQTT_PASSWORD; a refused CONNECT prints "ERROR CONNACK <reason code>".

It connects with Clean Start 1, subscribes to FILTER with the given options
and prints, one per line:
  SUBACK <reason code>
  MSG\t<topic>\t<payload hex>\t<retain 0|1>
Each line "pub TOPIC PAYLOAD" on stdin is published at QoS 1 by this same
client; "sub" subscribes to FILTER again with the same options. EOF on stdin
disconnects and exits.
"""
import os
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

host, port, client_id, flt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
qos, no_local, rh = int(sys.argv[5]), sys.argv[6] == "1", int(sys.argv[7])
lock = threading.Lock()


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def on_subscribe(client, userdata, mid, reason_codes, properties):
    for rc in reason_codes:
        say("SUBACK %d" % rc.value)


def on_message(client, userdata, msg):
    say("MSG\t%s\t%s\t%d" % (msg.topic, msg.payload.hex(), 1 if msg.retain else 0))


connected = threading.Event()
refused = []


def on_connect(client, userdata, flags, reason_code, properties):
    code = getattr(reason_code, "value", reason_code)
    if code != 0:
        refused.append(code)
    connected.set()


c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
if os.environ.get("MQTT_USERNAME"):
    c.username_pw_set(os.environ["MQTT_USERNAME"], os.environ.get("MQTT_PASSWORD"))
c.connect(host, port, keepalive=30, clean_start=True)
c.loop_start()
if not connected.wait(20):
    say("ERROR no CONNACK")
    sys.exit(1)
if refused:
    say("ERROR CONNACK %d" % refused[0])
    sys.exit(1)
opts = SubscribeOptions(qos=qos, noLocal=no_local, retainHandling=rh)


def subscribe():
    c.subscribe(flt, options=opts)


subscribe()
for line in sys.stdin:
    parts = line.split()
    if parts and parts[0] == "pub" and len(parts) == 3:
        c.publish(parts[1], parts[2].encode(), qos=1).wait_for_publish(20)
        say("PUBACKED " + parts[2])
    elif parts == ["sub"]:
        subscribe()
c.disconnect()
c.loop_stop()
