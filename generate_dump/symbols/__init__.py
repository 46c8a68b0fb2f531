"""Symbol files from where they live: debuginfod servers and Breakpad HTTP symbol stores.

- :mod:`.http`        one bounded HTTP GET (timeouts, size cap, same-host redirects,
  content checks)
- :mod:`.cachefs`     a download enters a cache only whole and checked
- :mod:`.debuginfod`  elfutils' environment and cache layout (DEBUGINFOD_URLS, ...)
- :mod:`.http_store`  ``--symbols-url``: ``URL/NAME/DEBUGID/NAME.sym``, cached on disk
- :mod:`.session`     per-run memory: servers that are down, warnings given, time budget,
  parallel lookups with a progress line

:mod:`generate_dump.unwind.locate` asks these after the local candidates; every file is
checked by build id (ELF) or debug id (``.sym``) before it is used or cached.
"""
