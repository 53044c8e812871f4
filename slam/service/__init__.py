"""The SLAM service: driver, tracking and mapping threads around the engine, with ZeroMQ publishing,
a control socket, map persistence and graceful shutdown (``slam run``, ``slam launch``).

Modules: ``config`` (ServiceConfig), ``queues`` (the bounded hand-offs), ``driver`` (reading and
pacing frames), ``workers`` (the tracking and mapping threads), ``meshes`` (mesh updates for the
publisher), ``status`` (the status report), ``commands`` (control requests), ``startup`` (checks before
anything starts), ``outputs`` (the end of a run), ``runtime`` (SLAMService, which wires them),
``launch`` (launch files). ``slam.app.config`` imports ``config`` only, so importing
this package stays light.
"""
