"""dlpfwd core: plugin host, common DLP event schema, pipeline, state and CLI.

Plugins (``sources``, ``sinks`` and third-party packages) use only the public
contracts re-exported from the modules named here:

* :mod:`forwarder.schema`   -- the versioned common DLP event schema;
* :mod:`forwarder.source`   -- the source contract;
* :mod:`forwarder.sink`     -- the sink contract and per-event outcomes;
* :mod:`forwarder.settings` -- how a plugin declares its own settings;
* :mod:`forwarder.hookspecs` -- the hooks and the ``hookimpl`` marker;
* :mod:`forwarder.errors`   -- the error hierarchy;
* :mod:`forwarder.testing`  -- the contract test kit for plugin authors.
"""

__version__ = "0.1.0"
