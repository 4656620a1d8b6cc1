"""The networks, as data and as modules: generator and discriminator genotypes (validated, JSON), the ``Generator``
and ``Discriminator`` built from them, TPSR's weight import, analytic params and MACs, and the cost targets
(``networks.MacsWindow``, ``networks.LatencyWindow``). Below everything that trains or searches; above
``operations/``, ``io``."""
