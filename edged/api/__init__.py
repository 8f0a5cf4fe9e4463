"""The face operations over MQTT: request schemas, signed requests and the request server."""
