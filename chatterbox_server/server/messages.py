"""A client's JSON message on a socket (the realtime and ElevenLabs WebSockets, Wyoming's event
headers and data), parsed with every way it can fail as one typed error.

`json.loads` fails in more ways than JSONDecodeError: text nested deeper than the interpreter's
recursion limit (60000 `[` fit in one frame) raises RecursionError, and bytes that are not UTF-8
raise UnicodeDecodeError. Left uncaught, either ends the connection with a traceback and no answer;
here each is an InvalidMessageError, which every protocol answers with its own `invalid_message`
error while the connection goes on.
"""

import json
from typing import Any

from chatterbox_server.errors import InvalidInputError


class InvalidMessageError(InvalidInputError):
    """A client's message is not usable JSON (error type `invalid_message`)."""


def parse_message(raw: str | bytes, what: str = "a message") -> Any:
    """The JSON value of `raw`; InvalidMessageError (its text starting with `what`) if it has none."""
    try:
        return json.loads(raw)
    except RecursionError:
        # the C scanner recurses once per level and gives up cleanly at the limit: nothing is left half-done
        raise InvalidMessageError(f"{what} is nested too deeply") from None
    except UnicodeDecodeError:  # before ValueError, whose subclass it is
        raise InvalidMessageError(f"{what} is not UTF-8 text") from None
    except ValueError:  # JSONDecodeError
        raise InvalidMessageError(f"{what} is not valid JSON") from None
