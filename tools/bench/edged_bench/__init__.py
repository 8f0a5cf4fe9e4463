"""The benchmarks of edged (``edged bench …``): verification and identification accuracy, the
matching index, per-stage speed, the daemon end to end, the face operations over MQTT and liveness
(presentation-attack detection on synthetic attacks, ``attacks.py``), recorded in
docs/BENCHMARKS.md; and the throw-away Mosquitto launcher they share with the MQTT tests.

A distribution of its own (``tools/bench``, ``edged-bench``), never part of the runtime wheel:
``python3 -m pip install -e tools/bench``."""
