"""The browser side: the viewer's bytes (``payload``), the self-contained page (``html``) and the ``serve`` app (``server``)."""
