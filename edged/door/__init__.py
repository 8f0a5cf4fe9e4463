"""The door (service layer): what happens at a door between a captured frame and a published event.

    zone.py      CaptureZone and its settings: the one place faces are filtered by position
    settings.py  DoorSettings (the ``doors:`` section of the configuration)
    events.py    the decider's inputs and its frozen events with their payloads
    decider.py   Decider: multi-frame fusion, door modes, refractory periods, sessions (pure)
    liveness.py  LivenessGate: a track's liveness → spoof, held, denied or challenged (pure)
    state.py     the decider's per-track working state
    claims.py    Claim and ClaimInbox: verify-mode claims queued from the network for the worker
    worker.py    DoorWorker: the frame loop (detect, track, zones, liveness, embed, search, decide,
                 emit)

Nothing here touches the network: events leave through an ``EventSink`` (``edged.mqtt.door``), the
directory is reached through the ``DoorDirectory`` protocol (``FaceService``).
"""
