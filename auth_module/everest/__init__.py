"""Running under EVerest's manager (CONTRACT.md §8, spec/EVEREST-MANAGER.md).

The manager starts the module itself (``python3 module.py``), gives it its configuration
over MQTT and waits for ``ModuleReady`` before it lets the whole charger run. This package
holds everything that differs from the station-file mode, and only that:

- :mod:`.env`: the manager's environment (module id, prefix, broker);
- :mod:`.handshake`: the configuration request and its answer;
- :mod:`.settings`: the answer turned into the same :class:`~auth_module.station.Station`
  a station file produces (one station model, two ways to fill it);
- :mod:`.link`: ``ModuleReady`` and the wait for ``GlobalReady``;
- :mod:`.folder`: ``auth-module everest-module``: the module folder the manager starts;
- :mod:`.runner`: ``auth-module --everest``: the pieces in order, never exiting on its own.
"""
