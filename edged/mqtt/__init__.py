"""MQTT transport: topic strings (``topics``), the paho-mqtt 2.x wrapper (``client``) and the durable
outbox for decision and audit messages (``outbox``). See docs/mqtt.md."""
