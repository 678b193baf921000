"""The operator commands: `pynet status|networks|endpoints|ports|ipam|doctor`.

A second composition root beside pynet/app.py (tests/unit/test_layering.py says so): the
commands read the store through both drivers' record code, and never the plugin's socket.
One module per command; render.py prints tables and JSON; context.py opens what they read.
"""
