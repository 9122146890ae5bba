"""The station console: a web page and a JSON API for the people who run a station.

Off unless the station file has a ``console:`` section (CONTRACT.md §9). Nothing here is
imported by a station without one: :mod:`auth_module.module` imports :mod:`.feed` and
:mod:`.server` only when the section exists, and the web stack (Starlette, uvicorn,
cryptography) only from there, so such a station pays neither memory nor start-up time.

The seam to the rest of the module is deliberately narrow:

* :class:`.feed.ConsoleFeed` takes the events the module already has (the token statuses it
  publishes, the validators' answers, session events, faults, reservation updates) through a
  bounded, non-blocking hand-off; the token path pays one ``deque.append`` per event;
* :mod:`.snapshot` reads the core's state under its lock, from the console's own thread;
* writes (withdraw, cancel a reservation) call the same facade methods the bus commands do.
"""
