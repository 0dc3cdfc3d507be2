"""dlpfwd core: plugin host, common DLP event schema, pipeline, state and CLI.

Plugins (``sources``, ``sinks`` and third-party packages) use only the public
contracts re-exported from the modules named here:

* :mod:`forwarder.schema`   -- the versioned common DLP event schema;
* :mod:`forwarder.source`   -- the source contract;
* :mod:`forwarder.sink`     -- the sink contract and per-event outcomes;
* :mod:`forwarder.settings` -- how a plugin declares its own settings;
* :mod:`forwarder.hookspecs` -- the hooks and the ``hookimpl`` marker;
* :mod:`forwarder.errors`   -- the error hierarchy;
* :mod:`forwarder.http`     -- HTTP clients honouring CA bundles, proxies and client certificates;
* :mod:`forwarder.ocsf`     -- the OCSF Data Security Finding formatter, for any sink;
* :mod:`forwarder.testing`  -- the contract test kit for plugin authors.

The core also holds the configuration loader (:mod:`forwarder.config`), the sensitive-value
policy (:mod:`forwarder.policy`), redacting logging (:mod:`forwarder.logs`), the plugin host
(:mod:`forwarder.plugins`), the runtime and its state store, and the CLI (:mod:`forwarder.cli`).
"""

__version__ = "0.1.0"
