"""The ``trtbert`` command line: a click group whose commands map flags onto options and format results.

User errors (:class:`TrtbertError`) and bad option values become one line on stderr (``error: ...``)
and exit status 1; anything else is a bug and keeps its traceback. SIGTERM is handled like Ctrl-C, so
writers clean up what they started. Logging is quiet by default (warnings only); ``-v`` shows info.
"""

from trtbert.cli.commands import main

__all__ = ["main"]
