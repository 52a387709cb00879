"""The Cradle API client, as a package of the parts a hostile API forces apart.

Only this package imports requests and urllib3. The parts follow what each must defend against:
`client` sends the requests (auth, the shared limiter, redirects checked by the same parser that
connects, streaming downloads), `retries` decides what is tried again, `watchdog` bounds a
request as a whole where a socket timeout bounds only one read, `responses` reads what a server
chose to put in a header or body, and `lists` turns a list body into valid entries and evidence
of malformed ones. Callers import from here; a test that changes a limit the client reads at
call time (MAX_LIST_BYTES, MAX_RECORDING_BYTES) patches `archiver.cradle.client`, where it is
read.
"""

from archiver.cradle.client import CradleClient
from archiver.cradle.lists import (
    ConversationListing,
    Listing,
    decode_json,
    parse_conversations,
    parse_listing,
)
from archiver.cradle.responses import looks_like_mp3, parse_retry_after
from archiver.cradle.retries import RetryPolicy
from archiver.cradle.watchdog import Transfer, Watchdog

__all__ = [
    "ConversationListing",
    "CradleClient",
    "Listing",
    "RetryPolicy",
    "Transfer",
    "Watchdog",
    "decode_json",
    "looks_like_mp3",
    "parse_conversations",
    "parse_listing",
    "parse_retry_after",
]
